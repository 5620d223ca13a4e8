// comm_mpi.h: data-parallel collectives over MPI, shared by both engines (included after
// engine_checks.h). libmpi is loaded with dlopen when a process first joins a job
// (le_comm_init), so neither engine needs MPI to build or to run a single process.
//
// Why our own declarations instead of <mpi.h>: the engines must compile on machines without
// MPI, and load on machines with it. The few functions below are declared from the MPI
// standard's C bindings. Handles follow Open MPI's ABI (libmpi.so.40): MPI_Comm, MPI_Datatype
// and MPI_Op are pointers to predefined global objects (ompi_mpi_comm_world, ompi_mpi_float,
// ompi_mpi_byte, ompi_mpi_op_sum), which dlsym finds by name, and MPI_IN_PLACE is (void*)1.
// Another MPI (MPICH's integer handles) is refused with a message.
//
// Failure behaviour. Each collective runs under a watchdog: a thread that, when a collective
// has waited longer than the timeout given to le_comm_init for the other ranks (one died,
// hangs, or is far behind), prints which rank and which collective and ends the process with
// status 75. mpirun then ends the job. A blocked MPI call cannot be interrupted any other way,
// and an error inside MPI already ends the job (MPI_ERRORS_ARE_FATAL, the default).
//
// Overlap. allreduce_start begins a nonblocking sum (MPI_Iallreduce) and returns; progress
// (MPI_Testall) lets it advance while the caller computes; wait_pending (MPI_Waitall, under
// the watchdog) finishes every one started. Any other collective first waits for them, so
// collectives complete in the order every rank started them.
#pragma once

#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace le {
namespace comm {

typedef void* Handle;  // Open MPI: MPI_Comm, MPI_Datatype, MPI_Op are pointers
typedef int (*FlagFn)(int*);                          // MPI_Initialized, MPI_Finalized
typedef int (*InitFn)(int*, char***);                 // MPI_Init
typedef int (*CommIntFn)(Handle, int*);               // MPI_Comm_rank, MPI_Comm_size
typedef int (*AllreduceFn)(const void*, void*, int, Handle, Handle, Handle);
typedef int (*BcastFn)(void*, int, Handle, int, Handle);
typedef int (*BarrierFn)(Handle);
typedef int (*FinalizeFn)(void);
typedef int (*ErrorStringFn)(int, char*, int*);
typedef void* Request;  // Open MPI: MPI_Request is a pointer
typedef int (*IallreduceFn)(const void*, void*, int, Handle, Handle, Handle, Request*);
typedef int (*TestallFn)(int, Request*, int*, void*);  // statuses: MPI_STATUSES_IGNORE (0)
typedef int (*WaitallFn)(int, Request*, void*);

// MPI counts are ints: large buffers go in pieces of this many elements.
constexpr int64_t kMaxCount = 1 << 30;
// Open MPI's MPI_IN_PLACE.
inline void* in_place() { return reinterpret_cast<void*>(1); }

struct State {
  void* lib = nullptr;
  char lib_name[256] = "";
  Handle world = nullptr, f32 = nullptr, byte = nullptr, sum = nullptr;
  FlagFn initialized = nullptr, finalized = nullptr;
  InitFn init = nullptr;
  CommIntFn rank_fn = nullptr, size_fn = nullptr;
  AllreduceFn allreduce = nullptr;
  BcastFn bcast = nullptr;
  BarrierFn barrier = nullptr;
  FinalizeFn finalize = nullptr;
  ErrorStringFn error_string = nullptr;
  // Nonblocking all-reduce (MPI-3); optional: without them the started all-reduces run
  // blocking, at once.
  IallreduceFn iallreduce = nullptr;
  TestallFn testall = nullptr;
  WaitallFn waitall = nullptr;
  // The all-reduces started and not yet waited for, in the order they were started.
  std::vector<Request> pending;
  bool joined = false, left = false;
  int rank = -1, size = 0;
  // The watchdog: the deadline (ms since the steady clock's epoch; 0: no collective waits)
  // and the collective's name.
  std::atomic<int64_t> deadline_ms{0};
  std::atomic<const char*> op{nullptr};
  std::atomic<int64_t> timeout_ms{0};
  bool watchdog = false;
};

inline State& st() {
  static State s;
  return s;
}

inline int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline void watchdog_loop() {
  State& s = st();
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const int64_t d = s.deadline_ms.load();
    if (d != 0 && now_ms() > d) {
      const char* op = s.op.load();
      fprintf(stderr,
              "lotus: rank %d of %d: %s waited more than %.0f s for the other ranks: one of "
              "them has died, hangs, or is far behind. Ending this process (exit status 75); "
              "the last checkpoint is intact, and --resume continues from it. If a rank "
              "legitimately needs longer (saving a large checkpoint), raise --comm-timeout.\n",
              s.rank, s.size, op ? op : "a collective", s.timeout_ms.load() / 1000.0);
      fflush(stderr);
      _exit(75);
    }
  }
}

