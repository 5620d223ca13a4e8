// emu.h: runs the CUDA engine's kernels on CPU threads, for tests on machines without a GPU
// (see README.md beside this file). Force-included (g++ -include) before
// engine/engine_cuda.cu, compiled as C++20.
//
// A launch is queued (cuda_runtime.h) and runs when the stream is synchronised. It runs its
// blocks one after another. Each block runs as blockDim fibers (on the calling thread), each
// with its own stack: a fiber runs until it reaches a barrier or returns, then the next one
// runs. So __syncthreads is a real barrier, warp shuffles really exchange values between
// lanes, and a kernel that reads what another thread has not written yet, or forgets a
// barrier, gives wrong results here as it would on a GPU. `__shared__` variables become
// function-local statics in one linker section, and that section and the dynamic shared
// memory are filled with NaN bytes (0xFF) before every block, as a GPU gives no block the
// previous block's values. A thread that returns early counts as arrived at later barriers,
// as exited threads do on the GPU.
//
// What a GPU would reject or get wrong fails here too, as a sticky launch failure with a
// message (cuda_runtime.h's fault()):
//   - a barrier that can never be released;
//   - a full-mask warp shuffle or __syncwarp while some of the warp's 32 lanes have exited
//     or do not exist (a block size that is not a multiple of 32);
//   - launch configurations over the device's limits (more than 1024 threads, grid
//     dimensions, more than 48 KiB of dynamic shared memory without cudaFuncSetAttribute):
//     cudaErrorInvalidConfiguration or cudaErrorInvalidValue from the launch, as on a GPU.
// Two checks cost time and are switched on by LOTUS_EMU_CHECK (a comma list, read at each
// launch):
//   order   each launch runs twice from the same memory: threads and blocks in index order,
//           then both in reverse order, with cp.async copies landing when issued rather than
//           at their wait; different results mean a missing barrier, blocks that read each
//           other's writes, or a copy into a buffer still being read (what a GPU's
//           interleavings would expose).
//   writes  after each block, the bytes it changed in the buffers that the kernel's non-const
//           pointer arguments point into are recorded; a byte changed by two blocks of one
//           launch, other than through an atomic, is a race a GPU would lose updates to.
//   all     both.
// LOTUS_EMU_ORDER=reverse runs every launch with threads and blocks in reverse order.
#pragma once

#define LE_HOST_EMULATION 1

#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda_runtime.h"

// The engine dlopens libcuda.so.1, libcublasLt.so.13 and libcublas.so.13 by name. Here those
// names lead to the stand-ins built beside the emulated engine (EMU_LIB_DIR), under names of
// their own, so that the process's real libraries (if any) are neither shadowed nor used.
#include <dlfcn.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#include <string>
#ifndef EMU_LIB_DIR
#error "compile the emulation with -DEMU_LIB_DIR=<directory of the stand-in libraries>"
#endif
inline void* emu_dlopen(const char* name, int flags) {
  static const char* const map[][2] = {{"libcuda.so.1", "libemu_cuda.so"},
                                       {"libcublasLt.so.13", "libemu_cublaslt.so"},
                                       {"libcublas.so.13", "libemu_cublas.so"}};
  for (auto& m : map) {
    if (std::strcmp(name, m[0]) == 0) {
      return dlopen((std::string(EMU_LIB_DIR) + "/" + m[1]).c_str(), flags);
    }
  }
  return nullptr;  // other versions (.so.12): not there
}
#define dlopen emu_dlopen

#define __global__
#define __device__
#define __host__
// Every __shared__ variable lands in the section emu_shared, whose bounds the linker
// provides, so that run_block can poison it before each block.
#define __shared__ static __attribute__((section("emu_shared")))
extern "C" unsigned char __start_emu_shared[] __attribute__((weak, visibility("hidden")));
extern "C" unsigned char __stop_emu_shared[] __attribute__((weak, visibility("hidden")));
#define __align__(n) alignas(n)

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The vector types of 16- and 8-byte loads and stores, as the CUDA toolkit declares them.
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};

