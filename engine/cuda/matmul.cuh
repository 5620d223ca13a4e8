// matmul.cuh: the linear layer through cuBLAS (cublasLtMatmul, each shape's algorithm chosen
// by timing; cublasGemmEx without it), forward and backward; bf16 forwards of 1 to 8 rows by a
// kernel of our own (gemv_bf16_kernel, near the end), and of 9 to 128 rows by another
// (skinny.cuh) where timing says it beats cuBLAS (own_fwd).
//
//   forward   out[N,Cout]   = inp[N,Cin] W[Cout,Cin]^T + bias
//   backward  dinp[N,Cin]  += dout[N,Cout] W
//             dw[Cout,Cin] += dout^T inp
//             dbias[Cout]  += sum_n dout[n]       (double, two deterministic stages; in bf16
//                                                 mode the first also rounds dout for the GEMMs)
//
// cuBLAS is column-major; a row-major [R, K] matrix is the column-major [K, R] matrix, its
// transpose. So out^T = W inp^T is gemm(T, N) with m = Cout, n = N, k = Cin; dinp^T = W^T
// dout^T is gemm(N, N) with m = Cin, n = N, k = Cout; dw^T = inp^T dout is gemm(N, T) with
// m = Cin, n = Cout, k = N. The backward GEMMs accumulate with beta = 1, as the ABI asks.
//
// Precision (le_set_precision), the only place where the modes differ:
//   0  fp32 inputs, fp32 products and sums (CUBLAS_COMPUTE_32F);
//   1  TF32 tensor cores (CUBLAS_COMPUTE_32F_FAST_TF32). Each operand is first rounded to
//      the nearest TF32 value (10 mantissa bits) into scratch, so the tensor cores' own
//      conversion, which may truncate, has nothing left to drop: errors are unbiased;
//   2  bf16: each operand is rounded to the nearest bf16 into scratch and multiplied with
//      fp32 accumulation (A, B CUDA_R_16BF, C CUDA_R_32F, CUBLAS_COMPUTE_32F). Outputs,
//      the bias and every accumulated gradient stay fp32.
// The weights in engine memory stay fp32 in every mode (they are the optimiser's master
// copy); only these per-call operand copies are reduced. A reduced copy's rows are padded to
// 16 bytes (8 bf16 or 4 TF32 values; the padding is never read), so that every row starts
// aligned, as the tensor-core kernels want: the LM head's gradient has rows of 50,260 values,
// which would otherwise send both backward GEMMs of the head to slower kernels. A weight range declared with
// le_keep_bf16 is not rounded per call: its kept bf16 copy is read instead (weights.cuh); nor is
// the output of the op called just before when that op wrote its own copy (a normalisation,
// attention or activation: common.cuh's produced operands).
//
// Determinism: cuBLAS gives bit-identical results for the same shapes, mode, algorithm and GPU
// when one stream and a fixed workspace are used (both set at le_init; a shape's algorithm is
// fixed once chosen, below); dbias uses fixed chunks.
#pragma once

#include <cuda_bf16.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common.cuh"
#include "elementwise.cuh"
#include "skinny.cuh"
#include "weights.cuh"

namespace le {

// Round to the nearest TF32 (ties away from zero, as cvt.rna.tf32.f32 does): keep 10
// mantissa bits. Inf and NaN pass unchanged.
__device__ inline float round_tf32(float x) {
  uint32_t u = __float_as_uint(x);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  return __uint_as_float(u);
}

__global__ void to_tf32_kernel(float* out, const float* in, int64_t n) {
  pdl_begin();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i] = round_tf32(in[i]);
}

// out[n, o] += bias[o]
__global__ void add_bias_kernel(float* out, const float* bias, int64_t N, int Cout) {
  pdl_begin();
  const int64_t total = N * Cout;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total;
       t += (int64_t)gridDim.x * blockDim.x)
    out[t] += bias[t % Cout];
}

// Stage 1 of dbias: grid (ceil(C/128), chunks); part [chunks, C]. With x16 (bf16 mode, when
// the backward's GEMMs need dout rounded and no op has made that copy), the same pass over x
// also writes the bf16 copy, rows ld16 apart: one read of dout instead of two, and the
// rounding kernel's launch saved. kGelu (a deferred GELU backward, common.cuh): the values
// summed and rounded are that op's, 0 + gelu'(gelu_in) x, as gelu_bwd_kernel forms them
// (gelu_bwd_of); gelu_in is fp32, or bf16 storage (T = __nv_bfloat16).
template <bool kGelu, class T = float>
__global__ void colsum_part_kernel(double* part, const float* x, const T* gelu_in, int N,
                                   int C, int chunk, __nv_bfloat16* x16, int ld16) {
  pdl_begin();
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int n0 = blockIdx.y * chunk, n1 = min(N, n0 + chunk);
  const auto round = [&](int n, float v) {
    if (x16) x16[(int64_t)n * ld16 + c] = __float2bfloat16_rn(v);
  };
  double s;
  if constexpr (kGelu) {  // both loads of a group in flight before any gelu' is formed
    struct Pair {
      float h, d;
    };
    s = sum_in_order<Pair>(
        n0, n1,
        [&](int n) {
          const int64_t i = (int64_t)n * C + c;
          return Pair{to_f32(gelu_in[i]), x[i]};
        },
        round, [](Pair p) { return gelu_bwd_of(p.h, p.d, 0.f); });
  } else {
    s = sum_in_order<float>(n0, n1, [&](int n) { return x[(int64_t)n * C + c]; }, round);
  }
  part[(int64_t)blockIdx.y * C + c] = s;
}

// The rounding kernels into a copy whose rows are ld apart (ld > cols; else the flat ones).
__global__ void to_tf32_rows_kernel(float* out, const float* in, int64_t rows, int cols,
                                    int ld) {
  pdl_begin();
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i / cols * ld + i % cols] = round_tf32(in[i]);
}

__global__ void to_bf16_rows_kernel(__nv_bfloat16* out, const float* in, int64_t rows, int cols,
                                    int ld) {
  pdl_begin();
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i / cols * ld + i % cols] = __float2bfloat16_rn(in[i]);
}

// An operand ready for cublasGemmEx in the current precision: the fp32 buffer itself
// (mode 0), a kept bf16 weight copy, or a reduced copy in scratch slot `slot`; ld is the
// distance between its rows, in elements.
struct Operand {
  const void* p;
  cudaDataType_t type;
  int ld;
};

// x is [rows, cols] with rows cols apart. With `defer`, a bf16 rounding pass is not launched:
// *defer gets the scratch copy *op points at, for the caller's own kernel to write (nullptr
// when a kept or produced copy serves, or outside bf16 mode).
inline int prepare(const char* fn, DevScratch& slot, const float* x, int64_t rows, int cols,
                   Operand* op, __nv_bfloat16** defer = nullptr) {
  if (defer) *defer = nullptr;
  const int64_t n = rows * cols;
  if (g.precision == 0) {
    *op = {x, CUDA_R_32F, cols};
    return 0;
  }
  const int ld = padded_ld(cols);
  const unsigned blocks = grid_for(n, 256);
  if (g.precision == 1) {
    float* dst = (float*)slot.get(fn, (size_t)(rows * ld) * sizeof(float));
    if (!dst) return 1;
    if (ld == cols) {
      LAUNCH(to_tf32_kernel, blocks, 256, 0)(dst, x, n);
    } else {
      LAUNCH(to_tf32_rows_kernel, blocks, 256, 0)(dst, x, rows, cols, ld);
    }
    *op = {dst, CUDA_R_32F, ld};
    return 0;
  }
  const __nv_bfloat16* kept;
  TRY(kept_bf16(fn, x, n, &kept));  // a weight with a bf16 copy (weights.cuh)
  if (kept) {
    *op = {kept, CUDA_R_16BF, cols};
    return 0;
  }
  int pld = 0;
  if (const __nv_bfloat16* made = produced_bf16(x, rows, cols, &pld)) {
    *op = {made, CUDA_R_16BF, pld};  // rounded by the op that wrote x (common.cuh)
    return 0;
  }
  const ProducedCopy* c = operand_only_copy();
  if (c && x >= c->src && x < c->src + (c->cols ? c->rows * c->cols : c->rows)) {
    return fail("%s: its operand [%lld, %d] is not the bf16 copy that %s made of [%lld, %d] "
                "with only that copy written (le_operand_only), so it has no fp32 values to "
                "round; read the whole output, or do not give the hint",
                fn, (long long)rows, cols, c->by, (long long)c->rows, c->cols);
  }
  __nv_bfloat16* dst =
      (__nv_bfloat16*)slot.get(fn, (size_t)(rows * ld) * sizeof(__nv_bfloat16));
  if (!dst) return 1;
  *op = {dst, CUDA_R_16BF, ld};
  if (defer) {
    *defer = dst;
    return 0;
  }
  if (ld == cols) {
    LAUNCH(to_bf16_kernel, blocks, 256, 0)(dst, x, n);
  } else {
    LAUNCH(to_bf16_rows_kernel, blocks, 256, 0)(dst, x, rows, cols, ld);
  }
  return 0;
}

