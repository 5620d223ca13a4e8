// emu.h: runs the CUDA engine's kernels on CPU threads, for tests on machines without a GPU
// (see README.md beside this file). Force-included (g++ -include) before
// engine/engine_cuda.cu, compiled as C++20.
//
// A launch runs its blocks one after another. Each block runs as blockDim fibers (on the
// calling thread), each with its own stack: a fiber runs until it reaches a barrier or
// returns, then the next one runs. So __syncthreads is a real barrier, warp shuffles really
// exchange values between lanes, and a kernel that reads what another thread has not written
// yet, or forgets a barrier, gives wrong results here as it would on a GPU (threads run in
// index order between barriers: one fixed interleaving among the GPU's many). `__shared__`
// variables become function-local statics: one copy, used by one block at a time. A thread
// that returns early counts as arrived at later barriers, as exited threads do on the GPU; a
// barrier that can never be released aborts with a message.
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
#include <vector>

#include "cuda_runtime.h"

// The engine dlopens libcuda.so.1, libcublasLt.so.13 and libcublas.so.13 by name. Here those
// names lead to the stand-ins built beside the emulated engine (EMU_LIB_DIR), under names of
// their own, so that the process's real libraries (if any) are neither shadowed nor used.
#include <dlfcn.h>

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
#define __shared__ static
#define __align__(n) alignas(n)

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
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
};

struct Launch_ {
  ucontext_t sched;
  void* sched_sp = nullptr;
  std::vector<Fiber> fibers;  // grow-only; the first n run this launch
  unsigned n = 0;
  std::vector<uint64_t> lanes;  // one 8-byte slot per thread, for shuffles
  std::vector<unsigned char> smem;
  std::function<void()> kernel;
  dim3 bidx, bdim, gdim;
  Fiber* cur = nullptr;
};

inline Launch_ state;         // reused by every launch: fiber stacks are allocated once
inline Launch_* L = nullptr;  // the launch in progress (launches never overlap)
inline constexpr size_t kStack = 256 * 1024;

inline void to_scheduler(Fiber* f) {
#if defined(__x86_64__)
  emu_switch(&f->sp, L->sched_sp);
#else
  swapcontext(&f->ctx, &L->sched);
#endif
}

inline void to_fiber(Fiber* f) {
  L->cur = f;
#if defined(__x86_64__)
  emu_switch(&L->sched_sp, f->sp);
#else
  swapcontext(&L->sched, &f->ctx);
#endif
}

// Where a fiber starts; it never returns (its last switch leaves it for good).
inline void fiber_main() {
  Fiber* f = L->cur;
  L->kernel();
  f->wait = Wait::done;
  to_scheduler(f);
  std::abort();
}

inline void fiber_main_uc(unsigned, unsigned) { fiber_main(); }

inline void yield(Wait w) {
  Fiber* f = L->cur;
  f->wait = w;
  to_scheduler(f);
}

// Prepares f to start at fiber_main on its own stack.
inline void start_fiber(Fiber& f) {
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

[[noreturn]] inline void deadlock(const char* why) {
  std::fprintf(stderr, "cuda emulation: %s (block %u,%u,%u)\n", why, L->bidx.x, L->bidx.y,
               L->bidx.z);
  std::abort();
}

// Runs one block: resume every runnable fiber in turn; when all have stopped, release the
// barrier they wait at. A block barrier is released when every fiber that has not returned
// waits at it (returned threads count as arrived, as on the GPU); a warp barrier when every
// lane of that warp that has not returned waits at it.
inline void run_block() {
  Fiber* F = L->fibers.data();
  const unsigned n = L->n;
  for (unsigned i = 0; i < n; i++) {
    start_fiber(F[i]);
    F[i].wait = Wait::none;
  }
  for (;;) {
    for (unsigned i = 0; i < n; i++) {
      if (F[i].wait == Wait::none) to_fiber(&F[i]);
    }
    bool any = false;
    for (unsigned w = 0; w * 32 < n; w++) {
      bool all = true, some = false;
      for (unsigned i = w * 32; i < std::min(n, w * 32 + 32); i++) {
        if (F[i].wait == Wait::warp) some = true;
        else if (F[i].wait != Wait::done) all = false;
      }
      if (some && all) {
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
      if (!all) deadlock("threads wait at different barriers");
      return;  // every thread has returned
    }
    if (!all) deadlock("__syncthreads while some threads of a warp wait at a warp barrier");
    for (unsigned i = 0; i < n; i++) {
      if (F[i].wait == Wait::block) F[i].wait = Wait::none;
    }
  }
}

template <class Kernel, class... Args>
void run(Kernel k, dim3 grid, dim3 blk, size_t smem, Args... args) {
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
  state.smem.assign(smem + 16, 0);
  state.bdim = blk;
  state.gdim = grid;
  state.kernel = [&]() { k(args...); };
  const uint64_t blocks = (uint64_t)grid.x * grid.y * grid.z;
  for (uint64_t b = 0; b < blocks; b++) {
    state.bidx = dim3(unsigned(b % grid.x), unsigned((b / grid.x) % grid.y),
                      unsigned(b / ((uint64_t)grid.x * grid.y)));
    run_block();
  }
  L = nullptr;
}

template <class Kernel>
struct Launch {
  Kernel k;
  dim3 grid, blk;
  size_t smem;
  template <class... Args>
  void operator()(Args... args) const {
    run(k, grid, blk, smem, args...);
  }
};

template <class T>
T shuffle(T v, unsigned src) {
  const unsigned lin = L->cur->lin, base = lin - lin % 32;
  static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
  std::memcpy(&L->lanes[lin], &v, sizeof(T));
  yield(Wait::warp);
  T r;
  std::memcpy(&r, &L->lanes[base + src], sizeof(T));
  yield(Wait::warp);
  return r;
}

}  // namespace emu

#define threadIdx (::emu::L->cur->tidx)
#define blockIdx (::emu::L->bidx)
#define blockDim (::emu::L->bdim)
#define gridDim (::emu::L->gdim)

#define LAUNCH(kernel, grid, block, smem) \
  ::emu::Launch<decltype(&kernel)>{&kernel, dim3(grid), dim3(block), size_t(smem)}

template <class T>
inline T* dyn_shared() {
  return reinterpret_cast<T*>(::emu::L->smem.data());
}

inline void __syncthreads() { ::emu::yield(::emu::Wait::block); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::emu::yield(::emu::Wait::warp); }

template <class T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta) {
  const unsigned lane = ::emu::L->cur->lin % 32;
  return ::emu::shuffle(v, lane + delta < 32 ? lane + delta : lane);
}
template <class T>
inline T __shfl_xor_sync(unsigned, T v, unsigned mask) {
  return ::emu::shuffle(v, (::emu::L->cur->lin % 32) ^ mask);
}
template <class T>
inline T __shfl_sync(unsigned, T v, unsigned src) {
  return ::emu::shuffle(v, src % 32);
}

inline int atomicMin(int* p, int v) {
  std::atomic_ref<int> a(*p);
  int old = a.load();
  while (v < old && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}

inline int min(int a, int b) { return a < b ? a : b; }
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
