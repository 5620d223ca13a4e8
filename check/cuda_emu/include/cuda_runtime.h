// cuda_runtime.h for the host emulation (check/cuda_emu/README.md): the CUDA runtime calls
// that engine/engine_cuda.cu makes, implemented on host memory. Kernels run at launch,
// so every "asynchronous" call here has completed when it returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

typedef enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorECCUncorrectable = 214,
  cudaErrorIllegalAddress = 700,
  cudaErrorAssert = 710,
  cudaErrorHardwareStackError = 714,
  cudaErrorIllegalInstruction = 715,
  cudaErrorMisalignedAddress = 716,
  cudaErrorInvalidPc = 718,
  cudaErrorLaunchFailure = 719,
} cudaError_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
};

typedef struct emu_stream* cudaStream_t;
#define cudaStreamNonBlocking 0x01

struct cudaDeviceProp {
  char name[256];
  int major;
  int minor;
};

namespace emu {
inline thread_local cudaError_t last_error = cudaSuccess;
inline size_t allocated = 0;
inline cudaError_t fail(cudaError_t e) {
  last_error = e;
  return e;
}
// Block sizes, so that cudaMemGetInfo can report what is in use.
struct Header {
  size_t bytes;
  size_t pad[3];
};
}  // namespace emu

inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : e == cudaErrorInvalidValue ? "invalid argument"
                                                                     : "emulated CUDA error";
}
inline const char* cudaGetErrorName(cudaError_t e) {
  return e == cudaSuccess ? "cudaSuccess" : e == cudaErrorInvalidValue ? "cudaErrorInvalidValue"
                                                                        : "cudaErrorUnknown";
}
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::last_error;
  emu::last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::memset(p, 0, sizeof *p);
  std::strcpy(p->name, "host emulation");
  p->major = 9;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = reinterpret_cast<cudaStream_t>(new char);
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete reinterpret_cast<char*>(s);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
// Fresh blocks are filled with a pattern, not zeros: le_alloc must zero them itself.
inline cudaError_t cudaMalloc(void** p, size_t n) {
  auto* h = static_cast<emu::Header*>(std::aligned_alloc(256, (n + 255) / 256 * 256 + 256));
  if (!h) return emu::fail(cudaErrorMemoryAllocation);
  h->bytes = n;
  emu::allocated += n;
  *p = reinterpret_cast<char*>(h) + 256;
  std::memset(*p, 0xA5, n);
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  auto* h = reinterpret_cast<emu::Header*>(static_cast<char*>(p) - 256);
  emu::allocated -= h->bytes;
  std::free(h);
  return cudaSuccess;
}
inline cudaError_t cudaMallocHost(void** p, size_t n) { return cudaMalloc(p, n); }
inline cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
inline cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {
  *total_b = size_t(1) << 36;
  *free_b = *total_b - emu::allocated;
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) {
  std::memset(p, v, n);
  return cudaSuccess;
}
// Overlapping ranges are undefined for cudaMemcpy: the emulation refuses them.
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind,
                                   cudaStream_t) {
  const auto a = reinterpret_cast<uintptr_t>(d), b = reinterpret_cast<uintptr_t>(s);
  if (n && a < b + n && b < a + n) return emu::fail(cudaErrorInvalidValue);
  std::memcpy(d, s, n);
  return cudaSuccess;
}
// The typed overloads cuda_runtime.h also has.
template <class T>
inline cudaError_t cudaMalloc(T** p, size_t n) {
  return cudaMalloc(reinterpret_cast<void**>(p), n);
}
template <class T>
inline cudaError_t cudaMallocHost(T** p, size_t n) {
  return cudaMallocHost(reinterpret_cast<void**>(p), n);
}