// Column-major C[m,n] = A op B (+ C when accumulate), through cublasGemmEx: the path without
// cuBLASLt (below).
inline int gemm_ex(const char* fn, int transa, int transb, int m, int n, int k, Operand A,
                   Operand B, float* C, int ldc, bool accumulate) {
  const int lda = A.ld, ldb = B.ld;
  const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
  const int compute = g.precision == 1 ? cublas::kCompute32FFastTF32 : cublas::kCompute32F;
  const cublas::Status s =
      g.blas.gemm_ex(g.handle, transa, transb, m, n, k, &alpha, A.p, A.type, lda, B.p, B.type,
                     ldb, &beta, C, CUDA_R_32F, ldc, compute, cublas::kGemmDefault);
  if (s != cublas::kSuccess) {
    return fail("%s: cublasGemmEx (m=%d, n=%d, k=%d, precision mode %d) failed: %s%s%s", fn, m,
                n, k, g.precision, cublas::status_name(s),
                g.blas.status_string ? ": " : "",
                g.blas.status_string ? g.blas.status_string(s) : "");
  }
  return 0;
}

// ---- GEMMs through cuBLASLt, each shape's algorithm chosen by timing -------------------
//
// Every GEMM goes through cublasLtMatmul when cuBLASLt's matmul entry points loaded (and
// LOTUS_CUBLASLT is not 0). A forward with a bias adds it in the epilogue
// (CUBLASLT_EPILOGUE_BIAS) instead of add_bias_kernel re-reading and rewriting [N, Cout]; the
// others use the default epilogue, with beta = 1 in place (C is D) where they accumulate. The
// GEMM may sum in another order than cublasGemmEx's kernel, so results agree with that path to
// the precision's rounding, not to the bit.
//
// Descriptors, layouts and the algorithm are kept per shape, precision, epilogue and operand
// alignment (LtPlan; a row range of a buffer need not start 256 bytes in, and the heuristic is
// told each operand's real alignment), so a call after the first is the matmul alone: the
// bias pointer is the only attribute set per call.
//
// The algorithm. cublasLtMatmulAlgoGetHeuristic ranks up to g.tune_candidates algorithms
// (LOTUS_GEMM_TUNE, default 8) for the key. Its first is a model's guess, and at the shapes
// here (a few thousand rows of 768 to 3,072 channels, or the 79 rows of a batch-1 loop pass,
// where split-K decides the speed) a guess can miss by tens of percent. So at the key's first
// call outside a graph recording, each candidate runs once and is then timed over kTuneRuns
// calls between two events (queued behind a short hold of the stream, so that they run back to
// back), and the fastest is kept for the rest of the process, unless it beats the heuristic's
// first by under kTuneMargin (timing noise would otherwise choose among equals at random). A
// GEMM that accumulates is timed into a zeroed temporary output, so that its real output is
// written once, by the real call: a transient allocation of up to kTuneScratchMax bytes at the
// key's first call. Over that (the tied LM head's weight gradient), or when the allocation
// fails, it keeps the heuristic's first, as does a key met first while a graph is being
// recorded (a timing waits for the GPU; callers run a sequence once before recording it,
// model/graphs.ts). A key none of whose candidates runs takes cublasGemmEx for good.
//
// Determinism: an algorithm gives the same bits every call, and a key's choice is fixed for
// the process once made (kept even when its plan is dropped). Two processes may choose
// differently where candidates time within noise of each other; LOTUS_GEMM_TUNE=1 keeps the
// heuristic's first choice, the same in every process. le_device_info reports the keys timed
// (gemmTuneShapes), those where another algorithm won (gemmTuneChanged), and one call of every
// timed key with the heuristic's choice and with the kept one, summed (gemmTuneHeuristicUs,
// gemmTuneChosenUs).
//
// Without cuBLASLt, with LOTUS_CUBLASLT=0, when no algorithm fits a key, or for a bias off a
// 16-byte boundary (no preference states the bias's alignment), cublasGemmEx and the bias
// kernel run as before.

constexpr int kTuneRuns = 5;
constexpr float kTuneMargin = 0.05f;
constexpr size_t kTuneScratchMax = 64u << 20;
constexpr size_t kMaxLtPlans = 1024;

struct LtKey {
  int transa, transb, m, n, k, atype, lda, btype, ldb, ldc, compute, bias, accumulate;
  int dtype;          // D's (and C's) type: CUDA_R_32F, or CUDA_R_16BF for bf16 storage
  unsigned align[3];  // A, B, D (C is D)
  bool operator==(const LtKey& o) const { return memcmp(this, &o, sizeof o) == 0; }
};
struct LtKeyHash {
  size_t operator()(const LtKey& k) const {
    return std::hash<std::string_view>()(std::string_view((const char*)&k, sizeof k));
  }
};

struct LtPlan {
  cublas::LtDesc desc = nullptr;
  cublas::LtLayout a = nullptr, b = nullptr, d = nullptr;
  // The heuristic's candidates, best first, while there are several to time; empty once the
  // algorithm is final (timed, the only one, or chosen earlier in the process).
  std::vector<cublas::LtAlgo> candidates;
  cublas::LtAlgo algo{};
  bool ok = false;  // false: no algorithm for this key; cublasGemmEx and the bias kernel
};

std::unordered_map<LtKey, LtPlan, LtKeyHash> g_lt_plans;
// Each key's final choice, kept when the plans are dropped (kMaxLtPlans), so that a key never
// changes algorithm within a process: the algorithm, or ok = false when none of its candidates
// ran (cublasGemmEx serves it). Cleared with the cuBLASLt handle (release_lt).
struct LtChoice {
  bool ok;
  cublas::LtAlgo algo;
};
std::unordered_map<LtKey, LtChoice, LtKeyHash> g_lt_chosen;

struct TuneStats {
  int shapes = 0, changed = 0;
  double heuristic_us = 0, chosen_us = 0;
} g_tune;

inline void drop_lt_plan(LtPlan& p) {
  if (p.desc) g.blas.lt_desc_destroy(p.desc);
  for (cublas::LtLayout l : {p.a, p.b, p.d}) {
    if (l) g.blas.lt_layout_destroy(l);
  }
  p = LtPlan{};
}

inline void drop_lt_plans() {
  for (auto& kv : g_lt_plans) drop_lt_plan(kv.second);
  g_lt_plans.clear();
}

// Drops every plan, every choice and the cuBLASLt handle: GEMMs go back to cublasGemmEx.
inline void release_lt() {
  drop_lt_plans();
  g_lt_chosen.clear();
  g_tune = TuneStats{};
  if (g.lt) g.blas.lt_destroy(g.lt);
  g.lt = nullptr;
}

inline unsigned alignment_of(const void* p) {
  const uintptr_t u = (uintptr_t)p;
  unsigned a = 256;
  while (a > 1 && u % a) a /= 2;
  return a;
}

