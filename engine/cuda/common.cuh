// common.cuh: what every kernel family shares: the engine state (device, stream, cuBLAS
// handle, precision), CUDA error reporting, grow-only device scratch, the device side of the
// data-dependent index checks, and deterministic block reductions. The error buffer, the
// registry of le_alloc blocks and each op's argument checks are the CPU engine's too: they
// live in ../engine_checks.h, included here.
//
// Errors never abort. Host-side checks run before anything is queued, so a call with bad
// arguments changes nothing (with the CPU engine's messages, from the same code). CUDA and
// cuBLAS failures are turned into messages that name the op and the call.
// Kernels run asynchronously on the engine's one stream, so a fault inside a kernel (an
// illegal address, say) surfaces at the next synchronising call (le_download, le_sync,
// le_free, ...). With LOTUS_CUDA_SYNC=1 in the environment every op synchronises, which pins
// such a fault to the op that caused it.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "../engine_checks.h"
#include "../lotus_engine.h"
#include "cublas_api.cuh"

// Every ABI function is defined with this: the library is linked with
// -fvisibility=hidden, so only the le_* symbols are exported.
#define LE_API extern "C" __attribute__((visibility("default")))

// Kernels are launched with LAUNCH(kernel, grid, block, shared_bytes)(args...), always on the
// engine's stream, and read their dynamic shared memory with dyn_shared<T>(). Both are
// macros/helpers rather than <<<>>> and `extern __shared__` at each site so that the tests
// can compile this very source as C++ and run its kernels on CPU threads
// (check/cuda_emu/emu.h defines LE_HOST_EMULATION and its own versions).
//
// Programmatic dependent launch. Every kernel begins with pdl_begin(): griddepcontrol.wait,
// which returns once the kernels it depends on have finished and their writes are visible,
// then griddepcontrol.launch_dependents, which lets the next kernel on the stream be launched
// now. With g.pdl (le_init's probe passed; LOTUS_PDL=0 turns it off) LAUNCH asks for
// programmatic serialisation, so the next kernel's blocks are scheduled while this one runs
// and wait at their own pdl_begin(): the gap between dependent kernels, which dominates a
// batch-1 pass's small kernels, is overlapped. Since nothing is read or written before the
// wait, the results are those of plain stream order (the bits are the same either way), and
// a kernel launched without the attribute (cuBLAS's, or all of them without g.pdl) finds the
// wait already satisfied. check/kernel_resources.ts's PTX check holds every kernel to it.
#ifndef LE_HOST_EMULATION
#define LAUNCH(kernel, grid, block, smem) ::le::Launch(kernel, (grid), (block), (smem))
template <class T>
__device__ inline T* dyn_shared() {
  extern __shared__ __align__(128) unsigned char le_dyn_smem[];
  return reinterpret_cast<T*>(le_dyn_smem);
}
__device__ inline void pdl_begin() {
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}
#else
inline const bool le_kernels_wait = (::emu::require_dep_wait = true);  // emu.h's pdl_begin
#endif