namespace emu {

// One CUDA thread of the block being run: a fiber with its own stack. Everything
// runs on the calling OS thread; a fiber gives the CPU back only at a barrier or when its
// kernel returns, which is where a GPU thread could be overtaken too.
enum class Wait { none, block, warp, done };

// Switching fibers. On x86-64 a few instructions save the callee-saved registers and swap
// stacks (swapcontext would also make two system calls per switch, which dominated the
// tests' time); elsewhere, ucontext.
#if defined(__x86_64__)
extern "C" void emu_switch(void** save_sp, void* to_sp);
asm(R"(
  .text
  .globl emu_switch
  .hidden emu_switch
  .type emu_switch,@function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch, .-emu_switch
)");
#endif

struct Fiber {
  ucontext_t ctx;
  void* sp = nullptr;  // saved stack pointer (x86-64 switch)
  std::unique_ptr<unsigned char[]> stack;  // not zeroed: pages are touched only when used
  dim3 tidx;
  unsigned lin = 0;
  Wait wait = Wait::none;
  unsigned mask = 0;  // the mask of the warp operation it waits at
  // cp.async: the copies it issued since its last commit, then its committed groups, oldest
  // first. A copy reads its source when issued; its bytes reach shared memory only when
  // cp.async.wait_group completes its group, so a read before the wait sees the old bytes.
  struct AsyncCopy {
    void* dst;
    unsigned char bytes[16];
  };
  std::vector<AsyncCopy> open;
  std::vector<std::vector<AsyncCopy>> groups;
  bool dep_waited = false;  // pdl_begin() called (griddepcontrol.wait)
  void* asan_fake = nullptr;  // its fake stack while switched out (AddressSanitizer builds)
};

struct Launch_ {
  ucontext_t sched;
  void* sched_sp = nullptr;
  std::vector<Fiber> fibers;  // grow-only; the first n run this launch
  unsigned n = 0;
  std::vector<uint64_t> lanes;  // one 8-byte slot per thread, for shuffles
  std::vector<uint32_t> mma;    // six words per thread: its operand registers of an mma
  std::vector<unsigned char> smem;
  std::function<void()> kernel;
  dim3 bidx, bdim, gdim;
  Fiber* cur = nullptr;
  const char* name = "";
  bool reverse = false;                  // run threads (and blocks) in reverse order
  // cp.async copies land when issued instead of at their wait (the order check's second run):
  // a buffer overwritten by a copy while other threads still read it then shows.
  bool eager_async = false;
  size_t dyn_bytes = 0;  // the launch's dynamic shared memory, from dyn_base()
  std::vector<uintptr_t> atomic_addrs;  // words written by atomics in this launch
};

// Set by a source whose kernels must each begin with pdl_begin() (the engine's, common.cuh):
// a thread that returns without having called it is a fault, as on a GPU it could have run
// before the kernel it depends on had finished.
inline bool require_dep_wait = false;

inline Launch_ state;         // reused by every launch: fiber stacks are allocated once
inline Launch_* L = nullptr;  // the launch in progress (launches never overlap)
inline constexpr size_t kStack = 256 * 1024;

// Built with AddressSanitizer (check/cuda_emu.ts's sanitize build), each switch between the
// scheduler's stack and a fiber's is announced to it, so that it checks each frame against the
// stack it runs on; a fiber's stack is unpoisoned when the fiber starts again, since the frames
// its previous run left (it never returns) would otherwise keep their redzones.
#if defined(__SANITIZE_ADDRESS__)
struct AsanStack {
  const void* bottom = nullptr;
  size_t size = 0;
};
inline AsanStack sched_stack;  // the host thread's stack, as ASan reports it at the first switch
inline void asan_leave(void** fake, const void* bottom, size_t size) {
  __sanitizer_start_switch_fiber(fake, bottom, size);
}
inline void asan_arrive(void* fake) {
  __sanitizer_finish_switch_fiber(fake, &sched_stack.bottom, &sched_stack.size);
}
#else
inline void asan_leave(void**, const void*, size_t) {}
inline void asan_arrive(void*) {}
#endif

inline void to_scheduler(Fiber* f, bool for_good = false) {
#if defined(__SANITIZE_ADDRESS__)
  asan_leave(for_good ? nullptr : &f->asan_fake, sched_stack.bottom, sched_stack.size);
#else
  (void)for_good;
#endif
#if defined(__x86_64__)
  emu_switch(&f->sp, L->sched_sp);
#else
  swapcontext(&f->ctx, &L->sched);
#endif
  asan_arrive(f->asan_fake);
}

inline void to_fiber(Fiber* f) {
  L->cur = f;
  void* fake = nullptr;
  asan_leave(&fake, f->stack.get(), kStack);
#if defined(__x86_64__)
  emu_switch(&L->sched_sp, f->sp);
#else
  swapcontext(&L->sched, &f->ctx);
#endif
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

// Where a fiber starts; it never returns (its last switch leaves it for good).
inline void stuck(const char* why);
inline void fiber_main() {
  Fiber* f = L->cur;
  asan_arrive(nullptr);
  L->kernel();
  if (!f->open.empty() || !f->groups.empty()) {
    stuck("a thread returned with cp.async copies not waited for (cp.async.wait_group 0)");
  }
  if (require_dep_wait && !f->dep_waited) {
    stuck("a thread returned without calling pdl_begin() (griddepcontrol.wait), which every "
          "kernel of the engine begins with");
  }
  f->wait = Wait::done;
  to_scheduler(f, true);
  std::abort();
}

inline void fiber_main_uc(unsigned, unsigned) { fiber_main(); }

inline void yield(Wait w, unsigned mask = 0xffffffffu) {
  Fiber* f = L->cur;
  f->wait = w;
  f->mask = mask;
  to_scheduler(f);
}

// Prepares f to start at fiber_main on its own stack.
inline void start_fiber(Fiber& f) {
  f.open.clear();
  f.groups.clear();
  f.dep_waited = false;
  f.asan_fake = nullptr;
#if defined(__SANITIZE_ADDRESS__)
  ASAN_UNPOISON_MEMORY_REGION(f.stack.get(), kStack);
#endif
#if defined(__x86_64__)
  // The stack as emu_switch leaves it: six saved registers, then a return address into
  // fiber_main, placed so that fiber_main starts as if called (rsp = 8 mod 16).
  auto* top = reinterpret_cast<uintptr_t*>(
      (reinterpret_cast<uintptr_t>(f.stack.get()) + kStack) & ~uintptr_t(15));
  *--top = 0;  // fiber_main's own (never used) return address
  *--top = reinterpret_cast<uintptr_t>(&fiber_main);
  for (int i = 0; i < 6; i++) *--top = 0;
  f.sp = top;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack.get();
  f.ctx.uc_stack.ss_size = kStack;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, reinterpret_cast<void (*)()>(&fiber_main_uc), 2, 0u, 0u);
#endif
}

inline void stuck(const char* why) {
  fault("%s: %s (block %u,%u,%u)", L->name, why, L->bidx.x, L->bidx.y, L->bidx.z);
}

// Fills shared memory (static and dynamic) with NaN bytes: a block finds no values there.
inline void poison_shared() {
  std::memset(L->smem.data(), 0xFF, L->smem.size());
  if (__start_emu_shared && __stop_emu_shared > __start_emu_shared) {
    std::memset(__start_emu_shared, 0xFF, size_t(__stop_emu_shared - __start_emu_shared));
  }
}

// Runs one block: resume every runnable fiber in turn; when all have stopped, release the
// barrier they wait at. A block barrier is released when every fiber that has not returned
// waits at it (returned threads count as arrived, as on the GPU); a warp barrier when every
// lane of that warp that has not returned waits at it, and the lanes its mask names are all
// there. Returns false after a fault (the block is abandoned).
inline bool run_block() {
  Fiber* F = L->fibers.data();
  const unsigned n = L->n;
  poison_shared();
  for (unsigned i = 0; i < n; i++) {
    start_fiber(F[i]);
    F[i].wait = Wait::none;
  }
  for (;;) {
    for (unsigned k = 0; k < n; k++) {
      const unsigned i = L->reverse ? n - 1 - k : k;
      if (F[i].wait == Wait::none) to_fiber(&F[i]);
    }
    bool any = false;
    for (unsigned w = 0; w * 32 < n; w++) {
      bool all = true, some = false;
      unsigned there = 0, need = 0;
      for (unsigned i = w * 32; i < std::min(n, w * 32 + 32); i++) {
        if (F[i].wait == Wait::warp) {
          some = true;
          there |= 1u << (i % 32);
          need |= F[i].mask;
        } else if (F[i].wait != Wait::done) {
          all = false;
        }
      }
      if (some && all) {
        if (need & ~there) {
          char why[160];
          std::snprintf(why, sizeof why,
                        "a warp shuffle or __syncwarp with mask 0x%08x in warp %u, whose lanes "
                        "0x%08x have exited or do not exist (blockDim %u)",
                        need, w, need & ~there, n);
          stuck(why);
          return false;
        }
        for (unsigned i = w * 32; i < std::min(n, w * 32 + 32); i++) {
          if (F[i].wait == Wait::warp) F[i].wait = Wait::none;
        }
        any = true;
      }
    }
    if (any) continue;
    bool all = true, some = false;
    for (unsigned i = 0; i < n; i++) {
      if (F[i].wait == Wait::block) some = true;
      else if (F[i].wait != Wait::done) all = false;
    }
    if (!some) {
      if (!all) {
        stuck("threads wait at different barriers");
        return false;
      }
      return true;  // every thread has returned
    }
    if (!all) {
      stuck("__syncthreads while some threads of a warp wait at a warp barrier");
      return false;
    }
    for (unsigned i = 0; i < n; i++) {
      if (F[i].wait == Wait::block) F[i].wait = Wait::none;
    }
  }
}

// The buffers a kernel may write: the allocations that its non-const pointer arguments
// point into (kernels write nowhere else).
struct Region {
  unsigned char* p;
  size_t n;
};

template <class A>
void add_region(std::vector<Region>& out, const A& a) {
  if constexpr (std::is_pointer_v<A> && !std::is_const_v<std::remove_pointer_t<A>> &&
                !std::is_function_v<std::remove_pointer_t<A>>) {
    const auto x = reinterpret_cast<uintptr_t>(a);
    auto it = allocs.upper_bound(x);
    if (!a || it == allocs.begin()) return;
    --it;
    if (x >= it->first + it->second) return;
    for (auto& r : out) {
      if (reinterpret_cast<uintptr_t>(r.p) == it->first) return;
    }
    out.push_back({reinterpret_cast<unsigned char*>(it->first), it->second});
  }
}

inline bool is_atomic(uintptr_t a) {
  for (uintptr_t w : L->atomic_addrs) {
    if (a >= w && a < w + 8) return true;
  }
  return false;
}

inline std::string check_modes() {
  const char* e = std::getenv("LOTUS_EMU_CHECK");
  return e ? e : "";
}

// Runs every block of a launch; with `writes`, tracks which block changed which byte of the
// regions. Returns false after a fault.
inline bool run_blocks(const std::vector<Region>* writes) {
  const uint64_t blocks = (uint64_t)L->gdim.x * L->gdim.y * L->gdim.z;
  std::vector<std::vector<unsigned char>> prev;
  std::vector<std::vector<int64_t>> owner;
  if (writes) {
    for (auto& r : *writes) {
      prev.emplace_back(r.p, r.p + r.n);
      owner.emplace_back(r.n, -1);
    }
  }
  for (uint64_t k = 0; k < blocks; k++) {
    const uint64_t b = L->reverse ? blocks - 1 - k : k;
    const dim3 g = L->gdim;
    L->bidx = dim3(unsigned(b % g.x), unsigned((b / g.x) % g.y),
                   unsigned(b / ((uint64_t)g.x * g.y)));
    if (!run_block()) return false;
    if (!writes) continue;
    for (size_t r = 0; r < writes->size(); r++) {
      unsigned char* p = (*writes)[r].p;
      const size_t n = (*writes)[r].n;
      if (std::memcmp(p, prev[r].data(), n) == 0) continue;
      for (size_t i = 0; i < n; i++) {
        if (p[i] == prev[r][i]) continue;
        prev[r][i] = p[i];
        const int64_t o = owner[r][i];
        if (o >= 0 && o != (int64_t)b && !is_atomic(reinterpret_cast<uintptr_t>(p + i))) {
          fault("%s: blocks %lld and %lld both wrote byte %zu of the %zu-byte buffer at %p "
                "without an atomic: on a GPU one update would be lost",
                L->name, (long long)o, (long long)b, i, n, (void*)p);
          return false;
        }
        owner[r][i] = (int64_t)b;
      }
    }
  }
  return true;
}

// The engine's LAUNCH sites whose kernel has run, each as "file:line" of its LAUNCH, with the
// kernel's offset in the library (the template instance run): emu_launch_sites,
// check/kernel_tour.ts's coverage. Recorded when the work runs, not when it is queued or
// recorded into a graph, so that work dropped after a fault or a graph never replayed counts
// for nothing.
inline std::set<std::pair<std::string, uintptr_t>>& launched_sites() {
  static std::set<std::pair<std::string, uintptr_t>> s;
  return s;
}
inline uintptr_t offset_in_library(const void* f) {
  Dl_info info;
  if (!dladdr(f, &info) || !info.dli_fbase) return 0;
  return reinterpret_cast<uintptr_t>(f) - reinterpret_cast<uintptr_t>(info.dli_fbase);
}

inline cudaError_t check_config(const void* kernel, dim3 grid, dim3 blk, size_t smem);

template <class Kernel, class... Args>
void run(const char* name, const char* site, Kernel k, dim3 grid, dim3 blk, size_t smem,
         Args... args) {
  // The limits again when the work runs, as a GPU applies them to a graph's nodes at each replay:
  // a kernel's shared memory limit lowered since the launch was queued or recorded refuses it.
  if (check_config(reinterpret_cast<const void*>(k), grid, blk, smem) != cudaSuccess) {
    fault("%s: %zu bytes of dynamic shared memory, over the kernel's limit when it runs (lowered "
          "by cudaFuncSetAttribute since the launch was queued or recorded)",
          name, smem);
    return;
  }
  launched_sites().insert({site, offset_in_library(reinterpret_cast<const void*>(k))});
  L = &state;
  const unsigned n = blk.x * blk.y * blk.z;
  while (state.fibers.size() < n) {
    state.fibers.emplace_back();
    state.fibers.back().stack.reset(new unsigned char[kStack]);
  }
  state.n = n;
  for (unsigned i = 0; i < n; i++) {
    state.fibers[i].lin = i;
    state.fibers[i].tidx = dim3(i % blk.x, (i / blk.x) % blk.y, i / (blk.x * blk.y));
  }
  state.lanes.assign(n, 0);
  state.mma.assign(6 * size_t(n), 0);
  state.smem.assign(smem + 144, 0);  // room to start at a 128-byte boundary (dyn_shared)
  state.dyn_bytes = smem;
  state.bdim = blk;
  state.gdim = grid;
  state.name = name;
  state.atomic_addrs.clear();
  state.kernel = [&]() { k(args...); };
  const std::string modes = check_modes();
  const bool all = modes.find("all") != std::string::npos;
  const bool check_order = all || modes.find("order") != std::string::npos;
  const bool check_writes = all || modes.find("writes") != std::string::npos;
  const char* ord = std::getenv("LOTUS_EMU_ORDER");
  state.reverse = ord && std::strcmp(ord, "reverse") == 0;
  std::vector<Region> regions;
  if (check_order || check_writes) (add_region(regions, args), ...);
  std::vector<std::vector<unsigned char>> before, after;
  if (check_order) {
    for (auto& r : regions) before.emplace_back(r.p, r.p + r.n);
  }
  bool ok = run_blocks(check_writes ? &regions : nullptr);
  if (ok && check_order) {
    for (size_t r = 0; r < regions.size(); r++) {
      after.emplace_back(regions[r].p, regions[r].p + regions[r].n);
      std::memcpy(regions[r].p, before[r].data(), regions[r].n);
    }
    state.reverse = !state.reverse;
    state.eager_async = true;
    state.atomic_addrs.clear();
    ok = run_blocks(nullptr);
    state.eager_async = false;
    state.reverse = !state.reverse;
    for (size_t r = 0; ok && r < regions.size(); r++) {
      if (std::memcmp(regions[r].p, after[r].data(), regions[r].n) == 0) continue;
      size_t i = 0;
      while (regions[r].p[i] == after[r][i]) i++;
      fault("%s: the result depends on the order its threads or blocks run in (byte %zu of "
            "the %zu-byte buffer at %p: 0x%02x in index order, 0x%02x in reverse order): a "
            "missing __syncthreads, or blocks that read each other's writes",
            name, i, regions[r].n, (void*)regions[r].p, after[r][i], regions[r].p[i]);
      ok = false;
    }
  }
  L = nullptr;
}

// The device's limits (compute capability 9.0), checked when a kernel is launched.
inline cudaError_t check_config(const void* kernel, dim3 grid, dim3 blk, size_t smem) {
  const uint64_t threads = (uint64_t)blk.x * blk.y * blk.z;
  if (threads == 0 || threads > 1024 || blk.x > 1024 || blk.y > 1024 || blk.z > 64 ||
      grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
      grid.z > 65535) {
    return cudaErrorInvalidConfiguration;
  }
  size_t limit = 48 * 1024;
  auto it = emu_smem_optin().find(kernel);
  if (it != emu_smem_optin().end()) limit = std::max(limit, it->second);
  if (smem > limit) return cudaErrorInvalidValue;
  return cudaSuccess;
}

// A launch: checks the configuration now (a bad one fails the launch, as on a GPU: the error
// comes from cudaGetLastError) and queues the kernel, with its arguments by value.
template <class Kernel>
struct Launch {
  Kernel k;
  dim3 grid, blk;
  size_t smem;
  const char* name;
  const char* site;  // "file:line" of the LAUNCH
  template <class... Args>
  void operator()(Args... args) const {
    if (sticky != cudaSuccess) return;
    const cudaError_t e = check_config(reinterpret_cast<const void*>(k), grid, blk, smem);
    if (e != cudaSuccess) {
      std::fprintf(stderr,
                   "cuda emulation: launch of %s refused: grid (%u,%u,%u), block (%u,%u,%u), "
                   "%zu bytes of dynamic shared memory: %s\n",
                   name, grid.x, grid.y, grid.z, blk.x, blk.y, blk.z, smem,
                   cudaGetErrorName(e));
      fail(e);
      return;
    }
    n_launches++;
    n_blocks += (uint64_t)grid.x * grid.y * grid.z;
    const Kernel kk = k;
    const dim3 g = grid, b = blk;
    const size_t sm = smem;
    const char *nm = name, *st = site;
    enqueue([=]() { run(nm, st, kk, g, b, sm, args...); });
  }
};

template <class T>
T shuffle(unsigned mask, T v, unsigned src) {
  const unsigned lin = L->cur->lin, base = lin - lin % 32;
  static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
  std::memcpy(&L->lanes[lin], &v, sizeof(T));
  yield(Wait::warp, mask);
  T r{};
  if (base + src < L->n) std::memcpy(&r, &L->lanes[base + src], sizeof(T));
  yield(Wait::warp, mask);
  return r;
}

// Where the launch's dynamic shared memory starts: 128-byte aligned, as the engine declares
// it (common.cuh).
inline uintptr_t dyn_base() {
  return (reinterpret_cast<uintptr_t>(L->smem.data()) + 127) & ~uintptr_t(127);
}

// PTX's cp.async.cg.shared.global of 16 bytes, cp.async.commit_group and
// cp.async.wait_group n for the calling thread (see Fiber). Both addresses must be 16-byte
// aligned and the destination in the block's shared memory, as on a GPU.
inline void cp_async16(void* dst, const void* src) {
  const auto d = reinterpret_cast<uintptr_t>(dst), b = dyn_base();
  if (d % 16 || reinterpret_cast<uintptr_t>(src) % 16 || d < b || d + 16 > b + L->dyn_bytes) {
    stuck("cp.async of 16 bytes to an address outside dynamic shared memory or off a 16-byte "
          "boundary");
    return;
  }
  Fiber::AsyncCopy c;
  c.dst = dst;
  std::memcpy(c.bytes, src, 16);
  if (L->eager_async) {  // landed now; kept in its group for the accounting
    std::memcpy(dst, c.bytes, 16);
    c.dst = nullptr;
  }
  L->cur->open.push_back(c);
}
inline void cp_async_commit() {
  Fiber* f = L->cur;
  f->groups.push_back(std::move(f->open));
  f->open.clear();
}
inline void cp_async_wait(size_t pending) {
  Fiber* f = L->cur;
  while (f->groups.size() > pending) {
    for (const auto& c : f->groups.front()) {
      if (c.dst) std::memcpy(c.dst, c.bytes, 16);
    }
    f->groups.erase(f->groups.begin());
  }
}

// PTX's mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 for the calling warp: D += A B
// with A 16 x 16 and B 16 x 8 in bf16, D 16 x 8 in fp32. The registers' layout, as the PTX
// ISA documents it for this shape (lane L, g = L / 4, t = L % 4; a 32-bit register holds two
// bf16, the one of lower column or row index in its low half):
//   a[0]: A(g, 2t..2t+1)   a[1]: A(g+8, 2t..2t+1)   a[2]: A(g, 2t+8..2t+9)   a[3]: A(g+8, 2t+8..)
//   b[0]: B(2t..2t+1, g)   b[1]: B(2t+8..2t+9, g)
//   d[0], d[1]: D(g, 2t), D(g, 2t+1)   d[2], d[3]: D(g+8, 2t), D(g+8, 2t+1)
// Every lane publishes its six operand words and the warp meets (a full-mask warp barrier,
// so a warp with exited or missing lanes faults, as mma.sync requires all 32); each lane then
// forms its four elements of D from the others' words: the 16 products (exact in double)
// summed in double and added to d with one rounding to fp32, as the tensor cores round a
// product's sum once rather than after each term (their exact internal precision is not
// modelled). So, as on a GPU, how a long sum is cut into 16-term products shows in the bits.
// The warp meets again before any lane may publish its next operands.
inline float mma_half(const uint32_t* regs, unsigned lane, int reg, int hi) {
  const uint32_t u = (regs[6 * lane + reg] >> (16 * hi)) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// LOTUS_EMU_MMA=swap-b models a GPU whose B fragment has its two registers the other way round:
// a layout the kernels do not assume, which le_init's probe must catch.
inline bool mma_swaps_b() {
  const char* e = std::getenv("LOTUS_EMU_MMA");
  return e && std::strcmp(e, "swap-b") == 0;
}

inline void mma_bf16_16816(float* d, const uint32_t* a, const uint32_t* b) {
  const unsigned lin = L->cur->lin, base = lin - lin % 32, lane = lin % 32;
  uint32_t* mine = &L->mma[6 * size_t(lin)];
  for (int r = 0; r < 4; r++) mine[r] = a[r];
  const bool swap = mma_swaps_b();
  mine[4] = b[swap ? 1 : 0], mine[5] = b[swap ? 0 : 1];
  yield(Wait::warp, 0xffffffffu);
  const uint32_t* w = &L->mma[6 * size_t(base)];
  const int g = int(lane / 4), t = int(lane % 4);
  float out[4];
  for (int r = 0; r < 4; r++) {
    const int m = g + 8 * (r / 2), n = 2 * t + r % 2;
    double acc = 0;
    for (int k = 0; k < 16; k++) {
      // A(m, k): lane 4 (m % 8) + (k % 8) / 2, register (m / 8) + 2 (k / 8), half k % 2.
      const unsigned la = unsigned(4 * (m % 8) + (k % 8) / 2), lb = unsigned(4 * n + (k % 8) / 2);
      const float x = mma_half(w, la, m / 8 + 2 * (k / 8), k % 2);
      // B(k, n): lane 4 n + (k % 8) / 2, register 4 + k / 8, half k % 2.
      const float y = mma_half(w, lb, 4 + k / 8, k % 2);
      acc += (double)x * y;
    }
    out[r] = (float)((double)d[r] + acc);
  }
  yield(Wait::warp, 0xffffffffu);
  for (int r = 0; r < 4; r++) d[r] = out[r];
}

}  // namespace emu

#define __launch_bounds__(...)  // the registers a GPU would allot are not modelled
#define threadIdx (::emu::L->cur->tidx)
#define blockIdx (::emu::L->bidx)
#define blockDim (::emu::L->bdim)
#define gridDim (::emu::L->gdim)

#define EMU_STR2(x) #x
#define EMU_STR(x) EMU_STR2(x)
#define LAUNCH(kernel, grid, block, smem)                                                 \
  ::emu::Launch<decltype(&kernel)>{&kernel, dim3(grid), dim3(block), size_t(smem), #kernel, \
                                   __FILE__ ":" EMU_STR(__LINE__)}

template <class T>
inline T* dyn_shared() {
  return reinterpret_cast<T*>(::emu::dyn_base());
}

// Programmatic dependent launch: launches run one after another here, so the wait is met at
// once; it is recorded for require_dep_wait's check.
inline void pdl_begin() { ::emu::L->cur->dep_waited = true; }

inline void __syncthreads() { ::emu::yield(::emu::Wait::block); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::emu::yield(::emu::Wait::warp, mask); }

template <class T>
inline T __shfl_down_sync(unsigned m, T v, unsigned delta) {
  const unsigned lane = ::emu::L->cur->lin % 32;
  return ::emu::shuffle(m, v, lane + delta < 32 ? lane + delta : lane);
}
template <class T>
inline T __shfl_xor_sync(unsigned m, T v, unsigned mask) {
  return ::emu::shuffle(m, v, (::emu::L->cur->lin % 32) ^ mask);
}
template <class T>
inline T __shfl_sync(unsigned m, T v, unsigned src) {
  return ::emu::shuffle(m, v, src % 32);
}

inline int atomicMin(int* p, int v) {
  ::emu::L->atomic_addrs.push_back(reinterpret_cast<uintptr_t>(p));
  std::atomic_ref<int> a(*p);
  int old = a.load();
  while (v < old && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}

inline unsigned atomicAdd(unsigned* p, unsigned v) {
  ::emu::L->atomic_addrs.push_back(reinterpret_cast<uintptr_t>(p));
  return std::atomic_ref<unsigned>(*p).fetch_add(v);
}
// Single roundings, as written: float arithmetic here is IEEE single (SSE), never fused.
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
// Blocks run one after another here: every write is seen by the blocks after it.
inline void __threadfence() {}
inline float __ldcg(const float* p) { return *p; }

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
using std::isnan;

// The stream's counters (cuda_runtime.h) and the stand-in cuBLAS's and cuBLASLt's GEMM calls:
// out[0] kernel launches, out[1] memset/memcpy operations, out[2] host waits, out[3] GEMMs,
// out[4] graph launches, out[5] thread blocks of the kernel launches. Work replayed by a graph
// launch is not counted again.
// Exported (check/cuda_emu.ts's version script) for emuCounters.
extern "C" __attribute__((visibility("default"), used)) void emu_counters(uint64_t* out) {
  out[0] = ::emu::n_launches;
  out[1] = ::emu::n_memops;
  out[2] = ::emu::n_syncs;
  out[3] = 0;
  out[4] = ::emu::n_graph_launches;
  out[5] = ::emu::n_blocks;
  for (const char* lib : {"libcublas.so.13", "libcublasLt.so.13"}) {
    if (void* h = emu_dlopen(lib, RTLD_NOW | RTLD_NOLOAD)) {
      using Count = uint64_t (*)();
      if (auto f = reinterpret_cast<Count>(dlsym(h, "emu_gemm_calls"))) out[3] += f();
      dlclose(h);
    }
  }
}

// The LAUNCH sites whose kernel has run since the library was loaded, a line each kernel
// instance they ran: the site's "file:line" (the path as the compiler was given it), a tab, the
// instance's offset in the library in hex. Into buf (at most cap bytes, NUL-terminated when it fits);
// returns the bytes the whole list needs. Exported (check/cuda_emu.ts's version script) for
// emuLaunches.
extern "C" __attribute__((visibility("default"), used)) uint64_t emu_launch_sites(char* buf,
                                                                                  uint64_t cap) {
  std::string all;
  char hex[32];
  for (const auto& [site, off] : ::emu::launched_sites()) {
    std::snprintf(hex, sizeof hex, "%llx", (unsigned long long)off);
    all += site + "\t" + hex + "\n";
  }
  if (cap > all.size()) std::memcpy(buf, all.c_str(), all.size() + 1);
  return all.size() + 1;
}
