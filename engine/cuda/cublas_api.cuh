// cublas_api.cuh: the few cuBLAS / cuBLASLt entry points the engine uses, declared here and
// resolved with dlopen at le_init.
//
// Why not #include <cublas_v2.h> and link -lcublas: the library must compile on machines that
// have nvcc but no cuBLAS (CI, this project's build machines), and it must load on machines
// whose cuBLAS lives outside the linker's default path. So the types, enums and signatures
// below are written from NVIDIA's public cuBLAS documentation (the "cuBLAS Datatypes
// Reference" and "cuBLAS Helper Function Reference" chapters), only for what the engine
// calls. The numeric enum values are part of cuBLAS's stable ABI; cudaDataType comes from
// the CUDA runtime's library_types.h, which nvcc always has.
//
// Symbol names: since cuBLAS v2 the handle-based functions are exported with a `_v2` suffix
// (cublas_v2.h maps cublasCreate to cublasCreate_v2 with a macro); cublasGemmEx,
// cublasSetMathMode and cublasGetStatusString have no suffix.
#pragma once

#include <dlfcn.h>
#include <library_types.h>  // cudaDataType_t: CUDA_R_32F = 0, CUDA_R_16BF = 14

#include <cstddef>
#include <cstdio>
#include <cstring>

namespace cublas {

typedef struct Context* Handle;  // cublasHandle_t: an opaque pointer
typedef int Status;              // cublasStatus_t

constexpr Status kSuccess = 0;  // CUBLAS_STATUS_SUCCESS

// cublasOperation_t
constexpr int kOpN = 0;  // CUBLAS_OP_N
constexpr int kOpT = 1;  // CUBLAS_OP_T

// cublasMath_t
constexpr int kDefaultMath = 0;  // CUBLAS_DEFAULT_MATH

// cublasComputeType_t
constexpr int kCompute32F = 68;          // CUBLAS_COMPUTE_32F: fp32 products and sums
constexpr int kCompute32FFastTF32 = 77;  // CUBLAS_COMPUTE_32F_FAST_TF32: TF32 tensor cores

// cublasGemmAlgo_t
constexpr int kGemmDefault = -1;  // CUBLAS_GEMM_DEFAULT

typedef Status (*CreateFn)(Handle*);                   // cublasCreate_v2
typedef Status (*DestroyFn)(Handle);                   // cublasDestroy_v2
typedef Status (*SetStreamFn)(Handle, cudaStream_t);   // cublasSetStream_v2
typedef Status (*SetWorkspaceFn)(Handle, void*, size_t);  // cublasSetWorkspace_v2
typedef Status (*SetMathModeFn)(Handle, int);          // cublasSetMathMode
typedef Status (*GetVersionFn)(Handle, int*);          // cublasGetVersion_v2
typedef const char* (*GetStatusStringFn)(Status);      // cublasGetStatusString
// cublasGemmEx: C = alpha op(A) op(B) + beta C, column-major; alpha and beta are host
// pointers to float when the compute type is a 32F one.
typedef Status (*GemmExFn)(Handle, int transa, int transb, int m, int n, int k,
                           const void* alpha, const void* A, cudaDataType_t Atype, int lda,
                           const void* B, cudaDataType_t Btype, int ldb, const void* beta,
                           void* C, cudaDataType_t Ctype, int ldc, int computeType, int algo);
typedef size_t (*LtGetVersionFn)(void);  // cublasLtGetVersion

// The resolved library. cuBLASLt is loaded first and explicitly: libcublas needs it, and
// loading it ourselves gives a clear message naming the file when it is missing.
struct Api {
  void* lib = nullptr;
  void* lt = nullptr;
  const char* lib_name = "";
  size_t lt_version = 0;
  CreateFn create = nullptr;
  DestroyFn destroy = nullptr;
  SetStreamFn set_stream = nullptr;
  SetWorkspaceFn set_workspace = nullptr;
  SetMathModeFn set_math_mode = nullptr;
  GetVersionFn get_version = nullptr;
  GetStatusStringFn status_string = nullptr;  // optional
  GemmExFn gemm_ex = nullptr;
};

inline const char* status_name(Status s) {
  switch (s) {
    case 0: return "CUBLAS_STATUS_SUCCESS";
    case 1: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case 3: return "CUBLAS_STATUS_ALLOC_FAILED";
    case 7: return "CUBLAS_STATUS_INVALID_VALUE";
    case 8: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case 11: return "CUBLAS_STATUS_MAPPING_ERROR";
    case 13: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case 14: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case 15: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case 16: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
  }
}

// Loads libcublasLt and libcublas (.so.13, else .so.12) and resolves every entry point.
// Returns 0, or 1 with a message in err.
inline int load(Api* api, char* err, size_t errn) {
  const char* names[][2] = {{"libcublasLt.so.13", "libcublas.so.13"},
                            {"libcublasLt.so.12", "libcublas.so.12"}};
  char tried[512] = "";
  for (auto& pair : names) {
    void* lt = dlopen(pair[0], RTLD_NOW | RTLD_GLOBAL);
    if (!lt) {
      const char* e = dlerror();
      size_t used = strlen(tried);
      snprintf(tried + used, sizeof tried - used, "%s%s", used ? "; " : "", e ? e : pair[0]);
      continue;
    }
    void* lib = dlopen(pair[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* e = dlerror();
      size_t used = strlen(tried);
      snprintf(tried + used, sizeof tried - used, "%s%s", used ? "; " : "", e ? e : pair[1]);
      dlclose(lt);
      continue;
    }
    api->lib = lib;
    api->lt = lt;
    api->lib_name = pair[1];
    break;
  }
  if (!api->lib) {
    snprintf(err, errn,
             "cannot load cuBLAS (%s); install the CUDA 13 toolkit's cuBLAS and put its lib "
             "directory (for example /usr/local/cuda/targets/x86_64-linux/lib) on "
             "LD_LIBRARY_PATH",
             tried);
    return 1;
  }
  struct Sym {
    void** slot;
    void* lib;
    const char* name;
    bool required;
  };
  LtGetVersionFn lt_version = nullptr;
  Sym syms[] = {
      {(void**)&api->create, api->lib, "cublasCreate_v2", true},
      {(void**)&api->destroy, api->lib, "cublasDestroy_v2", true},
      {(void**)&api->set_stream, api->lib, "cublasSetStream_v2", true},
      {(void**)&api->set_workspace, api->lib, "cublasSetWorkspace_v2", true},
      {(void**)&api->set_math_mode, api->lib, "cublasSetMathMode", true},
      {(void**)&api->get_version, api->lib, "cublasGetVersion_v2", true},
      {(void**)&api->gemm_ex, api->lib, "cublasGemmEx", true},
      {(void**)&api->status_string, api->lib, "cublasGetStatusString", false},
      {(void**)&lt_version, api->lt, "cublasLtGetVersion", true},
  };
  for (auto& s : syms) {
    *s.slot = dlsym(s.lib, s.name);
    if (!*s.slot && s.required) {
      snprintf(err, errn, "%s has no symbol %s; the engine needs cuBLAS 12 or 13",
               s.lib == api->lib ? api->lib_name : "cuBLASLt", s.name);
      dlclose(api->lib);
      dlclose(api->lt);
      *api = Api{};
      return 1;
    }
  }
  api->lt_version = lt_version();
  return 0;
}

}  // namespace cublas