// Arms the watchdog for the lifetime of one collective.
struct Guard {
  explicit Guard(const char* op) {
    State& s = st();
    const int64_t t = s.timeout_ms.load();
    if (t <= 0) return;
    s.op.store(op);
    s.deadline_ms.store(now_ms() + t);
  }
  ~Guard() { st().deadline_ms.store(0); }
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;
};

// Resolves libmpi: LOTUS_LIBMPI (a path or soname), else Open MPI's soname libmpi.so.40,
// else libmpi.so. RTLD_GLOBAL: Open MPI's own plugins resolve its symbols globally.
inline int load(const char* fn) {
  State& s = st();
  if (s.lib) return 0;
  const char* env = getenv("LOTUS_LIBMPI");
  const char* names[] = {env && env[0] ? env : nullptr, "libmpi.so.40", "libmpi.so"};
  const char* why = "";
  for (const char* n : names) {
    if (!n) continue;
    s.lib = dlopen(n, RTLD_NOW | RTLD_GLOBAL);
    if (s.lib) {
      snprintf(s.lib_name, sizeof s.lib_name, "%s", n);
      break;
    }
    const char* e = dlerror();
    why = e ? e : "not found";
    if (n == env) break;  // an explicit choice never falls back
  }
  if (!s.lib) {
    return fail("%s: cannot load MPI (%s). Data-parallel training needs Open MPI's libmpi.so.40 "
                "(Debian: apt-get install openmpi-bin libopenmpi-dev), or LOTUS_LIBMPI naming "
                "the library",
                fn, why);
  }
  void* lib = s.lib;
  auto sym = [lib](const char* name) { return dlsym(lib, name); };
  s.world = sym("ompi_mpi_comm_world");
  s.f32 = sym("ompi_mpi_float");
  s.byte = sym("ompi_mpi_byte");
  s.sum = sym("ompi_mpi_op_sum");
  if (!s.world || !s.f32 || !s.byte || !s.sum) {
    dlclose(lib);
    s.lib = nullptr;
    return fail("%s: %s is not Open MPI (it lacks ompi_mpi_comm_world and the other predefined "
                "handles); the engine speaks Open MPI's ABI: install Open MPI, or point "
                "LOTUS_LIBMPI at its libmpi.so.40",
                fn, s.lib_name);
  }
  s.initialized = (FlagFn)sym("MPI_Initialized");
  s.finalized = (FlagFn)sym("MPI_Finalized");
  s.init = (InitFn)sym("MPI_Init");
  s.rank_fn = (CommIntFn)sym("MPI_Comm_rank");
  s.size_fn = (CommIntFn)sym("MPI_Comm_size");
  s.allreduce = (AllreduceFn)sym("MPI_Allreduce");
  s.bcast = (BcastFn)sym("MPI_Bcast");
  s.barrier = (BarrierFn)sym("MPI_Barrier");
  s.finalize = (FinalizeFn)sym("MPI_Finalize");
  s.error_string = (ErrorStringFn)sym("MPI_Error_string");
  s.iallreduce = (IallreduceFn)sym("MPI_Iallreduce");
  s.testall = (TestallFn)sym("MPI_Testall");
  s.waitall = (WaitallFn)sym("MPI_Waitall");
  if (!s.iallreduce || !s.testall || !s.waitall) {
    s.iallreduce = nullptr, s.testall = nullptr, s.waitall = nullptr;
  }
  if (!s.initialized || !s.finalized || !s.init || !s.rank_fn || !s.size_fn || !s.allreduce ||
      !s.bcast || !s.barrier || !s.finalize) {
    dlclose(lib);
    s.lib = nullptr;
    return fail("%s: %s lacks an MPI function the engine needs (MPI_Init, MPI_Allreduce, "
                "MPI_Bcast, MPI_Barrier, ...)",
                fn, s.lib_name);
  }
  return 0;
}

inline int mpi_fail(const char* fn, const char* what, int code) {
  char msg[512] = "";
  int len = 0;
  if (st().error_string) st().error_string(code, msg, &len);
  return fail("%s: %s failed: %s (MPI error %d)", fn, what, msg[0] ? msg : "unknown", code);
}

// Joins the job (MPI_Init unless the process already did) and arms the watchdog with
// timeout_s (<= 0: none). Idempotent; a later call only updates the timeout.
inline int join(const char* fn, double timeout_s) {
  State& s = st();
  s.timeout_ms.store(timeout_s > 0 ? (int64_t)(timeout_s * 1000.0) : 0);
  if (s.joined) return 0;
  if (s.left) {
    return fail("%s: this process has already left its MPI job (le_comm_finalize); MPI allows "
                "one job per process: start a new process",
                fn);
  }
  TRY(load(fn));
  int flag = 0;
  s.initialized(&flag);
  if (!flag) {
    // Open MPI's handlers for SIGSEGV and friends would print their own stack traces over the
    // runtime's; leave those signals alone unless the user chose otherwise.
    setenv("OMPI_MCA_opal_signal", "", 0);
    const int rc = s.init(nullptr, nullptr);
    if (rc != 0) return mpi_fail(fn, "MPI_Init", rc);
  }
  s.rank_fn(s.world, &s.rank);
  s.size_fn(s.world, &s.size);
  s.joined = true;
  if (!s.watchdog) {
    std::thread(watchdog_loop).detach();
    s.watchdog = true;
  }
  return 0;
}