namespace le {

// ============================================================================================
// CUDA errors (fail, TRY, REQUIRE_POS/REQUIRE_NONNEG and the block registry: engine_checks.h)
// ============================================================================================

// Errors after which the CUDA context is unusable: every later call fails too.
inline bool is_sticky(cudaError_t e) {
  return e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure ||
         e == cudaErrorIllegalInstruction || e == cudaErrorMisalignedAddress ||
         e == cudaErrorHardwareStackError || e == cudaErrorInvalidPc ||
         e == cudaErrorAssert || e == cudaErrorECCUncorrectable;
}

inline int cuda_fail(const char* fn, const char* what, cudaError_t e) {
  (void)cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  return fail("%s: %s failed: %s (%s)%s", fn, what, cudaGetErrorString(e), cudaGetErrorName(e),
              is_sticky(e) ? "; a kernel faulted and the CUDA context is now unusable: restart "
                             "the process (run with LOTUS_CUDA_SYNC=1 to find the op that "
                             "faulted)"
                           : "");
}

#define CUDA_TRY(fn, call)                                         \
  do {                                                             \
    cudaError_t e_ = (call);                                       \
    if (e_ != cudaSuccess) return ::le::cuda_fail(fn, #call, e_);  \
  } while (0)

// ============================================================================================
// Engine state
// ============================================================================================

struct State {
  bool ready = false;
  int device = -1;
  cudaStream_t stream = nullptr;
  cublas::Api blas;
  cublas::Handle handle = nullptr;
  cublas::LtHandle lt = nullptr;  // null: cublasGemmEx, biases added by a kernel (matmul.cuh)
  int tune_candidates = 8;        // the GEMM algorithms timed per shape (LOTUS_GEMM_TUNE)
  void* workspace = nullptr;  // cuBLAS workspace, owned here so its size is fixed
  int precision = 0;          // 0 fp32, 1 TF32, 2 bf16 (le_set_precision)
  bool tc_attention = true;   // bf16 attention on tensor cores (attention_tc.cuh)
  bool tc_bf16_rows = true;   // its backward stages bf16 copies of its rows (attention_tc.cuh)
  bool tc_ahead = true;       // its kernels' tiles overlap the products before them
  bool bf16_qkv = true;       // offered to keep qkv in bf16 storage (le_device_info)
  bool bf16_fch = true;       // offered to keep the MLP's first projection in bf16 storage
  int tc_max_warps = 8;       // most warps (16 rows each) of its blocks (attention_tc.cuh)
  bool gemv = true;           // forwards of a few rows by gemv_bf16_kernel (matmul.cuh)
  int skinny = 1;  // forwards of 9 to 128 rows: 0 cuBLAS, 1 timed, 2 skinny_gemm_kernel
  int sms = 0;     // the device's multiprocessors
  bool defer_gelu_bwd = true;  // a hinted GELU backward done by its matmul (DeferredGelu)
  int defer_gelu_fwd = 1;  // a hinted GELU forward formed by its matmul: 0 no, 1 timed, 2 always
  int defer_norm_fwd = 1;  // a hinted norm forward formed by its matmul: as defer_gelu_fwd
  bool pdl = false;  // kernels launched with programmatic dependent launch (LAUNCH)
  bool pdl_dropped = false;  // it failed after le_init's probe, and was turned off (LAUNCH)
  int mma_probe = 0;          // le_init's mma probe: wrong elements, -1 not run (attention_tc)
  bool sync_each_op = false;  // LOTUS_CUDA_SYNC=1
  bool capturing = false;     // between le_graph_begin and le_graph_end (graphs.cuh)
  uint64_t capture_failures = 0;  // g_failures at le_graph_begin
  int* dflag = nullptr;       // device int[4]: results of validation kernels
  int* hflag = nullptr;       // pinned host copy
};

State g;

// Programmatic dependent launch failed after le_init's probe: off for the process, and
// le_device_info says so (pdlDropped).
inline void drop_pdl() {
  if (!g.pdl) return;
  g.pdl = false;
  g.pdl_dropped = true;
}

#ifndef LE_HOST_EMULATION
// What LAUNCH makes: kernel<<<grid, block, smem, g.stream>>>(args...), with programmatic
// serialisation when g.pdl. A failed launch is reported by the op's op_done
// (cudaGetLastError), as with <<<>>>. If a launch with programmatic serialisation fails
// outside a recording, the kernel is launched again without it, and when that works it is
// turned off for the process (g.pdl_dropped; le_device_info says so); when that fails too, the
// fault was not its own and it stays on. In a recording it is turned off and the recording
// fails as with any failed op, so that the caller's next recording runs without it
// (model/graphs.ts runs the ops one by one).
template <class... P>
struct Launch {
  void (*kernel)(P...);
  dim3 grid, block;
  size_t smem;
  Launch(void (*k)(P...), dim3 gr, dim3 bl, size_t sm) : kernel(k), grid(gr), block(bl), smem(sm) {}
  template <class... A>
  void operator()(A&&... args) const {
    if (!g.pdl) {
      kernel<<<grid, block, smem, g.stream>>>(std::forward<A>(args)...);
      return;
    }
    cudaLaunchAttribute attr[1] = {};
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = g.stream;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    if (cudaLaunchKernelEx(&cfg, kernel, args...) == cudaSuccess) return;
    if (g.capturing) {
      drop_pdl();
      return;  // the error stays for op_done: this recording fails
    }
    (void)cudaGetLastError();
    kernel<<<grid, block, smem, g.stream>>>(std::forward<A>(args)...);
    // Only a launch that works without the attribute blames it: one that fails again (a bad
    // configuration) leaves programmatic launch on, and its error for op_done.
    if (cudaPeekAtLastError() == cudaSuccess) drop_pdl();
  }
};
#endif

// Counts the engine calls that may run work or change memory (every op, le_alloc, le_free,
// le_set_precision, the collectives' progress): a bf16 copy that an op makes of its output is
// read only by the call right after it (ProducedCopy, below).
uint64_t g_op_serial = 0;

// Whether something recorded at engine call `serial` was made by the call just before this one
// (a produced copy, a deferred op: each is for that next call only).
inline bool by_previous_call(uint64_t serial) { return serial + 1 == g_op_serial; }

constexpr size_t kWorkspaceBytes = 32u << 20;

#define REQUIRE_READY(fn)                                                                    \
  do {                                                                                       \
    if (!::le::g.ready) {                                                                    \
      return ::le::fail("%s: the CUDA engine is not initialised; call le_init first "        \
                        "(openEngine does)",                                                 \
                        fn);                                                                 \
    }                                                                                        \
  } while (0)

// Every op's first check, before its validate_<op> (engine_checks.h).
#define REQUIRE_INIT(fn)                                                                     \
  do {                                                                                       \
    REQUIRE_READY(fn);                                                                       \
    ::le::g_op_serial++;                                                                     \
    TRY(::le::check_operand_consumed(fn));                                                   \
  } while (0)

// Entry points that wait for the stream, touch host memory at run time or allocate cannot be
// recorded into a graph: between le_graph_begin and le_graph_end they fail at once.
#define REQUIRE_NOT_CAPTURING(fn)                                                            \
  do {                                                                                       \
    if (::le::g.capturing) {                                                                 \
      return ::le::fail("%s: not allowed while a graph is being captured (le_graph_begin); "  \
                        "do it before le_graph_begin or after le_graph_end",                 \
                        fn);                                                                 \
    }                                                                                        \
  } while (0)

// Ends an op: reports a failed launch (bad configuration), and in LOTUS_CUDA_SYNC mode
// waits for the op's kernels so that a fault is reported by the op that caused it.
inline int op_done(const char* fn) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return cuda_fail(fn, "a kernel launch", e);
  if (g.sync_each_op && !g.capturing) {
    e = cudaStreamSynchronize(g.stream);
    if (e != cudaSuccess) return cuda_fail(fn, "cudaStreamSynchronize (LOTUS_CUDA_SYNC)", e);
  }
  return 0;
}

// 16-byte vector load and store (p 16-byte aligned: aligned16).
__host__ __device__ inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15) == 0;
}
__device__ inline float4 ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ inline void st4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }

// bf16 storage (le_alloc_bf16) reaches the ops as float*; its elements are bf16.
inline const __nv_bfloat16* as_bf16(const float* p) {
  return reinterpret_cast<const __nv_bfloat16*>(p);
}
// Calls f with the values at p as stored: a const __nv_bfloat16* for bf16 storage (in16), else
// a const float*, so that one generic launch serves both element types.
template <class F>
inline void with_stored(const float* p, bool in16, F&& f) {
  if (in16) {
    f(as_bf16(p));
  } else {
    f(p);
  }
}
// The element type of a pointer that with_stored passes.
template <class P>
using stored_t = std::remove_const_t<std::remove_pointer_t<P>>;
// One element of an fp32 or bf16 array as a float (bf16 widened exactly).
__device__ inline float to_f32(float v) { return v; }
__device__ inline float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
// Four consecutive elements as floats: p aligned to four elements (16 bytes fp32, 8 bf16).
__device__ inline float4 ld4f(const float* p) { return ld4(p); }
__device__ inline float4 ld4f(const __nv_bfloat16* p) {
  const uint2 u = *reinterpret_cast<const uint2*>(p);
  return {__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u),
          __uint_as_float(u.y << 16), __uint_as_float(u.y & 0xffff0000u)};
}

// One warp's tensor-core product D (16 x 8, fp32) += A (16 x 16, bf16) B (16 x 8, bf16): PTX's
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, all 32 lanes converged. Lane L, with
// g = L / 4 and t = L % 4, holds a[r] = A(g + 8 (r % 2), 2t + 8 (r / 2) + {0, 1}),
// b[r] = B(2t + 8 r + {0, 1}, g) and d[r] = D(g + 8 (r / 2), 2t + r % 2); a register's two
// bf16 hold the lower index in the low half. (The emulation implements the same layout.)
#ifndef LE_HOST_EMULATION
__device__ inline void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4],
                                      const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#else
inline void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  ::emu::mma_bf16_16816(d, a, b);
}
#endif

// Fragment loads from a staged bf16 tile T of pitch ld (g, t: the lane's group and place).
__device__ inline uint32_t ld_bf16x2(const __nv_bfloat16* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}
// A = rows r0 .. r0 + 15 of T, columns k0 .. k0 + 15.
__device__ inline void tc_frag_a(uint32_t (&a)[4], const __nv_bfloat16* T, int ld, int r0, int k0,
                                 int g, int t) {
  const __nv_bfloat16* p = T + (r0 + g) * ld + k0 + 2 * t;
  a[0] = ld_bf16x2(p), a[1] = ld_bf16x2(p + 8 * ld);
  a[2] = ld_bf16x2(p + 8), a[3] = ld_bf16x2(p + 8 * ld + 8);
}
// B(k, n) = T[n0 + n][k0 + k]: T's rows are B's columns (keys in q k^T).
__device__ inline void tc_frag_bt(uint32_t (&b)[2], const __nv_bfloat16* T, int ld, int n0,
                                  int k0, int g, int t) {
  const __nv_bfloat16* p = T + (n0 + g) * ld + k0 + 2 * t;
  b[0] = ld_bf16x2(p), b[1] = ld_bf16x2(p + 8);
}
// Asynchronous copies from global into shared memory (sm_80 and later): cp_async16 queues a
// 16-byte copy (both addresses 16-byte aligned) without holding it in registers;
// cp_async_commit closes the thread's copies issued since its last commit into a group;
// cp_async_wait<N> waits until at most N of the thread's groups are still in flight. Other
// threads see the bytes after a barrier that follows their writer's wait.
#ifndef LE_HOST_EMULATION
__device__ inline void cp_async16(void* smem, const void* gmem) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
}
__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ inline void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
#else
inline void cp_async16(void* smem, const void* gmem) { ::emu::cp_async16(smem, gmem); }
inline void cp_async_commit() { ::emu::cp_async_commit(); }
template <int N>
inline void cp_async_wait() {
  ::emu::cp_async_wait(N);
}
#endif

// Two floats rounded to bf16 and packed as one mma operand register (lo in the low half).
__device__ inline uint32_t pack_bf16x2(float lo, float hi) {
  return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
         ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16);
}

// Grid size for n elements with blocks of `threads`, capped (kernels loop grid-stride).
inline unsigned grid_for(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return (unsigned)(b < 1 ? 1 : (b > (1 << 20) ? (1 << 20) : b));
}

// ============================================================================================
// Device scratch: grow-only, never counted by le_bytes_in_use (it is the engine's, not the
// caller's). After the first training step nothing is allocated any more.
// ============================================================================================

// Counts the frees of device memory that recorded graphs may point at: a scratch buffer that
// grew (its old block is freed) and a weight copy that was dropped. A graph records the count
// and is out of date once it changes (graphs.cuh).
uint64_t g_memory_epoch = 0;