// Builds the plan for `key`: descriptors, layouts, and the heuristic's candidates (ok = false
// when it has none), or the algorithm chosen for the key earlier in the process.
inline void build_lt_plan(const LtKey& k, LtPlan& p) {
  using namespace cublas;
  bool ok = g.blas.lt_desc_create(&p.desc, k.compute, CUDA_R_32F) == kSuccess;
  const int32_t ta = k.transa, tb = k.transb;
  const uint32_t epi = k.bias ? kLtEpilogueBias : kLtEpilogueDefault;
  ok = ok && g.blas.lt_desc_set(p.desc, kLtDescTransA, &ta, sizeof ta) == kSuccess;
  ok = ok && g.blas.lt_desc_set(p.desc, kLtDescTransB, &tb, sizeof tb) == kSuccess;
  ok = ok && g.blas.lt_desc_set(p.desc, kLtDescEpilogue, &epi, sizeof epi) == kSuccess;
  if (k.bias && k.dtype != CUDA_R_32F) {  // the bias is fp32 whatever D is (default: D's type)
    const int32_t bt = CUDA_R_32F;
    ok = ok && g.blas.lt_desc_set(p.desc, kLtDescBiasDataType, &bt, sizeof bt) == kSuccess;
  }
  // Stored shapes (column-major): op(A) is [m, k], so A is [m, k] (N) or [k, m] (T).
  ok = ok && g.blas.lt_layout_create(&p.a, (cudaDataType_t)k.atype, k.transa ? k.k : k.m,
                                     k.transa ? k.m : k.k, k.lda) == kSuccess;
  ok = ok && g.blas.lt_layout_create(&p.b, (cudaDataType_t)k.btype, k.transb ? k.n : k.k,
                                     k.transb ? k.k : k.n, k.ldb) == kSuccess;
  ok = ok &&
       g.blas.lt_layout_create(&p.d, (cudaDataType_t)k.dtype, k.m, k.n, k.ldc) == kSuccess;
  if (!ok) return;
  const auto known = g_lt_chosen.find(k);
  if (known != g_lt_chosen.end()) {
    p.ok = known->second.ok;
    p.algo = known->second.algo;
    return;
  }
  LtPref pref = nullptr;
  ok = g.blas.lt_pref_create(&pref) == kSuccess;
  const uint64_t ws = kWorkspaceBytes;
  ok = ok && g.blas.lt_pref_set(pref, kLtPrefMaxWorkspace, &ws, sizeof ws) == kSuccess;
  // C is D: both get D's alignment.
  const int attrs[4] = {kLtPrefMinAlignA, kLtPrefMinAlignB, kLtPrefMinAlignC, kLtPrefMinAlignD};
  const uint32_t aligns[4] = {k.align[0], k.align[1], k.align[2], k.align[2]};
  for (int i = 0; i < 4; i++) {
    ok = ok && g.blas.lt_pref_set(pref, attrs[i], &aligns[i], sizeof aligns[i]) == kSuccess;
  }
  std::vector<LtHeuristic> h(g.tune_candidates);
  int found = 0;
  ok = ok && g.blas.lt_heuristic(g.lt, p.desc, p.a, p.b, p.d, p.d, pref, g.tune_candidates,
                                 h.data(), &found) == kSuccess;
  if (pref) g.blas.lt_pref_destroy(pref);
  for (int i = 0; ok && i < found && i < g.tune_candidates; i++) {
    if (h[i].state == kSuccess && h[i].workspace_size <= kWorkspaceBytes) {
      p.candidates.push_back(h[i].algo);
    }
  }
  p.ok = !p.candidates.empty();
  if (p.ok) p.algo = p.candidates[0];
  if (p.candidates.size() == 1) {
    p.candidates.clear();
    g_lt_chosen[k] = LtChoice{true, p.algo};
  }
}

// The GEMM of `plan` with algorithm `algo` into C (beta 1: C += ...).
inline cublas::Status run_lt(const LtPlan& plan, const cublas::LtAlgo& algo, Operand A,
                             Operand B, void* C, bool accumulate) {
  const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
  return g.blas.lt_matmul(g.lt, plan.desc, &alpha, A.p, plan.a, B.p, plan.b, &beta, C, plan.d,
                          C, plan.d, &algo, g.workspace, kWorkspaceBytes, g.stream);
}