inline int require_joined(const char* fn) {
  if (!st().joined) {
    return fail("%s: this process has not joined an MPI job; call le_comm_init first", fn);
  }
  return 0;
}

// Waits for every all-reduce that allreduce_start began (under the watchdog). Every
// collective calls it first, so that collectives complete in the order they were started.
inline int wait_pending(const char* fn) {
  State& s = st();
  if (s.pending.empty()) return 0;
  Guard g(fn);
  const int rc = s.waitall((int)s.pending.size(), s.pending.data(), nullptr);
  s.pending.clear();
  if (rc != 0) return mpi_fail(fn, "MPI_Waitall", rc);
  return 0;
}

// Lets the started all-reduces advance: Open MPI moves a nonblocking collective on only
// inside MPI calls, so the caller calls this between pieces of its own work. Never blocks.
inline int progress(const char* fn) {
  State& s = st();
  if (s.pending.empty()) return 0;
  int done = 0;
  const int rc = s.testall((int)s.pending.size(), s.pending.data(), &done, nullptr);
  if (rc != 0) return mpi_fail(fn, "MPI_Testall", rc);
  if (done) s.pending.clear();
  return 0;
}

// Starts the in-place sum of n floats of host memory over all ranks (MPI_Iallreduce); the
// buffer must not be touched until wait_pending. Without MPI-3's nonblocking collectives in
// the library, the sum runs blocking, now.
inline int allreduce_start(const char* fn, float* buf, int64_t n) {
  State& s = st();
  TRY(require_joined(fn));
  if (!s.iallreduce) {
    Guard g(fn);
    for (int64_t i = 0; i < n; i += kMaxCount) {
      const int cnt = (int)(n - i < kMaxCount ? n - i : kMaxCount);
      const int rc = s.allreduce(in_place(), buf + i, cnt, s.f32, s.sum, s.world);
      if (rc != 0) return mpi_fail(fn, "MPI_Allreduce", rc);
    }
    return 0;
  }
  for (int64_t i = 0; i < n; i += kMaxCount) {
    const int cnt = (int)(n - i < kMaxCount ? n - i : kMaxCount);
    Request r = nullptr;
    const int rc = s.iallreduce(in_place(), buf + i, cnt, s.f32, s.sum, s.world, &r);
    if (rc != 0) return mpi_fail(fn, "MPI_Iallreduce", rc);
    s.pending.push_back(r);
  }
  return progress(fn);
}

// In-place sum of n floats of host memory over all ranks.
inline int allreduce_host(const char* fn, float* buf, int64_t n) {
  State& s = st();
  TRY(require_joined(fn));
  TRY(wait_pending(fn));
  Guard g(fn);
  for (int64_t i = 0; i < n; i += kMaxCount) {
    const int cnt = (int)(n - i < kMaxCount ? n - i : kMaxCount);
    const int rc = s.allreduce(in_place(), buf + i, cnt, s.f32, s.sum, s.world);
    if (rc != 0) return mpi_fail(fn, "MPI_Allreduce", rc);
  }
  return 0;
}

inline int check_root(const char* fn, int root) {
  if (root < 0 || root >= st().size) {
    return fail("%s: root %d is not a rank of this job (0..%d)", fn, root, st().size - 1);
  }
  return 0;
}

// bytes of host memory from root to every rank.
inline int broadcast_host(const char* fn, void* buf, uint64_t bytes, int root) {
  State& s = st();
  TRY(require_joined(fn));
  TRY(check_root(fn, root));
  TRY(wait_pending(fn));
  Guard g(fn);
  char* p = static_cast<char*>(buf);
  for (uint64_t i = 0; i < bytes; i += (uint64_t)kMaxCount) {
    const int cnt = (int)(bytes - i < (uint64_t)kMaxCount ? bytes - i : (uint64_t)kMaxCount);
    const int rc = s.bcast(p + i, cnt, s.byte, root, s.world);
    if (rc != 0) return mpi_fail(fn, "MPI_Bcast", rc);
  }
  return 0;
}

inline int barrier(const char* fn) {
  State& s = st();
  TRY(require_joined(fn));
  TRY(wait_pending(fn));
  Guard g(fn);
  const int rc = s.barrier(s.world);
  if (rc != 0) return mpi_fail(fn, "MPI_Barrier", rc);
  return 0;
}

// MPI_Finalize. No collective may follow in this process. A process that never joined: no-op.
inline int leave(const char* fn) {
  State& s = st();
  if (!s.joined) return 0;
  TRY(wait_pending(fn));
  s.joined = false;
  s.left = true;
  Guard g(fn);
  int done = 0;
  s.finalized(&done);
  if (!done) {
    const int rc = s.finalize();
    if (rc != 0) return mpi_fail(fn, "MPI_Finalize", rc);
  }
  return 0;
}

}  // namespace comm
}  // namespace le