struct DevScratch {
  void* p = nullptr;
  size_t bytes = 0;
  // Returns the buffer with at least `need` bytes, or nullptr with a message.
  void* get(const char* fn, size_t need) {
    if (need <= bytes && p) return p;
    if (g.capturing) {
      fail("%s: needs %zu bytes of device scratch space, more than it has, while a graph is "
           "being captured (growing it would wait for the GPU); run the same ops once before "
           "le_graph_begin",
           fn, need);
      return nullptr;
    }
    if (p) {
      // Kernels queued earlier may still read the old buffer. A failure here is one of
      // theirs (an earlier kernel's fault), not a lack of memory: say so.
      cudaError_t e = cudaStreamSynchronize(g.stream);
      if (e == cudaSuccess) e = cudaFree(p);
      if (e != cudaSuccess) {
        (void)cudaGetLastError();
        cuda_fail(fn, "cudaStreamSynchronize before growing the device scratch space (the "
                  "error comes from work queued earlier; LOTUS_CUDA_SYNC=1 names the op)", e);
        return nullptr;
      }
      p = nullptr;
      bytes = 0;
      g_memory_epoch++;
    }
    const size_t want = need < 256 ? 256 : need;
    cudaError_t e = cudaMalloc(&p, want);
    if (e != cudaSuccess) {
      p = nullptr;
      (void)cudaGetLastError();
      fail("%s: cannot allocate %zu bytes (%.2f GiB) of device scratch space: %s; reduce the "
           "batch size or the model",
           fn, want, want / 1073741824.0, cudaGetErrorString(e));
      return nullptr;
    }
    bytes = want;
    return p;
  }
  void release() {
    if (p) cudaFree(p);
    p = nullptr;
    bytes = 0;
  }
};

// Scratch slots. Matmul operand conversions (bf16 or TF32-rounded copies) use a, b, c; the
// attention backward keeps its D rows in ds, and on tensor cores the bf16 copies of the rows
// it stages in att16; column reductions keep their partial sums in part; le_copy of
// overlapping ranges bounces through bounce.
DevScratch g_scr_a, g_scr_b, g_scr_c, g_scr_ds, g_scr_part, g_scr_bounce, g_scr_att16;

// ============================================================================================
// Produced operands. In bf16 mode a matmul reads bf16 operands, and rounds each fp32 operand
// into scratch first (matmul.cuh). The ops whose output a matmul reads next (LayerNorm and its
// residual form, the attention forwards, GELU, RMSNorm, SwiGLU) write that rounded copy
// themselves, in the same kernel, into g_scr_prod:
// the matmul right after them then reads it instead of rounding the output again (one kernel
// and one read of the output fewer; the same bits). The copy is trusted only by the engine
// call right after the one that made it, so no other write can have come between.
// ============================================================================================

// Row pitch of a reduced (bf16 or TF32) copy of rows `cols` wide: a multiple of 16 bytes.
inline int padded_ld(int cols) {
  const int q = g.precision == 2 ? 8 : 4;
  return (cols + q - 1) / q * q;
}

struct ProducedCopy {
  const float* src = nullptr;  // the fp32 output it rounds (nullptr: none)
  int64_t rows = 0;
  int cols = 0;  // 0: a flat copy of `rows` values
  int ld = 0;    // its row pitch, in elements
  uint64_t serial = 0;
  const char* by = "";  // the op that made it
  bool fp32 = true;     // false: src's fp32 values were not written (le_operand_only)
};
ProducedCopy g_produced;
DevScratch g_scr_prod;

// le_operand_only: engine call `serial` may write only the bf16 copy of `out`, which the
// matmul right after it reads, and leave the fp32 values unwritten.
struct OperandOnly {
  const float* out = nullptr;
  uint64_t serial = 0;
};
OperandOnly g_operand_only;

// The fp32 destination of an op of this call that makes out16, the bf16 copy of out: out, or
// nullptr when le_operand_only named out for this call (then only out16 is written).
inline float* fp32_dest(float* out, const __nv_bfloat16* out16) {
  if (!out16 || g_operand_only.out != out || g_operand_only.serial != g_op_serial) return out;
  g_produced.fp32 = false;
  return nullptr;
}

// The copy the previous engine call made when it wrote only that copy of its output
// (le_operand_only), leaving the fp32 values unwritten; nullptr otherwise.
inline const ProducedCopy* operand_only_copy() {
  const ProducedCopy& c = g_produced;
  return c.src && !c.fp32 && by_previous_call(c.serial) ? &c : nullptr;
}

// A deferred GELU backward. In bf16 mode, le_gelu_bwd told by le_operand_only that its output
// dinp is read only by the matmul backward right after it, as that matmul's dout, launches
// nothing: that matmul's column-sum pass (matmul.cuh) forms the values as gelu_bwd_kernel
// would (0 + gelu'(inp) dout), rounds them into the bf16 copy its GEMMs read and sums them into
// the bias gradient. dinp's fp32 values are never written (8 bytes an element less traffic and
// one launch fewer). Launching nothing, it also leaves the bf16 copy that the op before it made
// to that matmul (the LayerNorm recomputed for the same matmul's input).
struct DeferredGelu {
  const float* dinp = nullptr;
  const float* inp = nullptr;  // fp32, or bf16 storage when in16
  const float* dout = nullptr;
  int64_t n = 0;
  uint64_t serial = 0;
  bool in16 = false;
};
DeferredGelu g_deferred_gelu;

