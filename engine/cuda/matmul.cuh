// matmul.cuh: the linear layer through cuBLAS (cublasGemmEx; cublasLtMatmul for a forward with
// a bias), forward and backward.
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
// Determinism: cuBLAS gives bit-identical results for the same shapes, mode and GPU when one
// stream and a fixed workspace are used (both set at le_init); dbias uses fixed chunks.
#pragma once

#include <cuda_bf16.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common.cuh"
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
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i] = round_tf32(in[i]);
}

// out[n, o] += bias[o]
__global__ void add_bias_kernel(float* out, const float* bias, int64_t N, int Cout) {
  const int64_t total = N * Cout;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total;
       t += (int64_t)gridDim.x * blockDim.x)
    out[t] += bias[t % Cout];
}

// Stage 1 of dbias: grid (ceil(C/128), chunks); part [chunks, C]. With x16 (bf16 mode, when
// the backward's GEMMs need dout rounded and no op has made that copy), the same pass over x
// also writes the bf16 copy, rows ld16 apart: one read of dout instead of two, and the
// rounding kernel's launch saved.
__global__ void colsum_part_kernel(double* part, const float* x, int N, int C, int chunk,
                                   __nv_bfloat16* x16, int ld16) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int n0 = blockIdx.y * chunk, n1 = min(N, n0 + chunk);
  part[(int64_t)blockIdx.y * C + c] = sum_in_order<float>(
      n0, n1, [&](int n) { return x[(int64_t)n * C + c]; },
      [&](int n, float v) {
        if (x16) x16[(int64_t)n * ld16 + c] = __float2bfloat16_rn(v);
      });
}

// The rounding kernels into a copy whose rows are ld apart (ld > cols; else the flat ones).
__global__ void to_tf32_rows_kernel(float* out, const float* in, int64_t rows, int cols,
                                    int ld) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i / cols * ld + i % cols] = round_tf32(in[i]);
}

