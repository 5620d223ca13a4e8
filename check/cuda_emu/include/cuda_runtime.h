// cuda_runtime.h for the host emulation (check/cuda_emu/README.md): the CUDA runtime calls
// that engine/engine_cuda.cu makes, implemented on host memory.
//
// Asynchronous calls are asynchronous here too: kernel launches, cudaMemsetAsync and
// cudaMemcpyAsync join one queue (the engine uses one stream), as do the stand-in cuBLAS's
// GEMMs, and it runs in order only when something waits for it: cudaStreamSynchronize,
// cudaDeviceSynchronize or cudaFree. While the stream is captured into a graph, the work is
// recorded instead, and cudaGraphLaunch queues it again. So host code that reads a download's
// destination, or reuses an upload's source, before synchronising sees what a GPU would give
// it: stale data.
//
// A fault found while a kernel runs (a race, a shuffle with exited lanes, a barrier that can
// never be released) is sticky, as on a GPU: every later call returns it, and
// cudaGetErrorString gives the emulation's description. emu_reset() clears it (tests only).
#pragma once

#include <chrono>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif
#include <string>
#include <vector>

typedef enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorNotReady = 600,
  cudaErrorECCUncorrectable = 214,
  cudaErrorIllegalAddress = 700,
  cudaErrorAssert = 710,
  cudaErrorHardwareStackError = 714,
  cudaErrorIllegalInstruction = 715,
  cudaErrorMisalignedAddress = 716,
  cudaErrorInvalidPc = 718,
  cudaErrorLaunchFailure = 719,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorIllegalState = 401,
} cudaError_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
};

// A stream: the stand-in cuBLAS queues its GEMMs through submit (fake_cublas.cpp declares the
// same layout), so that a GEMM runs after every operation queued before it, and is recorded
// like any other work while the stream is being captured into a graph. submit takes a
// function, its argument and what releases the argument when the queue or graph is done.
struct emu_stream {
  void (*drain)();
  void (*submit)(void (*run)(void*), void* arg, void (*release)(void*));
};
typedef struct emu_stream* cudaStream_t;
#define cudaStreamNonBlocking 0x01

enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct cudaDeviceProp {
  char name[256];
  int major;
  int minor;
  int multiProcessorCount;
};

namespace emu {
inline thread_local cudaError_t last_error = cudaSuccess;
inline size_t allocated = 0;
// Live device allocations (start -> bytes), so that a launch can find the buffers its
// pointer arguments lie in (emu.h's race checks).
inline std::map<uintptr_t, size_t> allocs;
inline cudaError_t fail(cudaError_t e) {
  last_error = e;
  return e;
}
// The sticky fault: set by fault(), returned by every later synchronising call.
inline cudaError_t sticky = cudaSuccess;
inline std::string fault_msg;
inline int faults = 0;  // how many faults were reported (tests read it)
inline void fault(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  faults++;
  if (sticky == cudaSuccess) {
    sticky = cudaErrorLaunchFailure;
    fault_msg = std::string("cuda emulation: ") + buf;
  }
  std::fprintf(stderr, "cuda emulation: %s\n", buf);
}
// The queue of the stream's pending work, run in order by drain().
inline std::vector<std::function<void()>> queue;
inline bool draining = false;
inline void drain() {
  if (draining) return;
  draining = true;
  for (size_t i = 0; i < queue.size(); i++) {
    if (sticky != cudaSuccess) break;  // after a fault the context runs nothing more
    queue[i]();
  }
  queue.clear();
  draining = false;
}
// What the engine asks of the stream, counted for check/cuda_emu.ts's emuCounters (read with
// emu_counters, emu.h): kernel launches (LAUNCH), memset/memcpy operations, and host waits
// (cudaStreamSynchronize, cudaDeviceSynchronize, cudaFree).
inline uint64_t n_launches = 0, n_memops = 0, n_syncs = 0, n_graph_launches = 0, n_blocks = 0;
// Stream capture (cudaStreamBeginCapture .. cudaStreamEndCapture): work is recorded here
// instead of queued. A call that would wait for the stream, or allocate, during a capture
// fails and invalidates it, as on a GPU in the global and thread-local capture modes.
inline std::vector<std::function<void()>>* capturing = nullptr;
inline bool capture_invalid = false;
inline cudaError_t refuse_in_capture() {
  capture_invalid = true;
  return fail(cudaErrorStreamCaptureUnsupported);
}
inline void enqueue(std::function<void()> f) {
  if (sticky != cudaSuccess) return;
  if (capturing) {
    capturing->push_back(std::move(f));
    return;
  }
  queue.push_back(std::move(f));
}
inline void submit(void (*run)(void*), void* arg, void (*release)(void*)) {
  std::shared_ptr<void> a(arg, release);
  enqueue([run, a] { run(a.get()); });
}
// Block sizes, so that cudaMemGetInfo can report what is in use.
struct Header {
  size_t bytes;
  size_t pad[3];
};
}  // namespace emu