// The GELU backward that engine call g_op_serial - 1 deferred to this call; nullptr if none.
inline const DeferredGelu* deferred_gelu() {
  const DeferredGelu& d = g_deferred_gelu;
  return d.dinp && by_previous_call(d.serial) ? &d : nullptr;
}

// A deferred GELU forward. In bf16 mode, le_gelu_fwd told by le_operand_only that its output
// `out` is read only by the matmul right after it launches nothing. That matmul, when one of
// the engine's own few-row kernels serves it with all of `out` as its input, forms
// bf16(gelu(inp)) as it stages its operand, one launch and the copy's round trip fewer (the
// batch-1 thought phase and answer tokens); otherwise it first runs GELU's kernel into the
// bf16 copy, as le_gelu_fwd would have (run_deferred_gelu_fwd, elementwise.cuh). The same
// bits either way: both form each value with gelu_of and round it once.
struct DeferredGeluFwd {
  float* out = nullptr;
  const float* inp = nullptr;
  int64_t n = 0;
  uint64_t serial = 0;
};
DeferredGeluFwd g_deferred_gelu_fwd;

// The GELU forward that engine call g_op_serial - 1 deferred to this call; nullptr if none.
inline const DeferredGeluFwd* deferred_gelu_fwd() {
  const DeferredGeluFwd& d = g_deferred_gelu_fwd;
  return d.out && by_previous_call(d.serial) ? &d : nullptr;
}

// A deferred norm forward: LayerNorm (GPT-2) or RMSNorm (Llama). In bf16 mode,
// le_layernorm_fwd, le_residual_layernorm_fwd, le_rmsnorm_fwd or le_residual_rmsnorm_fwd told
// by le_operand_only that its output `out` is read only by the matmul right after it launches
// nothing (for LayerNorm, where its row takes the vector kernel, layernorm.cuh). That matmul,
// when the gemv kernel (matmul.cuh) serves it with all of `out` as its input, computes each
// row's statistics as the norm's kernel does and forms bf16(norm(x)) as it stages its operand;
// one designated block also writes what the op must still write (mean, rstd, and for the
// residual form the fp32 sum resid = a + r, which later ops read). Otherwise the norm's kernel
// runs first into the bf16 copy, as the op would have (run_deferred_norm_fwd, layernorm.cuh):
// before any other op, which check_operand_consumed then judges as after the op run in its
// place. The same bits either way: the two share the row's statistics and its normalisation
// (ln_vec_stats and ln_norm; rms_row_rstd and rms_norm, llama.cuh).
struct DeferredNormFwd {
  float* out = nullptr;
  const float* a = nullptr;  // the input (x = a, or a + r)
  const float* r = nullptr;  // nullptr: the plain form (le_layernorm_fwd, le_rmsnorm_fwd)
  const float* w = nullptr;
  const float* b = nullptr;  // LayerNorm's bias (RMSNorm: nullptr)
  float* resid = nullptr;  // the residual form's fp32 sum
  float* mean = nullptr;   // either may be nullptr (not written); RMSNorm: mean nullptr
  float* rstd = nullptr;
  int N = 0, C = 0;
  uint64_t serial = 0;
  bool rms = false;  // RMSNorm, with eps
  float eps = 0.f;
};
DeferredNormFwd g_deferred_norm_fwd;

// The norm forward that engine call g_op_serial - 1 deferred to this call; nullptr if none.
inline const DeferredNormFwd* deferred_norm_fwd() {
  const DeferredNormFwd& d = g_deferred_norm_fwd;
  return d.out && by_previous_call(d.serial) ? &d : nullptr;
}
inline __nv_bfloat16* run_deferred_norm_fwd(const char* fn);  // layernorm.cuh
inline bool defer_norm(const DeferredNormFwd& d);             // layernorm.cuh

// Whether the n values at x overlap what copy c was made of; elem: the bytes of x's values
// (2 for bf16 storage).
inline bool copy_overlaps(const ProducedCopy* c, const float* x, int64_t n, int elem = 4) {
  const float* end = c->src + (c->cols ? c->rows * c->cols : c->rows);
  const auto* x_end = reinterpret_cast<const char*>(x) + n * elem;
  return x < end && reinterpret_cast<const char*>(c->src) < x_end;
}

// A matmul's check, after an op that wrote only the bf16 copy c of its output: the matmul
// must read it (`read`), or the fp32 values that were never written would go unnoticed.
inline int check_copy_read(const char* fn, const ProducedCopy* c, bool read, const char* as) {
  if (read) return 0;
  return fail("%s: the op before it, %s, wrote only the bf16 copy of its output for the matmul "
              "right after it to read (le_operand_only), but this call does not read that output "
              "%s, and its fp32 values were never written; pass it, or do not give the hint",
              fn, c->by, as);
}