__global__ void to_bf16_rows_kernel(__nv_bfloat16* out, const float* in, int64_t rows, int cols,
                                    int ld) {
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

// Column-major C[m,n] = A op B (+ C when accumulate), through cublasGemmEx.
inline int gemm(const char* fn, int transa, int transb, int m, int n, int k, Operand A,
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

// ---- The forward's bias in the GEMM's epilogue (cuBLASLt) -------------------------------
//
// With a bias, le_matmul_fwd calls cublasLtMatmul with CUBLASLT_EPILOGUE_BIAS: the bias is
// added as the GEMM writes its output, instead of by add_bias_kernel re-reading and rewriting
// [N, Cout] after it. Same operands, same compute type; the GEMM may sum in another order
// than cublasGemmEx's kernel, so results agree to the precision's rounding, not to the bit.
// Descriptors, layouts and the algorithm chosen by cublasLtMatmulAlgoGetHeuristic are kept
// per shape (LtPlan), so a call after the first is the matmul alone; the bias pointer is the
// only attribute set per call. The heuristic is told the operands' real alignment (a row
// range of a buffer need not be 256-byte aligned). Without cuBLASLt's matmul entry points,
// with LOTUS_CUBLASLT=0, when no algorithm fits a shape, or for a bias off a 16-byte
// boundary, the GEMM and the bias kernel run as before. GELU stays in its own kernel, which also writes the bf16 copy the next matmul
// reads (common.cuh's produced operands): a GELU epilogue would write fp32 that then needs
// its own rounding pass, the same traffic and launches as now.

struct LtKey {
  int transa, transb, m, n, k, atype, lda, btype, ldb, ldc, compute;
  unsigned align[3];  // A, B, D (C is D)
  bool operator==(const LtKey& o) const { return memcmp(this, &o, sizeof o) == 0; }
};

struct LtPlan {
  LtKey key;
  cublas::LtDesc desc = nullptr;
  cublas::LtLayout a = nullptr, b = nullptr, d = nullptr;
  cublas::LtAlgo algo{};
  bool ok = false;  // false: no algorithm for this shape; use the GEMM and the bias kernel
  uint64_t used = 0;
};

constexpr size_t kMaxLtPlans = 64;
std::vector<LtPlan> g_lt_plans;
uint64_t g_lt_clock = 0;

inline void drop_lt_plan(LtPlan& p) {
  if (p.desc) g.blas.lt_desc_destroy(p.desc);
  for (cublas::LtLayout l : {p.a, p.b, p.d}) {
    if (l) g.blas.lt_layout_destroy(l);
  }
  p = LtPlan{};
}

// Drops every plan and the cuBLASLt handle: biases go back to the kernel.
inline void release_lt() {
  for (LtPlan& p : g_lt_plans) drop_lt_plan(p);
  g_lt_plans.clear();
  if (g.lt) g.blas.lt_destroy(g.lt);
  g.lt = nullptr;
}

inline unsigned alignment_of(const void* p) {
  const uintptr_t u = (uintptr_t)p;
  unsigned a = 256;
  while (a > 1 && u % a) a /= 2;
  return a;
}

// Builds the plan for `key` (ok = false when cuBLASLt has no algorithm for it).
inline void build_lt_plan(LtPlan& p) {
  const LtKey& k = p.key;
  using namespace cublas;
  bool ok = g.blas.lt_desc_create(&p.desc, k.compute, CUDA_R_32F) == kSuccess;
  const int32_t ta = k.transa, tb = k.transb;
  const uint32_t epi = kLtEpilogueBias;
  ok = ok && g.blas.lt_desc_set(p.desc, kLtDescTransA, &ta, sizeof ta) == kSuccess;
  ok = ok && g.blas.lt_desc_set(p.desc, kLtDescTransB, &tb, sizeof tb) == kSuccess;
  ok = ok && g.blas.lt_desc_set(p.desc, kLtDescEpilogue, &epi, sizeof epi) == kSuccess;
  // Stored shapes (column-major): op(A) is [m, k], so A is [m, k] (N) or [k, m] (T).
  ok = ok && g.blas.lt_layout_create(&p.a, (cudaDataType_t)k.atype, k.transa ? k.k : k.m,
                                     k.transa ? k.m : k.k, k.lda) == kSuccess;
  ok = ok && g.blas.lt_layout_create(&p.b, (cudaDataType_t)k.btype, k.transb ? k.n : k.k,
                                     k.transb ? k.k : k.n, k.ldb) == kSuccess;
  ok = ok && g.blas.lt_layout_create(&p.d, CUDA_R_32F, k.m, k.n, k.ldc) == kSuccess;
  LtPref pref = nullptr;
  ok = ok && g.blas.lt_pref_create(&pref) == kSuccess;
  const uint64_t ws = kWorkspaceBytes;
  ok = ok && g.blas.lt_pref_set(pref, kLtPrefMaxWorkspace, &ws, sizeof ws) == kSuccess;
  // C is D: both get D's alignment.
  const int attrs[4] = {kLtPrefMinAlignA, kLtPrefMinAlignB, kLtPrefMinAlignC, kLtPrefMinAlignD};
  const uint32_t aligns[4] = {k.align[0], k.align[1], k.align[2], k.align[2]};
  for (int i = 0; i < 4; i++) {
    ok = ok && g.blas.lt_pref_set(pref, attrs[i], &aligns[i], sizeof aligns[i]) == kSuccess;
  }
  LtHeuristic h{};
  int found = 0;
  ok = ok && g.blas.lt_heuristic(g.lt, p.desc, p.a, p.b, p.d, p.d, pref, 1, &h, &found) ==
                 kSuccess;
  if (pref) g.blas.lt_pref_destroy(pref);
  p.ok = ok && found > 0 && h.state == kSuccess && h.workspace_size <= kWorkspaceBytes;
  if (p.ok) p.algo = h.algo;
}

// C[m,n] = A op B + bias (per row of the column-major C) through cublasLtMatmul. Returns 0
// done, 1 failed (message set), -1 not possible here: the caller runs the GEMM and the bias
// kernel.
inline int gemm_bias_lt(const char* fn, int transa, int transb, int m, int n, int k, Operand A,
                        Operand B, float* C, int ldc, const float* bias) {
  // The epilogue reads the bias with vector loads on some kernels, and no preference says how
  // aligned the bias is: one off a 16-byte boundary takes the kernel path.
  if (!g.lt || alignment_of(bias) < 16) return -1;
  const int compute = g.precision == 1 ? cublas::kCompute32FFastTF32 : cublas::kCompute32F;
  LtKey key{transa, transb, m, n, k, (int)A.type, A.ld, (int)B.type, B.ld, ldc, compute,
            {alignment_of(A.p), alignment_of(B.p), alignment_of(C)}};
  LtPlan* plan = nullptr;
  for (LtPlan& p : g_lt_plans) {
    if (p.key == key) plan = &p;
  }
  if (!plan) {
    if (g_lt_plans.size() >= kMaxLtPlans) {
      auto oldest = std::min_element(g_lt_plans.begin(), g_lt_plans.end(),
                                     [](const LtPlan& a, const LtPlan& b) {
                                       return a.used < b.used;
                                     });
      drop_lt_plan(*oldest);
      g_lt_plans.erase(oldest);
    }
    g_lt_plans.push_back(LtPlan{});
    plan = &g_lt_plans.back();
    plan->key = key;
    build_lt_plan(*plan);
  }
  plan->used = ++g_lt_clock;
  if (!plan->ok) return -1;
  const void* bp = bias;
  cublas::Status s =
      g.blas.lt_desc_set(plan->desc, cublas::kLtDescBiasPointer, &bp, sizeof bp);
  const float alpha = 1.f, beta = 0.f;
  if (s == cublas::kSuccess) {
    s = g.blas.lt_matmul(g.lt, plan->desc, &alpha, A.p, plan->a, B.p, plan->b, &beta, C,
                         plan->d, C, plan->d, &plan->algo, g.workspace, kWorkspaceBytes,
                         g.stream);
  }
  if (s != cublas::kSuccess) {
    return fail("%s: cublasLtMatmul with the bias epilogue (m=%d, n=%d, k=%d, precision mode "
                "%d) failed: %s%s%s; LOTUS_CUBLASLT=0 adds the bias with a kernel instead",
                fn, m, n, k, g.precision, cublas::status_name(s),
                g.blas.status_string ? ": " : "",
                g.blas.status_string ? g.blas.status_string(s) : "");
  }
  return 0;
}

}  // namespace le

LE_API int le_matmul_fwd(float* out, const float* inp, const float* w, const float* bias, int N,
                         int Cin, int Cout) {
  using namespace le;
  const char* fn = "le_matmul_fwd";
  REQUIRE_INIT(fn);
  TRY(validate_matmul_fwd(out, inp, w, bias, N, Cin, Cout));
  Operand A, B;
  TRY(prepare(fn, g_scr_a, w, Cout, Cin, &A));
  TRY(prepare(fn, g_scr_b, inp, N, Cin, &B));
  if (bias) {
    const int r = gemm_bias_lt(fn, cublas::kOpT, cublas::kOpN, Cout, N, Cin, A, B, out, Cout,
                               bias);
    if (r >= 0) return r ? r : op_done(fn);
  }
  TRY(gemm(fn, cublas::kOpT, cublas::kOpN, Cout, N, Cin, A, B, out, Cout, false));
  if (bias) {
    LAUNCH(add_bias_kernel, grid_for((int64_t)N * Cout, 256), 256, 0)(out, bias, N, Cout);
  }
  return op_done(fn);
}

LE_API int le_matmul_bwd(float* dinp, float* dw, float* dbias, const float* dout,
                         const float* inp, const float* w, int N, int Cin, int Cout,
                         int accumulate) {
  using namespace le;
  const char* fn = "le_matmul_bwd";
  REQUIRE_INIT(fn);
  TRY(validate_matmul_bwd(dinp, dw, dbias, dout, inp, w, N, Cin, Cout));
  // dout as the GEMMs read it. With a bias, a bf16 rounding of dout is left to the column
  // sums' pass (d16), which reads dout anyway.
  Operand D{};
  __nv_bfloat16* d16 = nullptr;
  if (dinp || dw) TRY(prepare(fn, g_scr_a, dout, N, Cout, &D, dbias ? &d16 : nullptr));
  if (dbias) {
    const int chunk = col_chunk_rows(N), chunks = (N + chunk - 1) / chunk;
    double* part = (double*)g_scr_part.get(fn, (size_t)chunks * Cout * sizeof(double));
    if (!part) return 1;
    dim3 grid((Cout + 127) / 128, chunks);
    LAUNCH(colsum_part_kernel, grid, 128, 0)(part, dout, N, Cout, chunk, d16, D.ld);
    LAUNCH(colsum_finish_kernel, (Cout + 127) / 128, 128, 0)(dbias, part, chunks, Cout);
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