// Clears a sticky fault and the pending queue (the emulation's tests run one faulty kernel
// after another in one process; a GPU would need a new process).
inline void emu_reset() {
  emu::queue.clear();
  emu::sticky = cudaSuccess;
  emu::fault_msg.clear();
  emu::last_error = cudaSuccess;
}

inline const char* cudaGetErrorString(cudaError_t e) {
  if (e == emu::sticky && !emu::fault_msg.empty()) return emu::fault_msg.c_str();
  return e == cudaSuccess                   ? "no error"
         : e == cudaErrorInvalidValue         ? "invalid argument"
         : e == cudaErrorInvalidConfiguration ? "invalid configuration argument"
                                              : "emulated CUDA error";
}
inline const char* cudaGetErrorName(cudaError_t e) {
  return e == cudaSuccess                     ? "cudaSuccess"
         : e == cudaErrorInvalidValue         ? "cudaErrorInvalidValue"
         : e == cudaErrorInvalidConfiguration ? "cudaErrorInvalidConfiguration"
         : e == cudaErrorLaunchFailure        ? "cudaErrorLaunchFailure"
                                              : "cudaErrorUnknown";
}
inline cudaError_t cudaGetLastError() {
  if (emu::sticky != cudaSuccess) return emu::sticky;
  const cudaError_t e = emu::last_error;
  emu::last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() {
  return emu::sticky != cudaSuccess ? emu::sticky : emu::last_error;
}
inline cudaError_t cudaDriverGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() {
  if (emu::capturing) return emu::refuse_in_capture();
  emu::n_syncs++;
  emu::drain();
  return emu::sticky;
}
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::memset(p, 0, sizeof *p);
  std::strcpy(p->name, "host emulation");
  p->major = 9;
  p->multiProcessorCount = 132;  // an H100's or H200's: kernels size their grids by it
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = new emu_stream{&emu::drain, &emu::submit};
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t s) {
  emu::drain();
  delete s;
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) {
  if (emu::capturing) return emu::refuse_in_capture();
  emu::n_syncs++;
  emu::drain();
  return emu::sticky;
}
// The emulation finishes queued work when asked: a query drains the queue and reports done.
inline cudaError_t cudaStreamQuery(cudaStream_t s) { return cudaStreamSynchronize(s); }
// Events order one stream after another. The emulation has one queue for every stream, run
// in the order work was issued, so ordering needs nothing. A recorded event takes the host's
// clock when the queue reaches it, so the time between two events is the time the work
// between them took to run (a GEMM's algorithm timing, matmul.cuh).
struct emu_event {
  double ms = -1;  // steady clock at the last record's turn in the queue; -1 never reached
};
typedef struct emu_event* cudaEvent_t;
#define cudaEventDisableTiming 0x02
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  *e = new emu_event{};
  return cudaSuccess;
}
inline cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, 0); }
// As on a GPU, an event recorded but not yet reached is released once the queue reaches it.
inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
  if (emu::queue.empty() || emu::sticky != cudaSuccess) {
    delete e;
  } else {
    emu::queue.push_back([e] { delete e; });
  }
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  emu::enqueue([e] {
    e->ms = std::chrono::duration<double, std::milli>(
                std::chrono::steady_clock::now().time_since_epoch())
                .count();
  });
  return emu::sticky;
}
// During a capture the record is one of the graph's work items, as an event record node is
// (cudaEventRecordExternal): each replay takes the clock again.
#define cudaEventRecordDefault 0x00
#define cudaEventRecordExternal 0x01
// The external flag is invalid outside a capture, as the driver documents.
inline cudaError_t cudaEventRecordWithFlags(cudaEvent_t e, cudaStream_t s, unsigned flags) {
  if ((flags & cudaEventRecordExternal) && !emu::capturing) {
    return emu::fail(cudaErrorInvalidValue);
  }
  return cudaEventRecord(e, s);
}
// One queue serves every stream: waiting for an event waits for the stream.
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaStreamSynchronize(nullptr); }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  if (a->ms < 0 || b->ms < 0) return emu::fail(cudaErrorInvalidValue);
  *ms = (float)(b->ms - a->ms);
  return cudaSuccess;
}
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) {
  return emu::sticky;
}
// Fresh blocks are filled with a pattern, not zeros: le_alloc must zero them itself.
inline cudaError_t cudaMalloc(void** p, size_t n) {
  if (emu::capturing) return emu::refuse_in_capture();
  auto* h = static_cast<emu::Header*>(std::aligned_alloc(256, (n + 255) / 256 * 256 + 256));
  if (!h) return emu::fail(cudaErrorMemoryAllocation);
  h->bytes = n;
  emu::allocated += n;
  *p = reinterpret_cast<char*>(h) + 256;
#if defined(__SANITIZE_ADDRESS__)
  // The header is not the buffer's, nor is the rounding after it: an access before the
  // buffer's start, or past its end, is caught there too.
  ASAN_POISON_MEMORY_REGION(h, 256);
  ASAN_POISON_MEMORY_REGION(static_cast<char*>(*p) + n, (n + 255) / 256 * 256 - n);
#endif
  std::memset(*p, 0xA5, n);
  emu::allocs[reinterpret_cast<uintptr_t>(*p)] = n;
  return cudaSuccess;
}
// As on a GPU, cudaFree waits for the work queued before it.
inline cudaError_t cudaFree(void* p) {
  if (emu::capturing) return emu::refuse_in_capture();
  emu::n_syncs++;
  emu::drain();
  if (!p) return cudaSuccess;
  auto* h = reinterpret_cast<emu::Header*>(static_cast<char*>(p) - 256);
#if defined(__SANITIZE_ADDRESS__)
  ASAN_UNPOISON_MEMORY_REGION(h, 256);  // before h->bytes is read
  ASAN_UNPOISON_MEMORY_REGION(h, 256 + (h->bytes + 255) / 256 * 256);
#endif
  emu::allocated -= h->bytes;
  emu::allocs.erase(reinterpret_cast<uintptr_t>(p));
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
  if (emu::sticky != cudaSuccess) return emu::sticky;
  emu::n_memops++;
  emu::enqueue([=] { std::memset(p, v, n); });
  return cudaSuccess;
}
// Overlapping ranges are undefined for cudaMemcpy: the emulation refuses them. The copy
// happens when the queue runs, not now.
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind,
                                   cudaStream_t) {
  if (emu::sticky != cudaSuccess) return emu::sticky;
  const auto a = reinterpret_cast<uintptr_t>(d), b = reinterpret_cast<uintptr_t>(s);
  if (n && a < b + n && b < a + n) return emu::fail(cudaErrorInvalidValue);
  emu::n_memops++;
  emu::enqueue([=] { std::memcpy(d, s, n); });
  return cudaSuccess;
}
// Raising a kernel's dynamic shared memory limit (up to 227 KiB on compute capability 9.0).
inline std::map<const void*, size_t>& emu_smem_optin() {
  static std::map<const void*, size_t> m;
  return m;
}
template <class F>
inline cudaError_t cudaFuncSetAttribute(F* f, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > 232448) {
    return emu::fail(cudaErrorInvalidValue);
  }
  emu_smem_optin()[reinterpret_cast<const void*>(f)] = size_t(value);
  return cudaSuccess;
}
// CUDA graphs: a capture records the stream's work; an instantiated graph queues a copy of it
// at each cudaGraphLaunch, which counts as one host call (n_graph_launches), not as the
// launches inside it.
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2,
};
struct emu_graph {
  std::vector<std::function<void()>> ops;
};
typedef struct emu_graph* cudaGraph_t;
typedef struct emu_graph* cudaGraphExec_t;
inline cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
  if (emu::sticky != cudaSuccess) return emu::sticky;
  if (emu::capturing) return emu::fail(cudaErrorIllegalState);
  emu::capturing = new std::vector<std::function<void()>>();
  emu::capture_invalid = false;
  return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* g) {
  if (!emu::capturing) return emu::fail(cudaErrorIllegalState);
  auto* ops = emu::capturing;
  emu::capturing = nullptr;
  *g = nullptr;
  if (emu::capture_invalid) {
    delete ops;
    return emu::fail(cudaErrorStreamCaptureInvalidated);
  }
  *g = new emu_graph{std::move(*ops)};
  delete ops;
  return emu::sticky;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t* e, cudaGraph_t g, unsigned long long) {
  if (!g) return emu::fail(cudaErrorInvalidValue);
  *e = new emu_graph{g->ops};
  return cudaSuccess;
}
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t) {
  if (emu::sticky != cudaSuccess) return emu::sticky;
  if (!e) return emu::fail(cudaErrorInvalidValue);
  if (emu::capturing) return emu::refuse_in_capture();
  emu::n_graph_launches++;
  for (const auto& f : e->ops) emu::queue.push_back(f);
  return cudaSuccess;
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  delete g;
  return cudaSuccess;
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
  delete e;
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