// REQUIRE_INIT's check: after an op that wrote only the bf16 copy of its output, the next
// op must be the matmul that reads it (it has no fp32 values to read); after a deferred GELU
// backward, the matmul backward that forms its output.
inline int check_operand_consumed(const char* fn) {
  // A deferred norm forward runs now unless this is the matmul that may form it; this op
  // is then judged as after that op (it made only the bf16 copy of its output).
  if (deferred_norm_fwd() && strcmp(fn, "le_matmul_fwd") != 0) run_deferred_norm_fwd(fn);
  if (deferred_gelu() && strcmp(fn, "le_matmul_bwd") != 0) {
    return fail("%s: the op before it, le_gelu_bwd, left its output to be formed by the matmul "
                "backward right after it (le_operand_only), so %s has no values to read; run "
                "that matmul backward, with le_gelu_bwd's output as its dout, right after "
                "le_gelu_bwd, or do not give the hint",
                fn, fn);
  }
  const bool matmul = strcmp(fn, "le_matmul_fwd") == 0 || strcmp(fn, "le_matmul_bwd") == 0;
  if (deferred_gelu_fwd() && !matmul) {
    return fail("%s: the op before it, le_gelu_fwd, left its output to be formed by the matmul "
                "right after it (le_operand_only), so %s has no values to read; run that "
                "matmul, with le_gelu_fwd's output as its input, right after le_gelu_fwd, or "
                "do not give the hint",
                fn, fn);
  }
  const ProducedCopy* c = operand_only_copy();
  if (!c || matmul) return 0;
  return fail("%s: the op before it, %s, wrote only the bf16 copy of its output for a matmul "
              "to read next (le_operand_only), so %s has no fp32 values to read; run that "
              "matmul right after %s, or do not give the hint",
              fn, c->by, fn, c->by);
}

// Where an op of engine call g_op_serial writes the bf16 copy of its output [rows, cols]
// (cols 0: `rows` values, flat), or nullptr outside bf16 mode or when the scratch cannot
// hold it now (while a graph is being captured); *ld is the copy's row pitch.
inline __nv_bfloat16* produce_bf16(const char* fn, const float* out, int64_t rows, int cols,
                                   int* ld) {
  g_produced.src = nullptr;
  *ld = cols ? padded_ld(cols) : 0;
  if (g.precision != 2 || rows <= 0) return nullptr;
  const size_t need = (size_t)(cols ? rows * *ld : rows) * sizeof(__nv_bfloat16);
  if (need > g_scr_prod.bytes && g.capturing) return nullptr;  // growing would wait: skip it
  void* p = g_scr_prod.get(fn, need);
  if (!p) return nullptr;  // no memory for it: the matmul rounds the output itself
  g_produced = {out, rows, cols, *ld, g_op_serial, fn};
  return (__nv_bfloat16*)p;
}

// The produced bf16 copy of x [rows, cols] (rows cols apart) when the previous engine call
// made one that covers it, with its row pitch; nullptr otherwise.
inline const __nv_bfloat16* produced_bf16(const float* x, int64_t rows, int cols, int* ld) {
  const ProducedCopy& c = g_produced;
  if (!c.src || g.precision != 2 || !by_previous_call(c.serial) || x < c.src) return nullptr;
  const int64_t at = x - c.src;  // elements from the copy's start
  const auto* p = (const __nv_bfloat16*)g_scr_prod.p;
  if (c.cols == 0) {  // flat: usable as rows when they need no padding
    if (padded_ld(cols) != cols || at + rows * cols > c.rows) return nullptr;
    *ld = cols;
    return p + at;
  }
  if (c.cols != cols || at % cols != 0 || at / cols + rows > c.rows) return nullptr;
  *ld = c.ld;
  return p + at / cols * c.ld;
}

// ============================================================================================
// Validation kernels: data-dependent checks (token ids, targets) run on the device, and the
// first offending index comes back to the host before anything is written (its message is
// engine_checks.h's fail_bad_id, fail_bad_pos or fail_bad_target).
// ============================================================================================

// flag[slot] = min n such that idx[n] is out of [lo, hi) (lo <= idx < hi), or INT_MAX.
// allow_negative: negative values are allowed (they mean "skip this row").
__global__ void first_bad_index_kernel(int* flag, int slot, const int32_t* idx, int n,
                                       int64_t hi, bool allow_negative) {
  pdl_begin();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int v = idx[i];
    const bool bad = v < 0 ? !allow_negative : (int64_t)v >= hi;
    if (bad) atomicMin(flag + slot, (int)i);
  }
}

__global__ void fill_int_kernel(int* p, int n, int v) {
  pdl_begin();
  if ((int)threadIdx.x < n) p[threadIdx.x] = v;
}

constexpr int kNoBad = 0x7fffffff;

// Index arrays known to be in range, so that a check of the same array (or of a part of it)
// against the same or a looser bound needs no host wait: the embedding's forward and backward
// and every loop pass read the same ids. An entry says that every value of [p, p + n) is in
// [0, hi), or negative when `neg`. Entries come from three places, each exact:
//  - le_upload of at most kSummaryBytes whose length is a multiple of 4: the host reads the
//    bytes it stages anyway as int32 and records their range (for an upload of floats or masks
//    the entry is meaningless and harmless: only index checks look it up, by address);
//  - le_argmax, whose outputs are in [0, V) by construction;
//  - a device check that passed (find_bad_indices).
// An entry is dropped when its bytes are written through the engine's entry points that write
// integers or raw bytes (le_upload, le_copy, le_zero, le_argmax: wrote() in weights.cuh) or
// freed (le_free): index arrays are never the float outputs of other ops.
//
// While a graph is recorded (graphs.cuh) nothing runs: the entries change as if the recorded
// ops ran, so that the ops recorded after a write see it, and each change is noted as one of
// the recording's effects. le_graph_end puts the entries back as they were before the
// recording, and le_graph_launch applies the effects after each replay. A check that an entry
// from before the recording satisfies becomes one of the graph's index needs: the graph reads
// whatever the array holds when it is replayed, so le_graph_launch checks the array again then.
struct CheckedIndices {
  const int32_t* p;
  int64_t n;
  int64_t hi;
  bool neg;
  bool recorded;  // made while a graph was being recorded
};
constexpr int kCheckedSlots = 64;
constexpr uint64_t kSummaryBytes = 1u << 20;
CheckedIndices g_checked[kCheckedSlots];
int g_checked_next = 0;

