// nccl_api.cuh: the data-parallel collectives of the CUDA engine. Gradients are summed with
// NCCL on the engine's stream; MPI (../comm_mpi.h) starts the job and carries NCCL's unique
// id from rank 0 to the others. NCCL is resolved with dlopen when a process joins a job, like
// cuBLAS (cublas_api.cuh): the library builds without NCCL's headers or library, and a single
// process never loads it.
//
// The declarations below are written from NCCL's public API documentation (nccl.h's types
// and the "Communicator Creation and Management" and "Collective Operations" chapters), only
// for what the engine calls. The enum values are part of NCCL's stable ABI.
//
// Waiting. A collective is queued on the engine's stream like any op; the ABI's collectives
// are synchronous, so the engine then polls the stream (cudaStreamQuery) and NCCL's
// asynchronous error state (ncclCommGetAsyncError) until the work is done, an error shows,
// or the watchdog's timeout passes: then the communicator is aborted (ncclCommAbort, which
// frees a kernel waiting for a dead peer) and the call fails with a message.
//
// Overlap. allreduce_start queues a sum on a second stream (the comm stream) that first waits
// for an event recorded on the engine's stream, so it reads the gradient only once the work
// issued before it has written it; the engine's stream meanwhile goes on with the backward.
// wait_pending records an event on the comm stream, makes the engine's stream wait for it
// (later work such as the next zeroing of the gradient is ordered after the sums) and polls
// the comm stream as above. Every other collective first waits for the started sums, so
// NCCL sees the collectives of one communicator in the same order on every rank.
#pragma once

#include <dlfcn.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "../comm_mpi.h"