// Holds the stream for `ns` nanoseconds of the GPU's global timer (one thread spinning), so that
// the calls queued behind it run back to back once it ends, however long the host takes to
// queue them. The emulation runs queued work only when the host waits, so it has nothing to do.
__global__ void hold_stream_kernel(unsigned ns) {
  pdl_begin();
#ifndef LE_HOST_EMULATION
  uint64_t t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    __nanosleep(1000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
#else
  (void)ns;
#endif
}
constexpr unsigned kTuneHoldNs = 200000;

// Microseconds a call of run() (0: succeeded) takes, over kTuneRuns calls queued behind
// hold_stream_kernel: a call of a few microseconds (batch 1) would otherwise be timed at the
// rate the host issues it, not at the rate the GPU runs it. -1 when a call or an event fails.
template <class F>
inline double time_calls(const F& run, cudaEvent_t ev[2]) {
  LAUNCH(hold_stream_kernel, 1, 1, 0)(kTuneHoldNs);
  if (cudaEventRecord(ev[0], g.stream) != cudaSuccess) return -1;
  for (int r = 0; r < kTuneRuns; r++) {
    if (run() != 0) return -1;
  }
  float ms = 0;
  if (cudaEventRecord(ev[1], g.stream) != cudaSuccess ||
      cudaEventSynchronize(ev[1]) != cudaSuccess ||
      cudaEventElapsedTime(&ms, ev[0], ev[1]) != cudaSuccess) {
    return -1;
  }
  return 1000.0 * ms / kTuneRuns;
}

// Microseconds a call of `algo`, after one untimed (time_calls); a negative value when the
// algorithm fails (it is then not a candidate).
inline double time_lt(const LtPlan& plan, const cublas::LtAlgo& algo, Operand A, Operand B,
                      void* C, bool accumulate, cudaEvent_t ev[2]) {
  const auto run = [&] { return run_lt(plan, algo, A, B, C, accumulate) != cublas::kSuccess; };
  return run() ? -1 : time_calls(run, ev);
}

// Chooses the plan's algorithm for good: by timing its candidates on these operands (see
// above), or, while a graph is being recorded, the heuristic's first. Returns 1 with a message
// when the GPU reports a fault. With a launch error pending from the op's earlier kernels it
// chooses nothing yet (op_done reports that error; a later call times the key).
inline int tune_lt(const char* fn, const LtKey& key, LtPlan& plan, Operand A, Operand B,
                   void* C, bool accumulate) {
  if (cudaPeekAtLastError() != cudaSuccess) return 0;
  // Where the candidates write: C itself, or for an accumulating GEMM a zeroed temporary;
  // nowhere (untimed) while recording or when the temporary is too large or not allocated.
  const size_t out_bytes = (size_t)key.ldc * key.n * (key.dtype == CUDA_R_32F ? 4 : 2);
  void* out = nullptr;
  void* temp = nullptr;
  if (!g.capturing) {
    if (!accumulate) {
      out = C;
    } else if (out_bytes <= kTuneScratchMax && cudaMalloc(&temp, out_bytes) == cudaSuccess &&
               cudaMemsetAsync(temp, 0, out_bytes, g.stream) == cudaSuccess) {
      out = temp;
    }
  }
  cudaEvent_t ev[2] = {nullptr, nullptr};
  bool timed = false;
  std::vector<double> us;
  if (out && cudaEventCreate(&ev[0]) == cudaSuccess && cudaEventCreate(&ev[1]) == cudaSuccess) {
    for (const cublas::LtAlgo& a : plan.candidates) {
      us.push_back(time_lt(plan, a, A, B, out, accumulate, ev));
    }
    timed = true;
  }
  for (cudaEvent_t e : ev) {
    if (e) cudaEventDestroy(e);
  }
  // Candidates still queued (a timing that failed part-way) finish before temp goes: the stream
  // is waited for first (cudaFree may wait, but the runtime does not promise it).
  if (temp) {
    (void)cudaStreamSynchronize(g.stream);
    cudaFree(temp);
  }
  // Only the calls above can have left an error (none was pending): a candidate that failed,
  // a failed allocation. A fault is sticky and reported.
  const cudaError_t e = cudaGetLastError();
  if (is_sticky(e)) return cuda_fail(fn, "timing the GEMM's candidate algorithms", e);
  size_t best = 0;
  if (timed) {
    // The fastest that ran; the heuristic's first unless the fastest beats it by kTuneMargin.
    size_t fastest = 0;
    for (size_t i = 1; i < us.size(); i++) {
      if (us[i] >= 0 && (us[fastest] < 0 || us[i] < us[fastest])) fastest = i;
    }
    if (us[fastest] < 0) {
      plan.ok = false;  // no candidate ran: cublasGemmEx, for good
      plan.candidates.clear();
      g_lt_chosen[key] = LtChoice{false, {}};
      return 0;
    }
    best = us[0] < 0 || us[fastest] < (1.0 - kTuneMargin) * us[0] ? fastest : 0;
    if (us[0] >= 0) {
      g_tune.shapes++;
      g_tune.changed += best != 0;
      g_tune.heuristic_us += us[0];
      g_tune.chosen_us += us[best];
    }
  }
  plan.algo = plan.candidates[best];
  plan.candidates.clear();
  g_lt_chosen[key] = LtChoice{true, plan.algo};
  return 0;
}

// Column-major C[m,n] = A op B (+ bias per row of C) (+ C when accumulate) through
// cublasLtMatmul. Returns 0 done, 1 failed (message set), -1 not possible here: the caller
// runs cublasGemmEx (and the bias kernel). C is fp32, or with ctype CUDA_R_16BF bf16 storage
// (the fp32 result rounded as it is written; never accumulated).
inline int gemm_lt(const char* fn, int transa, int transb, int m, int n, int k, Operand A,
                   Operand B, void* C, int ldc, const float* bias, bool accumulate,
                   cudaDataType_t ctype = CUDA_R_32F) {
  // The epilogue reads the bias with vector loads on some kernels, and no preference says how
  // aligned the bias is: one off a 16-byte boundary takes the kernel path.
  if (!g.lt || (bias && alignment_of(bias) < 16)) return -1;
  const int compute = g.precision == 1 ? cublas::kCompute32FFastTF32 : cublas::kCompute32F;
  const LtKey key{transa, transb, m, n, k, (int)A.type, A.ld, (int)B.type, B.ld, ldc, compute,
                  bias != nullptr, accumulate, (int)ctype, {alignment_of(A.p), alignment_of(B.p),
                  alignment_of(C)}};
  auto it = g_lt_plans.find(key);
  if (it == g_lt_plans.end()) {
    if (g_lt_plans.size() >= kMaxLtPlans) drop_lt_plans();  // the choices stay
    it = g_lt_plans.emplace(key, LtPlan{}).first;
    build_lt_plan(key, it->second);
  }
  LtPlan& plan = it->second;
  if (!plan.ok) return -1;
  cublas::Status s = cublas::kSuccess;
  if (bias) {
    const void* bp = bias;
    s = g.blas.lt_desc_set(plan.desc, cublas::kLtDescBiasPointer, &bp, sizeof bp);
  }
  if (s == cublas::kSuccess && !plan.candidates.empty()) {
    TRY(tune_lt(fn, key, plan, A, B, C, accumulate));
    if (!plan.ok) return -1;
  }
  if (s == cublas::kSuccess) s = run_lt(plan, plan.algo, A, B, C, accumulate);
  if (s != cublas::kSuccess) {
    return fail("%s: cublasLtMatmul%s (m=%d, n=%d, k=%d, precision mode %d) failed: %s%s%s; "
                "LOTUS_CUBLASLT=0 uses cublasGemmEx instead",
                fn, bias ? " with the bias epilogue" : "", m, n, k, g.precision,
                cublas::status_name(s), g.blas.status_string ? ": " : "",
                g.blas.status_string ? g.blas.status_string(s) : "");
  }
  return 0;
}

// C = A op B (+ C when accumulate) (+ bias per row of C), through cuBLASLt where it can,
// else cublasGemmEx and the bias kernel.
inline int gemm(const char* fn, int transa, int transb, int m, int n, int k, Operand A,
                Operand B, float* C, int ldc, bool accumulate, const float* bias = nullptr) {
  const int r = gemm_lt(fn, transa, transb, m, n, k, A, B, C, ldc, bias, accumulate);
  if (r >= 0) return r;
  TRY(gemm_ex(fn, transa, transb, m, n, k, A, B, C, ldc, accumulate));
  if (bias) {  // C is [n rows of m]: the bias is per row of the column-major C
    LAUNCH(add_bias_kernel, grid_for((int64_t)n * m, 256), 256, 0)(C, bias, n, m);
  }
  return 0;
}

// ---- Forwards of a few rows in bf16: one block an output column group ---------------------
//
// A batch-1 answer token multiplies one row by each weight (a generation of B questions, B
// rows). cuBLAS's GEMM kernels tile the output in blocks of 64 rows or more, so such a call
// runs a few dozen thread blocks, each streaming a large slice of the weight with its other
// rows idle; the weight's bytes (3.5 MB for GPT-2's qkv, 77 MB for the LM head) are the whole
// cost, and few SMs read them. Here a block of kGemvThreads threads owns kGemvCols output
// columns, that is kGemvCols whole weight rows: its threads read them in 16-byte groups of 8
// values (thread t the groups t, t + kGemvThreads, ...), with the matching 8 inputs of each
// row, so a call runs Cout / kGemvCols blocks over every SM with their loads in flight. The
// operands are the bf16 GEMM's: the weight's kept bf16 copy (weights.cuh) and the input
// rounded to bf16 (or read from the copy its producer made), products summed in fp32. Each
// output is summed in a fixed order (a thread's groups in turn, a shuffle tree over the warp,
// the warps in turn), so results are deterministic, but in another order than cuBLAS's: the
// two agree to the rounding of an fp32 sum, not to the bit.
//
// Used for 1 to kGemvRows rows in bf16 mode when the weight has a kept copy and every row
// starts 16 bytes aligned (Cin a multiple of 8, aligned bases); otherwise, and with
// LOTUS_GEMV=0 (g.gemv), cuBLAS runs as before.
constexpr int kGemvRows = 8, kGemvCols = 4, kGemvThreads = 128;
static_assert(kNormDeferMaxRows == kGemvRows, "a deferred norm's rows are the gemv kernel's");

__device__ inline float bf16_round(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

// 8 consecutive inputs as the bf16 GEMM sees them: fp32 rounded to bf16, or bf16 already.
// kGelu: p is a deferred GELU's input (common.cuh's DeferredGeluFwd), whose output is formed
// (ld8_f32), as GELU's kernel writes its copy.
template <bool kGelu = false>
__device__ inline void load8(const float* p, float f[8]) {
  ld8_f32<kGelu>(p, f);
  for (int i = 0; i < 8; i++) f[i] = bf16_round(f[i]);
}
__device__ inline void load8(const __nv_bfloat16* p, float f[8]) {
  const uint4 q = *(const uint4*)p;
  const uint32_t w[4] = {q.x, q.y, q.z, q.w};
  for (int i = 0; i < 4; i++) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

// A deferred norm forward as the gemv kernel forms its output (common.cuh's DeferredNormFwd):
// x = a (+ r) [N, Cin], normalised with w and b (LayerNorm) or w and eps (RMSNorm); block 0
// alone writes resid (the residual form's a + r), mean and rstd (each nullptr: not written).
struct GemvNorm {
  const float* a = nullptr;
  const float* r = nullptr;
  const float* w = nullptr;
  const float* b = nullptr;
  float* resid = nullptr;
  float* mean = nullptr;
  float* rstd = nullptr;
  float eps = 0.f;
};

// The gemv kernel's kNorm: the deferred norm it forms, if any.
constexpr int kGemvNoNorm = 0, kGemvLayerNorm = 1, kGemvRmsNorm = 2;

// 8 consecutive values of a deferred norm's output row from offset `at` (column c), as the
// norm's kernel forms them with the row's statistics (LayerNorm: mf and rs, as the vector
// kernel; RMSNorm: rs, mf unused), rounded to bf16 as its copy.
template <int kNorm>
__device__ inline void load8_norm(const GemvNorm& ln, int64_t at, int c, float mf, float rs,
                                  float f[8]) {
  for (int h = 0; h < 2; h++) {
    float4 v = ld4(ln.a + at + 4 * h);
    if (ln.r) {
      const float4 u = ld4(ln.r + at + 4 * h);
      v = float4{v.x + u.x, v.y + u.y, v.z + u.z, v.w + u.w};
    }
    const float4 wv = ld4(ln.w + c + 4 * h);
    if constexpr (kNorm == kGemvRmsNorm) {
      f[4 * h] = bf16_round(rms_norm(v.x, rs, wv.x));
      f[4 * h + 1] = bf16_round(rms_norm(v.y, rs, wv.y));
      f[4 * h + 2] = bf16_round(rms_norm(v.z, rs, wv.z));
      f[4 * h + 3] = bf16_round(rms_norm(v.w, rs, wv.w));
    } else {
      const float4 bv = ld4(ln.b + c + 4 * h);
      f[4 * h] = bf16_round(ln_norm(v.x, mf, rs, wv.x, bv.x));
      f[4 * h + 1] = bf16_round(ln_norm(v.y, mf, rs, wv.y, bv.y));
      f[4 * h + 2] = bf16_round(ln_norm(v.z, mf, rs, wv.z, bv.z));
      f[4 * h + 3] = bf16_round(ln_norm(v.w, mf, rs, wv.w, bv.w));
    }
  }
}

// out[n, c] = sum_k x[n, k] w[c, k] (+ bias[c]) for n < N <= kGemvRows; x rows ldx apart;
// grid ceil(Cout / kGemvCols), kGemvThreads threads. kGelu (XT float): x is a deferred GELU's
// input, its output formed as it is loaded (load8<true>). kNorm (XT float, x unused): the
// input is a deferred norm's output (ln; Cin a multiple of 8, for LayerNorm up to kLnVecMaxC;
// rows Cin apart): each block first computes every row's statistics as the norm's kernel does
// (LayerNorm: ln_vec_stats, as the vector kernel; RMSNorm: rms_row_rstd; a warp a row), block
// 0 writing what that kernel writes besides the output, then forms the output as it is loaded
// (load8_norm).
// (kNorm's bound of 4 blocks a multiprocessor holds it to 128 registers, as the others take
// unbounded, without spilling: check/kernel_resources.ts.)
template <typename XT, bool kGelu = false, int kNorm = kGemvNoNorm>
__global__ void __launch_bounds__(kGemvThreads, kNorm ? 4 : 1)
    gemv_bf16_kernel(float* out, const XT* x, int ldx, const __nv_bfloat16* w,
                     const float* bias, int N, int Cin, int Cout, GemvNorm ln) {
  pdl_begin();
  __shared__ float part[kGemvThreads / 32][kGemvRows * kGemvCols];
  __shared__ float stat[2][kGemvRows];  // kNorm: each row's mean (LayerNorm) and rstd
  const int c0 = blockIdx.x * kGemvCols;
  if constexpr (kNorm != kGemvNoNorm) {
    const bool first = blockIdx.x == 0;
    const int lane = threadIdx.x % 32;
    for (int r = threadIdx.x / 32; r < N; r += kGemvThreads / 32) {
      const int64_t off = (int64_t)r * Cin;
      float* resid = first && ln.resid ? ln.resid + off : nullptr;
      float mf = 0.f, rs;
      if constexpr (kNorm == kGemvRmsNorm) {
        rs = ln.r ? rms_row_rstd<true>(resid, ln.a + off, ln.r + off, Cin, lane, ln.eps)
                  : rms_row_rstd<false>(nullptr, ln.a + off, nullptr, Cin, lane, ln.eps);
      } else {
        float4 xv[kLnVecMaxC / 128];
        if (ln.r) {
          ln_vec_stats<kLnVecMaxC / 128, true>(xv, resid, ln.a + off, ln.r + off, Cin, lane, &mf,
                                               &rs);
        } else {
          ln_vec_stats<kLnVecMaxC / 128, false>(xv, nullptr, ln.a + off, nullptr, Cin, lane, &mf,
                                                &rs);
        }
      }
      if (lane == 0) {
        stat[0][r] = mf, stat[1][r] = rs;
        if (first && ln.mean) ln.mean[r] = mf;
        if (first && ln.rstd) ln.rstd[r] = rs;
      }
    }
    __syncthreads();
  }
  float acc[kGemvRows][kGemvCols];
  for (int r = 0; r < kGemvRows; r++) {
    for (int c = 0; c < kGemvCols; c++) acc[r][c] = 0.f;
  }
  for (int j = threadIdx.x; j < Cin / 8; j += kGemvThreads) {
    float wf[kGemvCols][8];
    for (int c = 0; c < kGemvCols; c++) {  // a last group's missing columns read its first row
      const int col = c0 + c < Cout ? c0 + c : c0;
      load8(w + (int64_t)col * Cin + 8 * j, wf[c]);
    }
    for (int r = 0; r < kGemvRows && r < N; r++) {
      float xf[8];
      if constexpr (kNorm != kGemvNoNorm) {
        load8_norm<kNorm>(ln, (int64_t)r * Cin + 8 * j, 8 * j, stat[0][r], stat[1][r], xf);
      } else if constexpr (kGelu) {
        load8<true>(x + (int64_t)r * ldx + 8 * j, xf);
      } else {
        load8(x + (int64_t)r * ldx + 8 * j, xf);
      }
      for (int c = 0; c < kGemvCols; c++) {
        for (int i = 0; i < 8; i++) acc[r][c] = fmaf(xf[i], wf[c][i], acc[r][c]);
      }
    }
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = 0; r < kGemvRows && r < N; r++) {
    for (int c = 0; c < kGemvCols; c++) {
      float v = acc[r][c];
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) part[warp][r * kGemvCols + c] = v;
    }
  }
  __syncthreads();
  const int t = threadIdx.x, r = t / kGemvCols, col = c0 + t % kGemvCols;
  if (r < N && col < Cout) {
    float v = part[0][t];
    for (int q = 1; q < kGemvThreads / 32; q++) v += part[q][t];
    out[(int64_t)r * Cout + col] = bias ? v + bias[col] : v;
  }
}

// ---- The engine's own forwards of 1 to 128 rows, and a deferred GELU formed in them -------
//
// Two kernels of the engine's own serve bf16 forwards of few rows over a weight with a kept
// bf16 copy, where the operands start 16 bytes aligned: gemv_bf16_kernel (above) 1 to
// kGemvRows rows, Cin a multiple of 8; skinny_gemm_kernel (skinny.cuh) kSkMinRows to
// kSkMaxRows rows, Cin a multiple of kSkK. Either can also form a deferred GELU forward's
// output (common.cuh's DeferredGeluFwd) as it stages its operand, instead of reading the copy
// GELU's kernel would write. A call has up to three ways to run (OwnPath): cuBLAS, the kernel
// (after GELU's kernel, if one is deferred), the kernel forming GELU. Which is fastest depends
// on the GPU and the shape: cuBLAS's kernels tile 64 or 128 rows deep and leave a few-row call
// a few dozen blocks; forming GELU saves a launch and the copy's round trip, but every block
// that stages an input forms it again (each of a gemv call's Cout / 4 blocks forms all N x Cin).
// So a shape's ways are timed against each other at its first call outside a graph recording
// (kTuneRuns calls each behind a hold of the stream, as tune_lt does; each way runs GELU's
// kernel itself when it reads the copy), and the fastest is kept for the process; the first
// way listed is kept unless another beats it by kTuneMargin. A shape first met while a graph is
// recorded runs its first way and is timed at its next call outside one.
//
// The ways listed: cuBLAS for the split-K kernel's rows when LOTUS_SKINNY is 1 (its default on
// a GPU; 0: never the kernel, 2: the kernel untimed); the kernel, unless a GELU is deferred and
// LOTUS_DEFER_GELU_FWD is 2; the kernel forming GELU (kByKernelForming) when one is deferred
// (LOTUS_DEFER_GELU_FWD 1, the GPU's default, or 2; 0: GELU is never deferred). A single way is taken untimed. The host
// emulation's clock cannot rank kernels, so there LOTUS_SKINNY defaults to 0 and
// LOTUS_DEFER_GELU_FWD to 2. le_device_info reports the split-K shapes timed against cuBLAS
// (skinnyShapes), those a kernel way won (skinnyChosen), one call of each by cuBLAS and by the
// faster kernel way, summed (skinnyCublasUs, skinnyKernelUs; with GELU's kernel where that way
// runs it), and the shapes where forming GELU was timed against reading its copy
// (geluFwdShapes) and won (geluFwdFused).
//
// A deferred norm forward, LayerNorm or RMSNorm (common.cuh's DeferredNormFwd), is formed
// likewise, by the gemv kernel only: its ways are the kernel after the norm's kernel and the
// kernel forming it (kByKernelForming), timed with LOTUS_DEFER_NORM_FWD 1 (a GPU's default),
// the latter alone with 2 (the emulation's); le_device_info's normFwdShapes and normFwdFused
// count them.
//
// Determinism: both kernels sum in a fixed order, and a shape's way is fixed for the process
// once chosen. The kernel and the kernel forming GELU give the same bits; cuBLAS's differ by
// fp32's rounding, so two processes may differ there where cuBLAS and a kernel time within
// noise of each other. A shape is its rows, widths, bias and input's form, so every new number
// of rows (a question's prefill length) is timed once, with a host wait.

enum OwnPath : int { kByCublas = 0, kByKernel = 1, kByKernelForming = 2 };

struct OwnKey {
  // formed: the deferred op the kernel may form (0 none, 1 GELU, 2 LayerNorm, 3 its residual
  // form, 4 RMSNorm, 5 its residual form); ways: a bit for each way timed
  int skinny, N, Cin, Cout, bias, x16, formed, ways;
  bool operator==(const OwnKey& o) const { return memcmp(this, &o, sizeof o) == 0; }
};
struct OwnKeyHash {
  size_t operator()(const OwnKey& k) const {
    return std::hash<std::string_view>()(std::string_view((const char*)&k, sizeof k));
  }
};
std::unordered_map<OwnKey, int, OwnKeyHash> g_own_chosen;  // each timed shape's OwnPath
struct OwnStats {
  int sk_shapes = 0, sk_chosen = 0, gelu_shapes = 0, gelu_fused = 0, norm_shapes = 0,
      norm_fused = 0;
  double sk_cublas_us = 0, sk_kernel_us = 0;
} g_own;
unsigned* g_sk_arrived = nullptr;  // the split-K kernel's counters, one a column tile, zero

inline void release_own() {
  g_own_chosen.clear();
  g_own = OwnStats{};
  if (g_sk_arrived) cudaFree(g_sk_arrived);
  g_sk_arrived = nullptr;
}

// A few-row call's operands: the weight's kept copy and the input as the kernel reads it, one
// of x16 (a bf16 copy, rows ldx apart), x (fp32, rounded as staged) or gelu_in (a deferred
// GELU forward's input, formed as staged), or norm (a deferred norm forward whose output
// is x, formed as staged; the gemv kernel only).
struct OwnCall {
  bool skinny;
  float* out;
  const float* x;
  const __nv_bfloat16* x16;
  int ldx;
  const float* gelu_in;
  const __nv_bfloat16* w16;
  const float* bias;
  int N, Cin, Cout;
  const DeferredNormFwd* norm;
};

// One launch of the call's kernel.
inline int own_launch(const char* fn, const OwnCall& c) {
  if (!c.skinny) {
    const unsigned blocks = (unsigned)((c.Cout + kGemvCols - 1) / kGemvCols);
    if (const DeferredNormFwd* d = c.norm) {
      const GemvNorm ln{d->a, d->r, d->w, d->b, d->resid, d->mean, d->rstd, d->eps};
      if (d->rms) {
        LAUNCH((gemv_bf16_kernel<float, false, kGemvRmsNorm>), blocks, kGemvThreads, 0)(
            c.out, d->a, c.Cin, c.w16, c.bias, c.N, c.Cin, c.Cout, ln);
      } else {
        LAUNCH((gemv_bf16_kernel<float, false, kGemvLayerNorm>), blocks, kGemvThreads, 0)(
            c.out, d->a, c.Cin, c.w16, c.bias, c.N, c.Cin, c.Cout, ln);
      }
    } else if (c.gelu_in) {
      LAUNCH((gemv_bf16_kernel<float, true>), blocks, kGemvThreads, 0)(
          c.out, c.gelu_in, c.Cin, c.w16, c.bias, c.N, c.Cin, c.Cout, GemvNorm{});
    } else if (c.x16) {
      LAUNCH(gemv_bf16_kernel<__nv_bfloat16>, blocks, kGemvThreads, 0)(
          c.out, c.x16, c.ldx, c.w16, c.bias, c.N, c.Cin, c.Cout, GemvNorm{});
    } else {
      LAUNCH(gemv_bf16_kernel<float>, blocks, kGemvThreads, 0)(c.out, c.x, c.Cin, c.w16, c.bias,
                                                                c.N, c.Cin, c.Cout, GemvNorm{});
    }
    return 0;
  }
  const int S = skinny_splits(c.Cin, c.Cout, g.sms);
  const dim3 grid((c.Cout + kSkCols - 1) / kSkCols, S);
  float* part = nullptr;
  if (S > 1) {
    part = (float*)g_scr_part.get(fn, (size_t)S * c.N * c.Cout * sizeof(float));
    if (!part) return 1;
  }
  const int ks = c.Cin / S;
  if (c.gelu_in) {
    LAUNCH((skinny_gemm_kernel<float, true>), grid, kSkThreads, kSkSmem)(
        c.out, c.gelu_in, c.Cin, c.w16, c.bias, c.N, c.Cin, c.Cout, ks, part, g_sk_arrived);
  } else if (c.x16) {
    LAUNCH(skinny_gemm_kernel<__nv_bfloat16>, grid, kSkThreads, kSkSmem)(
        c.out, c.x16, c.ldx, c.w16, c.bias, c.N, c.Cin, c.Cout, ks, part, g_sk_arrived);
  } else {
    LAUNCH(skinny_gemm_kernel<float>, grid, kSkThreads, kSkSmem)(
        c.out, c.x, c.Cin, c.w16, c.bias, c.N, c.Cin, c.Cout, ks, part, g_sk_arrived);
  }
  return 0;
}

// The call as kByKernel runs it when a GELU or norm is deferred: that op run into its
// copy first (run_deferred_gelu_fwd, run_deferred_norm_fwd), the kernel reading the copy, or
// its fp32 output where no copy could be made.
inline OwnCall reading_copy(OwnCall c) {
  c.gelu_in = nullptr;
  c.norm = nullptr;
  c.x16 = produced_bf16(c.x, c.N, c.Cin, &c.ldx);
  return c;
}

// Times the call's ways (see above) and returns the one to keep in *path, or -1 when nothing
// could be timed (a launch error pending from earlier work, no events): then the first way
// runs, untimed. With a GELU deferred it is run into its copy first (no longer pending), and
// the ways that read the copy run GELU's kernel again each timed call. Returns 1 with a
// message when a way fails or the GPU reports a fault.
inline int own_choose(const char* fn, const OwnKey& key, const std::vector<int>& ways, OwnCall c,
                      const float* w, int* path) {
  *path = -1;
  if (cudaPeekAtLastError() != cudaSuccess) return 0;
  const int64_t n = (int64_t)c.N * c.Cin;
  const bool deferred = c.gelu_in || c.norm;
  __nv_bfloat16* made16 = c.gelu_in ? run_deferred_gelu_fwd(fn)
                          : c.norm  ? run_deferred_norm_fwd(fn)
                                    : nullptr;
  const OwnCall copy = deferred ? reading_copy(c) : c;
  const auto remake_copy = [&] {  // the deferred op's kernel into its copy, again
    if (c.gelu_in && made16) launch_gelu_fwd(nullptr, made16, c.gelu_in, n);
    if (c.norm && made16) launch_norm_fwd(*c.norm, nullptr, made16, copy.ldx);
  };
  Operand A{}, B{};
  if (ways[0] == kByCublas) TRY(prepare(fn, g_scr_a, w, c.Cout, c.Cin, &A));
  const auto run = [&](int way) {
    if (way == kByKernelForming) return own_launch(fn, c);
    remake_copy();
    if (way == kByKernel) return own_launch(fn, copy);
    // cuBLAS's operand as each call makes it: a rounding pass where x has no bf16 copy (the
    // kernels round as they stage), none where it has.
    TRY(prepare(fn, g_scr_b, c.x, c.N, c.Cin, &B));
    return gemm(fn, cublas::kOpT, cublas::kOpN, c.Cout, c.N, c.Cin, A, B, c.out, c.Cout, false,
                c.bias);
  };
  for (int way : ways) TRY(run(way));  // untimed: cuBLAS chooses its algorithm in its first
  cudaEvent_t ev[2] = {nullptr, nullptr};
  bool timed = cudaEventCreate(&ev[0]) == cudaSuccess && cudaEventCreate(&ev[1]) == cudaSuccess;
  int failed = 0;  // a way's error (its message set), as against an event's
  std::vector<double> us(ways.size(), 0.0);
  for (size_t i = 0; i < ways.size() && timed; i++) {
    us[i] = time_calls([&] { return failed = run(ways[i]); }, ev);
    timed = us[i] >= 0;
  }
  for (cudaEvent_t e : ev) {
    if (e) cudaEventDestroy(e);
  }
  if (failed) return 1;
  const cudaError_t e = cudaGetLastError();
  if (is_sticky(e)) return cuda_fail(fn, "timing the few-row kernels against each other", e);
  if (!timed) return 0;
  size_t best = 0;
  for (size_t i = 1; i < ways.size(); i++) {
    if (us[i] < us[best]) best = i;
  }
  if (us[best] >= (1.0 - kTuneMargin) * us[0]) best = 0;
  *path = ways[best];
  g_own_chosen[key] = *path;
  if (ways[0] == kByCublas) {
    double kernel_us = us[1];
    for (size_t i = 2; i < ways.size(); i++) kernel_us = std::min(kernel_us, us[i]);
    g_own.sk_shapes++;
    g_own.sk_chosen += *path != kByCublas;
    g_own.sk_cublas_us += us[0];
    g_own.sk_kernel_us += kernel_us;
  }
  const bool both = std::find(ways.begin(), ways.end(), (int)kByKernel) != ways.end() &&
                    std::find(ways.begin(), ways.end(), (int)kByKernelForming) != ways.end();
  if (both && c.norm) {
    g_own.norm_shapes++;
    g_own.norm_fused += *path == kByKernelForming;
  } else if (both) {
    g_own.gelu_shapes++;
    g_own.gelu_fused += *path == kByKernelForming;
  }
  return 0;
}

// le_matmul_fwd into bf16 storage: cuBLASLt writes D in bf16 (its epilogue adds the fp32 bias
// to the fp32 sum, then rounds) where it offers an algorithm for that, which it does for bf16
// operands (bf16 mode); otherwise the GEMM writes fp32 into scratch and a pass rounds it (the
// same values: the sum plus the bias, rounded once).
// Calls of each way, for le_device_info (bf16OutLt, bf16OutRounded): a GPU run shows whether
// cuBLASLt took the bf16 outputs.
struct Bf16OutStats {
  int64_t lt = 0, rounded = 0;
} g_bf16_out;

inline int matmul_fwd_bf16(const char* fn, Operand A, Operand B, __nv_bfloat16* out,
                           const float* bias, int N, int Cin, int Cout) {
  const int r = gemm_lt(fn, cublas::kOpT, cublas::kOpN, Cout, N, Cin, A, B, out, Cout, bias,
                        false, CUDA_R_16BF);
  if (r == 0) g_bf16_out.lt++;
  if (r >= 0) return r;
  g_bf16_out.rounded++;
  const int64_t n = (int64_t)N * Cout;
  float* wide = (float*)g_scr_c.get(fn, (size_t)n * sizeof(float));
  if (!wide) return 1;
  TRY(gemm(fn, cublas::kOpT, cublas::kOpN, Cout, N, Cin, A, B, wide, Cout, false, bias));
  LAUNCH(to_bf16_kernel, grid_for(n, 256), 256, 0)(out, wide, n);
  return 0;
}

// le_matmul_fwd by one of the engine's own kernels where one applies and the call's way (see
// above) is not cuBLAS: 1 launched, 0 cuBLAS's (the caller runs a deferred GELU, then cuBLAS),
// -1 failed (message set). gelu_in: the input of the GELU forward whose output is all of inp,
// deferred to this call; norm: likewise a deferred norm forward (the gemv kernel's rows
// only; the caller runs it where this returns 0).
inline int own_fwd(const char* fn, float* out, const float* inp, const float* w,
                   const float* bias, int N, int Cin, int Cout, const float* gelu_in,
                   const DeferredNormFwd* norm) {
  if (g.precision != 2) return 0;
  const bool gemv = g.gemv && N >= 1 && N <= kGemvRows && Cin % 8 == 0;
  const bool skinny = g.skinny && N >= kSkMinRows && N <= kSkMaxRows && Cin % kSkK == 0 &&
                      (Cout + kSkCols - 1) / kSkCols <= kSkMaxTiles;
  if (!gemv && !skinny) return 0;
  if (norm && !gemv) return 0;
  // Outputs written over the input (which the timing would read back, overwritten) take cuBLAS;
  // so do those over what a deferred norm reads or writes (its blocks read all of it).
  const auto over = [&](const float* x, int64_t n = 0) {
    if (!n) n = (int64_t)N * Cin;
    return x && out < x + n && x < out + (int64_t)N * Cout;
  };
  if (over(inp) || over(gelu_in)) return 0;
  if (norm && (over(norm->a) || over(norm->r) || over(norm->resid) || over(norm->w, Cin) ||
               over(norm->b, Cin) || over(norm->mean, N) || over(norm->rstd, N))) {
    return 0;
  }
  const __nv_bfloat16* w16;
  if (kept_bf16(fn, w, (int64_t)Cout * Cin, &w16) != 0) return -1;
  if (!w16 || alignment_of(w16) < 16) return 0;
  int ld = 0;
  const __nv_bfloat16* x16 = gelu_in || norm ? nullptr : produced_bf16(inp, N, Cin, &ld);
  if (norm ? false  // its operands are 16-byte aligned (defer_norm, layernorm.cuh)
      : gelu_in ? alignment_of(gelu_in) < 16
      : x16   ? alignment_of(x16) < 16 || ld % 8 != 0
              : operand_only_copy() != nullptr || alignment_of(inp) < 16) {
    return 0;  // (an operand-only copy that is not of these rows: the GEMM path says so)
  }
  if (skinny && !g_sk_arrived) {  // made once, outside a recording (a graph would not hold it)
    const size_t bytes = kSkMaxTiles * sizeof(unsigned);
    if (g.capturing) return 0;
    if (cudaMalloc(&g_sk_arrived, bytes) != cudaSuccess) {
      (void)cudaGetLastError();
      g_sk_arrived = nullptr;
      return 0;
    }
    if (const cudaError_t e = cudaMemsetAsync(g_sk_arrived, 0, bytes, g.stream); e) {
      cudaFree(g_sk_arrived);
      g_sk_arrived = nullptr;
      cuda_fail(fn, "zeroing the split-K kernel's counters", e);
      return -1;
    }
  }
  std::vector<int> ways;
  if (skinny && g.skinny == 1) ways.push_back(kByCublas);
  // Reading a deferred GELU's output, the kernel may have to read its fp32 values (no copy could
  // be made), with 16-byte loads: not where that output is less aligned.
  // A deferred norm's output likewise (its inputs are 16-byte aligned: defer_norm).
  if (norm ? g.defer_norm_fwd == 1
           : !gelu_in || (g.defer_gelu_fwd == 1 && alignment_of(inp) >= 16)) {
    ways.push_back(kByKernel);
  }
  if (gelu_in || norm) ways.push_back(kByKernelForming);
  const OwnCall c{skinny, out, inp, x16, ld, gelu_in, w16, bias, N, Cin, Cout, norm};
  int mask = 0;
  for (int way : ways) mask |= 1 << way;
  const int formed = gelu_in ? 1 : !norm ? 0 : (norm->rms ? 4 : 2) + (norm->r ? 1 : 0);
  const OwnKey key{skinny, N, Cin, Cout, bias != nullptr, x16 != nullptr, formed, mask};
  int path = ways[0];
  if (ways.size() > 1) {
    if (const auto it = g_own_chosen.find(key); it != g_own_chosen.end()) {
      path = it->second;
    } else if (!g.capturing) {
      if (own_choose(fn, key, ways, c, w, &path)) return -1;
      if (path < 0) path = ways[0];
    }
  }
  if (path == kByCublas) return 0;
  if (path == kByKernelForming) return own_launch(fn, c) ? -1 : 1;
  if (!gelu_in && !norm) return own_launch(fn, c) ? -1 : 1;
  // kByKernel with a GELU or norm deferred: it runs first (unless the timing above ran
  // it), and the kernel reads its copy, or its fp32 output where no copy could be made.
  if (deferred_gelu_fwd()) run_deferred_gelu_fwd(fn);
  if (deferred_norm_fwd()) run_deferred_norm_fwd(fn);
  return own_launch(fn, reading_copy(c)) ? -1 : 1;
}

}  // namespace le

LE_API int le_matmul_fwd(float* out, const float* inp, const float* w, const float* bias, int N,
                         int Cin, int Cout) {
  using namespace le;
  const char* fn = "le_matmul_fwd";
  REQUIRE_INIT(fn);
  TRY(validate_matmul_fwd(out, inp, w, bias, N, Cin, Cout));
  // A GELU forward deferred to this call: formed by a few-row kernel that reads all of its
  // output, else run now into the bf16 copy, which the checks and cuBLAS then see as made.
  const float* gelu_in = nullptr;
  if (const DeferredGeluFwd* d = deferred_gelu_fwd()) {
    if (inp == d->out && (int64_t)N * Cin == d->n) {
      gelu_in = d->inp;
    } else {
      run_deferred_gelu_fwd(fn);
    }
  }
  // A norm forward deferred to this call: formed by the gemv kernel when it reads all of
  // that output, else run now as the GELU above.
  DeferredNormFwd norm{};
  if (const DeferredNormFwd* d = deferred_norm_fwd()) {
    if (inp == d->out && N == d->N && Cin == d->C) {
      norm = *d;
    } else {
      run_deferred_norm_fwd(fn);
    }
  }
  if (const ProducedCopy* c = operand_only_copy()) {
    TRY(check_copy_read(fn, c, copy_overlaps(c, inp, (int64_t)N * Cin), "as its input"));
  }
  // bf16 storage (le_alloc_bf16): the GEMM's fp32 result rounded as it is written.
  const bool out16 = in_bf16_block(out);
  const int few = out16 ? 0
                        : own_fwd(fn, out, inp, w, bias, N, Cin, Cout, gelu_in,
                                  norm.out ? &norm : nullptr);
  if (few < 0) return 1;
  if (few > 0) {
    g_deferred_gelu_fwd = DeferredGeluFwd{};
    g_deferred_norm_fwd = DeferredNormFwd{};
    return op_done(fn);
  }
  if (deferred_gelu_fwd()) run_deferred_gelu_fwd(fn);
  if (deferred_norm_fwd()) run_deferred_norm_fwd(fn);
  Operand A, B;
  TRY(prepare(fn, g_scr_a, w, Cout, Cin, &A));
  TRY(prepare(fn, g_scr_b, inp, N, Cin, &B));
  if (out16) {
    TRY(matmul_fwd_bf16(fn, A, B, reinterpret_cast<__nv_bfloat16*>(out), bias, N, Cin, Cout));
    return op_done(fn);
  }
  TRY(gemm(fn, cublas::kOpT, cublas::kOpN, Cout, N, Cin, A, B, out, Cout, false, bias));
  return op_done(fn);
}

LE_API int le_matmul_bwd(float* dinp, float* dw, float* dbias, const float* dout,
                         const float* inp, const float* w, int N, int Cin, int Cout,
                         int accumulate) {
  using namespace le;
  const char* fn = "le_matmul_bwd";
  REQUIRE_INIT(fn);
  TRY(validate_matmul_bwd(dinp, dw, dbias, dout, inp, w, N, Cin, Cout));
  if (deferred_gelu_fwd()) run_deferred_gelu_fwd(fn);  // its copy, checked as any producer's
  if (const ProducedCopy* c = operand_only_copy()) {
    const bool read = ((dinp || dw) && copy_overlaps(c, dout, (int64_t)N * Cout)) ||
                      (dw && copy_overlaps(c, inp, (int64_t)N * Cin));
    TRY(check_copy_read(fn, c, read, "as dout nor as the input of its weight gradient"));
  }
  // dout, when the GELU backward just before left it to this call to form (common.cuh).
  const DeferredGelu* dg = deferred_gelu();
  if (dg && (dg->dinp != dout || dg->n != (int64_t)N * Cout)) {
    return fail("%s: the op before it, le_gelu_bwd, left its output of %lld values to be formed "
                "by this matmul backward as its dout (le_operand_only), but dout [%d, %d] is "
                "not that output; pass it as dout, or do not give the hint",
                fn, (long long)dg->n, N, Cout);
  }
  // dout as the GEMMs read it. With a bias or a deferred GELU backward, its bf16 rounding is
  // left to the column sums' pass (d16), which reads dout (or forms it) anyway.
  Operand D{};
  __nv_bfloat16* d16 = nullptr;
  if ((dinp || dw) && dg) {
    const int ld = padded_ld(Cout);
    d16 = (__nv_bfloat16*)g_scr_a.get(fn, (size_t)N * ld * sizeof(__nv_bfloat16));
    if (!d16) return 1;
    D = {d16, CUDA_R_16BF, ld};
  } else if (dinp || dw) {
    TRY(prepare(fn, g_scr_a, dout, N, Cout, &D, dbias ? &d16 : nullptr));
  }
  if (dbias || d16) {  // without dbias, the pass runs for its copy (its sums are not read)
    const int chunk = col_chunk_rows(N), chunks = (N + chunk - 1) / chunk;
    double* part = (double*)g_scr_part.get(fn, (size_t)chunks * Cout * sizeof(double));
    if (!part) return 1;
    dim3 grid((Cout + 127) / 128, chunks);
    if (dg) {
      with_stored(dg->inp, dg->in16, [&](auto* h) {
        LAUNCH((colsum_part_kernel<true, stored_t<decltype(h)>>), grid, 128, 0)(
            part, dg->dout, h, N, Cout, chunk, d16, D.ld);
      });
    } else {
      LAUNCH(colsum_part_kernel<false>, grid, 128, 0)(part, dout, nullptr, N, Cout, chunk, d16,
                                                      D.ld);
    }
    if (dbias) {
      LAUNCH(colsum_finish_kernel, (Cout + 127) / 128, 128, 0)(dbias, part, chunks, Cout);
    }
  }
  if (dinp) {
    Operand W;
    TRY(prepare(fn, g_scr_b, w, Cout, Cin, &W));
    TRY(gemm(fn, cublas::kOpN, cublas::kOpN, Cin, N, Cout, W, D, dinp, Cin, accumulate != 0));
  }
  if (dw) {
    Operand X;
    TRY(prepare(fn, g_scr_c, inp, N, Cin, &X));
    TRY(gemm(fn, cublas::kOpN, cublas::kOpT, Cin, Cout, N, X, D, dw, Cin, true));
  }
  return op_done(fn);
}