// An index array a graph reads, and the bound its recording checked it against.
struct IndexNeed {
  const int32_t* p;
  int n;
  int64_t hi;
  bool neg;
};
constexpr size_t kGraphNeeds = 64;
std::vector<IndexNeed> g_needs;  // the needs of the graph being recorded

inline const CheckedIndices* find_checked(const int32_t* p, int n, int64_t hi, bool neg) {
  for (const CheckedIndices& c : g_checked) {
    if (c.p && c.p <= p && p + n <= c.p + c.n && c.hi <= hi && (neg || !c.neg)) return &c;
  }
  return nullptr;
}

inline void note_need(const char* fn, const int32_t* p, int n, int64_t hi, bool neg) {
  for (const IndexNeed& d : g_needs) {
    if (d.p == p && d.n == n && d.hi == hi && d.neg == neg) return;
  }
  if (g_needs.size() == kGraphNeeds) {
    fail("%s: a graph may read at most %zu index arrays; record a shorter sequence", fn,
         kGraphNeeds);
    return;  // the failure voids the recording
  }
  g_needs.push_back(IndexNeed{p, n, hi, neg});
}

inline bool indices_checked(const char* fn, const int32_t* p, int n, int64_t hi, bool neg) {
  const CheckedIndices* c = find_checked(p, n, hi, neg);
  if (c && g.capturing && !c->recorded) note_need(fn, p, n, hi, neg);
  return c != nullptr;
}

// A change a recorded op makes to the entries: forget [p, p + bytes), or remember that the
// n = bytes / 4 int32 at p are in [0, hi) (or negative when neg).
struct CheckEffect {
  const void* p;
  uint64_t bytes;
  int64_t hi;
  bool neg;
  bool remember;
};
std::vector<CheckEffect> g_effects;  // the effects of the graph being recorded

inline void remember_checked(const int32_t* p, int64_t n, int64_t hi, bool neg) {
  if (g.capturing) g_effects.push_back(CheckEffect{p, (uint64_t)n * 4, hi, neg, true});
  g_checked[g_checked_next] = CheckedIndices{p, n, hi, neg, g.capturing};
  g_checked_next = (g_checked_next + 1) % kCheckedSlots;
}

// Records the range of `bytes` bytes just uploaded from `host` to `dst`, read as int32.
inline void remember_uploaded(const void* dst, const void* host, uint64_t bytes) {
  if (bytes % 4 != 0 || bytes > kSummaryBytes || reinterpret_cast<uintptr_t>(dst) % 4 != 0) {
    return;
  }
  const int64_t n = (int64_t)(bytes / 4);
  int32_t lo = INT32_MAX, top = INT32_MIN;
  for (int64_t i = 0; i < n; i++) {
    int32_t v;
    memcpy(&v, static_cast<const unsigned char*>(host) + 4 * i, 4);
    lo = v < lo ? v : lo;
    top = v > top ? v : top;
  }
  remember_checked(static_cast<const int32_t*>(dst), n, top < 0 ? 0 : (int64_t)top + 1, lo < 0);
}

// Whether [a, a + abytes) and [b, b + bbytes) share a byte.
inline bool overlaps(const void* a, uint64_t abytes, const void* b, uint64_t bbytes) {
  const uintptr_t x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return x < y + bbytes && y < x + abytes;
}

// Forgets the checked arrays that overlap [p, p + bytes) (bytes 0: everything).
inline void forget_checked(const void* p, uint64_t bytes) {
  if (g.capturing) g_effects.push_back(CheckEffect{p, bytes, 0, false, false});
  for (CheckedIndices& c : g_checked) {
    if (c.p && (bytes == 0 || overlaps(p, bytes, c.p, (uint64_t)c.n * 4))) c = CheckedIndices{};
  }
}