namespace nccl {

typedef struct Comm* CommT;  // ncclComm_t: an opaque pointer
typedef int Result;          // ncclResult_t
constexpr Result kSuccess = 0;
constexpr Result kInProgress = 7;  // ncclInProgress (non-blocking communicators only)

// ncclDataType_t
constexpr int kUint8 = 1;    // ncclUint8
constexpr int kFloat32 = 7;  // ncclFloat32
// ncclRedOp_t
constexpr int kSum = 0;  // ncclSum

constexpr int kUniqueIdBytes = 128;  // NCCL_UNIQUE_ID_BYTES
struct UniqueId {
  char internal[kUniqueIdBytes];
};

typedef Result (*GetVersionFn)(int*);
typedef Result (*GetUniqueIdFn)(UniqueId*);
typedef Result (*CommInitRankFn)(CommT*, int nranks, UniqueId id, int rank);
typedef Result (*CommDestroyFn)(CommT);
typedef Result (*CommAbortFn)(CommT);
typedef Result (*CommGetAsyncErrorFn)(CommT, Result*);
typedef const char* (*GetErrorStringFn)(Result);
typedef Result (*AllReduceFn)(const void* send, void* recv, size_t count, int datatype, int op,
                              CommT comm, cudaStream_t stream);
typedef Result (*BroadcastFn)(const void* send, void* recv, size_t count, int datatype,
                              int root, CommT comm, cudaStream_t stream);

struct Api {
  void* lib = nullptr;
  char name[256] = "";
  int version = 0;
  GetVersionFn get_version = nullptr;
  GetUniqueIdFn get_unique_id = nullptr;
  CommInitRankFn comm_init_rank = nullptr;
  CommDestroyFn comm_destroy = nullptr;
  CommAbortFn comm_abort = nullptr;
  CommGetAsyncErrorFn comm_get_async_error = nullptr;
  GetErrorStringFn error_string = nullptr;  // optional
  AllReduceFn all_reduce = nullptr;
  BroadcastFn broadcast = nullptr;
};

struct State {
  Api api;
  CommT comm = nullptr;
  int device = -1;  // the device the communicator was created on
  cudaStream_t comm_stream = nullptr;  // the overlapped sums (allreduce_start)
  cudaEvent_t issued = nullptr;        // recorded on the engine's stream before each start
  cudaEvent_t reduced = nullptr;       // recorded on the comm stream by wait_pending
  bool pending = false;                // sums started and not yet waited for
};

inline State& st() {
  static State s;
  return s;
}

inline const char* error_name(Result r) {
  if (st().api.error_string) return st().api.error_string(r);
  switch (r) {
    case 0: return "ncclSuccess";
    case 1: return "ncclUnhandledCudaError";
    case 2: return "ncclSystemError";
    case 3: return "ncclInternalError";
    case 4: return "ncclInvalidArgument";
    case 5: return "ncclInvalidUsage";
    case 6: return "ncclRemoteError";
    case 7: return "ncclInProgress";
    default: return "unknown NCCL result";
  }
}

// libnccl.so.2: LOTUS_NCCL (a path or soname, no fallback), else the soname, else the
// toolkit's and NVIDIA's Python packages' usual places.
inline int load(const char* fn) {
  Api& a = st().api;
  if (a.lib) return 0;
  const char* env = getenv("LOTUS_NCCL");
  const char* names[] = {env && env[0] ? env : nullptr, "libnccl.so.2",
                         "/usr/local/cuda/lib64/libnccl.so.2",
                         "/usr/lib/x86_64-linux-gnu/libnccl.so.2"};
  const char* why = "not found";
  for (const char* n : names) {
    if (!n) continue;
    a.lib = dlopen(n, RTLD_NOW | RTLD_LOCAL);
    if (a.lib) {
      snprintf(a.name, sizeof a.name, "%s", n);
      break;
    }
    const char* e = dlerror();
    if (e) why = e;
    if (n == env) break;
  }
  if (!a.lib) {
    return ::le::fail("%s: cannot load NCCL (%s). Data-parallel training on GPUs needs "
                      "libnccl.so.2 (NVIDIA's libnccl2 package, or the nvidia-nccl Python "
                      "package's lib directory on LD_LIBRARY_PATH), or LOTUS_NCCL naming it",
                      fn, why);
  }
  auto sym = [&a](const char* s) { return dlsym(a.lib, s); };
  a.get_version = (GetVersionFn)sym("ncclGetVersion");
  a.get_unique_id = (GetUniqueIdFn)sym("ncclGetUniqueId");
  a.comm_init_rank = (CommInitRankFn)sym("ncclCommInitRank");
  a.comm_destroy = (CommDestroyFn)sym("ncclCommDestroy");
  a.comm_abort = (CommAbortFn)sym("ncclCommAbort");
  a.comm_get_async_error = (CommGetAsyncErrorFn)sym("ncclCommGetAsyncError");
  a.error_string = (GetErrorStringFn)sym("ncclGetErrorString");
  a.all_reduce = (AllReduceFn)sym("ncclAllReduce");
  a.broadcast = (BroadcastFn)sym("ncclBroadcast");
  if (!a.get_version || !a.get_unique_id || !a.comm_init_rank || !a.comm_destroy ||
      !a.comm_abort || !a.comm_get_async_error || !a.all_reduce || !a.broadcast) {
    dlclose(a.lib);
    a.lib = nullptr;
    return ::le::fail("%s: %s lacks an NCCL function the engine needs (ncclCommInitRank, "
                      "ncclAllReduce, ncclBroadcast, ncclCommGetAsyncError, ...); NCCL 2.4 or "
                      "newer is required",
                      fn, a.name);
  }
  if (a.get_version(&a.version) != kSuccess) a.version = 0;
  return 0;
}

#define NCCL_TRY(fn, call)                                                                  \
  do {                                                                                      \
    ::nccl::Result r_ = (call);                                                             \
    if (r_ != ::nccl::kSuccess) {                                                           \
      return ::le::fail("%s: %s failed: %s (NCCL %d)", fn, #call, ::nccl::error_name(r_),   \
                        r_);                                                                \
    }                                                                                       \
  } while (0)

// Waits for the engine's stream after a collective was queued on it, watching NCCL's
// asynchronous errors and the watchdog's deadline. On an error or a timeout the communicator
// is aborted (it cannot be used again) and the call fails.
inline int wait_stream(const char* fn, cudaStream_t stream) {
  using namespace ::le;
  State& s = st();
  const int64_t timeout = comm::st().timeout_ms.load();
  const int64_t deadline = timeout > 0 ? comm::now_ms() + timeout : 0;
  for (;;) {
    const cudaError_t e = cudaStreamQuery(stream);
    if (e == cudaSuccess) return 0;
    if (e != cudaErrorNotReady) return cuda_fail(fn, "cudaStreamQuery", e);
    Result async = kSuccess;
    if (s.comm && s.api.comm_get_async_error(s.comm, &async) == kSuccess &&
        async != kSuccess && async != kInProgress) {
      s.api.comm_abort(s.comm);
      s.comm = nullptr;
      return fail("%s: NCCL reports %s (a peer died or its network failed); this rank "
                  "cannot continue: the job must restart from its last checkpoint",
                  fn, error_name(async));
    }
    if (deadline && comm::now_ms() > deadline) {
      if (s.comm) s.api.comm_abort(s.comm);
      s.comm = nullptr;
      return fail("%s: rank %d of %d waited more than %.0f s for the other ranks: one of them "
                  "has died, hangs, or is far behind; the last checkpoint is intact and "
                  "--resume continues from it (raise --comm-timeout if a rank legitimately "
                  "needs longer)",
                  fn, comm::st().rank, comm::st().size, timeout / 1000.0);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

inline int wait(const char* fn) { return wait_stream(fn, ::le::g.stream); }

// Waits for every sum allreduce_start queued; the engine's stream is ordered after them.
inline int wait_pending(const char* fn) {
  using namespace ::le;
  State& s = st();
  if (!s.pending) return 0;
  s.pending = false;
  CUDA_TRY(fn, cudaEventRecord(s.reduced, s.comm_stream));
  CUDA_TRY(fn, cudaStreamWaitEvent(g.stream, s.reduced, 0));
  return wait_stream(fn, s.comm_stream);
}

// Joins the MPI job, then creates the NCCL communicator on the engine's device: rank 0 makes
// the unique id and MPI broadcasts it. Idempotent.
inline int join(const char* fn, double timeout_s) {
  using namespace ::le;
  TRY(comm::join(fn, timeout_s));
  State& s = st();
  if (s.comm) return 0;
  TRY(load(fn));
  UniqueId id;
  memset(&id, 0, sizeof id);
  if (comm::st().rank == 0) NCCL_TRY(fn, s.api.get_unique_id(&id));
  TRY(comm::broadcast_host(fn, &id, sizeof id, 0));
  comm::Guard guard(fn);  // ncclCommInitRank waits for every rank
  NCCL_TRY(fn, s.api.comm_init_rank(&s.comm, comm::st().size, id, comm::st().rank));
  s.device = g.device;
  if (!s.comm_stream) {
    CUDA_TRY(fn, cudaStreamCreateWithFlags(&s.comm_stream, cudaStreamNonBlocking));
    CUDA_TRY(fn, cudaEventCreateWithFlags(&s.issued, cudaEventDisableTiming));
    CUDA_TRY(fn, cudaEventCreateWithFlags(&s.reduced, cudaEventDisableTiming));
  }
  return 0;
}

inline int require_comm(const char* fn) {
  if (!st().comm) {
    return ::le::fail("%s: no NCCL communicator: call le_comm_init first (after a failed "
                      "collective the communicator is gone: restart the job)",
                      fn);
  }
  return 0;
}

// Queues the in-place sum of buf [n] on the comm stream, after the work issued so far on the
// engine's stream; returns without waiting.
inline int allreduce_start(const char* fn, float* buf, int64_t n) {
  using namespace ::le;
  TRY(require_comm(fn));
  if (n == 0) return 0;
  State& s = st();
  CUDA_TRY(fn, cudaEventRecord(s.issued, g.stream));
  CUDA_TRY(fn, cudaStreamWaitEvent(s.comm_stream, s.issued, 0));
  NCCL_TRY(fn, s.api.all_reduce(buf, buf, (size_t)n, kFloat32, kSum, s.comm, s.comm_stream));
  s.pending = true;
  return 0;
}

inline int allreduce_sum(const char* fn, float* buf, int64_t n) {
  TRY(require_comm(fn));
  TRY(wait_pending(fn));
  if (n == 0) return 0;
  NCCL_TRY(fn, st().api.all_reduce(buf, buf, (size_t)n, kFloat32, kSum, st().comm,
                                   ::le::g.stream));
  return wait(fn);
}

inline int broadcast(const char* fn, void* buf, uint64_t bytes, int root) {
  TRY(require_comm(fn));
  TRY(::le::comm::check_root(fn, root));
  TRY(wait_pending(fn));
  if (bytes == 0) return 0;
  NCCL_TRY(fn, st().api.broadcast(buf, buf, (size_t)bytes, kUint8, root, st().comm,
                                  ::le::g.stream));
  return wait(fn);
}

// The device's queued work first, then MPI's barrier.
inline int barrier(const char* fn) {
  TRY(require_comm(fn));
  TRY(wait_pending(fn));
  TRY(wait(fn));
  return ::le::comm::barrier(fn);
}

inline int leave(const char* fn) {
  State& s = st();
  if (s.comm) {
    if (s.pending) cudaStreamSynchronize(s.comm_stream);
    s.pending = false;
    cudaStreamSynchronize(::le::g.stream);
    s.api.comm_destroy(s.comm);
    s.comm = nullptr;
  }
  if (s.comm_stream) {
    cudaEventDestroy(s.issued);
    cudaEventDestroy(s.reduced);
    cudaStreamDestroy(s.comm_stream);
    s.comm_stream = nullptr, s.issued = nullptr, s.reduced = nullptr;
  }
  return ::le::comm::leave(fn);
}

}  // namespace nccl
