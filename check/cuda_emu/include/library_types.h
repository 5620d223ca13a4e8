// library_types.h for the host emulation: the cudaDataType values the engine passes to cuBLAS
// (the same numbers as the CUDA toolkit's header).
#pragma once
typedef enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16BF = 14 } cudaDataType_t;