// Runs up to two index checks (slots 0 and 1; pass idx = nullptr to skip one) and returns the
// first bad positions in bad[0..1] (kNoBad when none). Synchronises the stream, unless every
// array was checked before (g_checked).
inline int find_bad_indices(const char* fn, const int32_t* idx0, int64_t hi0, bool neg0,
                            const int32_t* idx1, int64_t hi1, bool neg1, int n, int bad[2]) {
  bad[0] = bad[1] = kNoBad;
  if (idx0 && indices_checked(fn, idx0, n, hi0, neg0)) idx0 = nullptr;
  if (idx1 && indices_checked(fn, idx1, n, hi1, neg1)) idx1 = nullptr;
  if (!idx0 && !idx1) return 0;
  if (g.capturing) {
    return fail("%s: the %s at %p are not known to be in range, and checking them on the device "
                "would wait for the GPU inside a graph capture; upload them with le_upload, or "
                "run the op once, before le_graph_begin",
                fn, idx0 ? "ids" : "positions or targets", (const void*)(idx0 ? idx0 : idx1));
  }
  const unsigned blocks = grid_for(n, 256);
  LAUNCH(fill_int_kernel, 1, 32, 0)(g.dflag, 4, kNoBad);
  if (idx0) LAUNCH(first_bad_index_kernel, blocks, 256, 0)(g.dflag, 0, idx0, n, hi0, neg0);
  if (idx1) LAUNCH(first_bad_index_kernel, blocks, 256, 0)(g.dflag, 1, idx1, n, hi1, neg1);
  CUDA_TRY(fn, cudaGetLastError());
  CUDA_TRY(fn, cudaMemcpyAsync(g.hflag, g.dflag, 2 * sizeof(int), cudaMemcpyDeviceToHost,
                               g.stream));
  CUDA_TRY(fn, cudaStreamSynchronize(g.stream));
  bad[0] = g.hflag[0];
  bad[1] = g.hflag[1];
  if (idx0 && bad[0] == kNoBad) remember_checked(idx0, n, hi0, neg0);
  if (idx1 && bad[1] == kNoBad) remember_checked(idx1, n, hi1, neg1);
  return 0;
}

// Reads one int32 from device memory (for error messages).
inline int32_t read_int(const int32_t* p) {
  if (cudaMemcpyAsync(g.hflag + 2, p, sizeof(int32_t), cudaMemcpyDeviceToHost, g.stream) !=
          cudaSuccess ||
      cudaStreamSynchronize(g.stream) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return g.hflag[2];
}

// ============================================================================================
// Deterministic reductions. The tree is fixed by blockDim, never by timing, so a sum gives
// the same bits on every run.
// ============================================================================================

__device__ inline double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;  // valid in lane 0
}

__device__ inline float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;  // valid in every lane
}

// Block-wide sum, returned to every thread. shm: at least 33 doubles.
__device__ inline double block_sum(double v, double* shm) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  if (lane == 0) shm[w] = v;
  __syncthreads();
  if (w == 0) {
    double t = lane < nw ? shm[lane] : 0.0;
    t = warp_sum(t);
    if (lane == 0) shm[32] = t;
  }
  __syncthreads();
  const double r = shm[32];
  __syncthreads();  // shm may be reused right after
  return r;
}

// Block-wide max (NaN ignored, as fmaxf does), returned to every thread. shm: 33 floats.
__device__ inline float block_max(float v, float* shm) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  if (lane == 0) shm[w] = v;
  __syncthreads();
  if (w == 0) {
    float t = lane < nw ? shm[lane] : -INFINITY;
    t = warp_max(t);
    if (lane == 0) shm[32] = t;
  }
  __syncthreads();
  const float r = shm[32];
  __syncthreads();
  return r;
}

// Rows per chunk of a column reduction: partial sums over fixed chunks of rows, combined in
// order by a second kernel. The chunking depends only on N, so results are deterministic.
// 128 rows, doubled until the chunks fit in a grid's y dimension.
inline int col_chunk_rows(int N) {
  int r = 128;
  while ((N + r - 1) / r > 65535) r *= 2;
  return r;
}

// Rows (or chunks) whose loads a column-sum thread issues before adding them, in order: the
// sums are bound by load latency. A column sum's grid is small (a [5,056, 768] gradient gives 240
// blocks of 128 threads, under two a multiprocessor), so what a thread has in flight is what the
// GPU has: 32 loads a thread, a 128-row chunk in four round trips (the kernels stay under 100
// registers, without spills).
constexpr int kColU = 32;

// sum_{k = k0 .. k1-1} value(load(k)) in double, k in order, kColU loads (of type T) in
// flight; visit(k, value) is called for each k as it is added (after the group's loads are
// issued, so that a value formed from what was loaded does not hold the next load back).
template <class T, class Load, class Visit, class Value>
__device__ inline double sum_in_order(int k0, int k1, Load load, Visit visit, Value value) {
  double s = 0;
  for (int kb = k0; kb < k1; kb += kColU) {
    T v[kColU];
#pragma unroll
    for (int u = 0; u < kColU; u++) v[u] = kb + u < k1 ? load(kb + u) : T{};
#pragma unroll
    for (int u = 0; u < kColU; u++) {
      if (kb + u < k1) {
        const auto y = value(v[u]);
        visit(kb + u, y);
        s += y;
      }
    }
  }
  return s;
}
template <class T, class Load, class Visit>
__device__ inline double sum_in_order(int k0, int k1, Load load, Visit visit) {
  return sum_in_order<T>(k0, k1, load, visit, [](T v) { return v; });
}
template <class T, class Load>
__device__ inline double sum_in_order(int k0, int k1, Load load) {
  return sum_in_order<T>(k0, k1, load, [](int, T) {});
}

// out[c] += (float) sum_k part[k*C + c], k in order.
__global__ void colsum_finish_kernel(float* out, const double* part, int chunks, int C) {
  pdl_begin();
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const double s =
      sum_in_order<double>(0, chunks, [&](int k) { return part[(int64_t)k * C + c]; });
  out[c] += (float)s;
}

}  // namespace le
