// llama.cuh: the Llama-family ops: RMSNorm (forward, backward), rotary position embeddings
// (in place, forward and inverse) and SwiGLU (forward, backward). Semantics are
// lotus_engine.h's; grouped-query attention is in attention.cuh.
//
// RMSNorm follows layernorm.cuh: one warp per row, the mean of squares in double, and dw as
// deterministic column sums in two stages (fixed chunks of rows, then the chunks in order).
// Its residual form adds the two inputs in the same pass, as le_add would.
// RoPE and SwiGLU are elementwise: one thread per (row, pair) or (row, channel).
#pragma once

#include "common.cuh"

namespace le {

// A row's rstd as the RMSNorm forward computes it, by the warp of lanes `lane`: x = a, or
// a + r (kResid; written to resid where given), each lane's columns lane, lane + 32, .., the
// squares summed in double in that order. The gemv kernel forming a deferred RMSNorm
// (matmul.cuh) calls it too, for the same bits. a, r and resid point at the row; each lane
// reads its columns before writing them, so resid may alias a or r.
template <bool kResid>
__device__ inline float rms_row_rstd(float* resid, const float* a, const float* r, int C,
                                     int lane, float eps) {
  double s = 0;
  for (int c = lane; c < C; c += 32) {
    float v = a[c];
    if constexpr (kResid) {
      v += r[c];
      if (resid) resid[c] = v;
    }
    s += (double)v * v;
  }
  s = warp_sum(s);
  const double ms = __shfl_sync(0xffffffffu, s, 0) / C;
  return (float)(1.0 / sqrt(ms + (double)eps));
}

// One normalised value, as every RMSNorm forward forms it.
__device__ inline float rms_norm(float x, float rs, float w) { return x * rs * w; }

// out16: the bf16 rounding of out as well, rows ld16 apart, when given (common.cuh's produced
// operands); out null: only that copy (le_operand_only). The same for swiglu_fwd_kernel.
// kResid: the input is resid = inp + inp2, written to resid first (le_residual_rmsnorm_fwd);
// each lane reads back only the columns it wrote, so resid may alias inp or inp2.
template <bool kResid>
__global__ void rmsnorm_fwd_kernel(float* out, __nv_bfloat16* out16, int ld16, float* rstd,
                                   const float* inp, const float* w, int N, int C, float eps,
                                   float* resid, const float* inp2) {
  pdl_begin();
  const int n = blockIdx.x * 8 + (threadIdx.x >> 5);
  if (n >= N) return;
  const int lane = threadIdx.x & 31;
  const int64_t off = (int64_t)n * C;
  const float rs = rms_row_rstd<kResid>(kResid ? resid + off : nullptr, inp + off,
                                        kResid ? inp2 + off : nullptr, C, lane, eps);
  const float* x = kResid ? resid + off : inp + off;
  float* o = out ? out + (int64_t)n * C : nullptr;
  __nv_bfloat16* o16 = out16 ? out16 + (int64_t)n * ld16 : nullptr;
  for (int c = lane; c < C; c += 32) {
    const float v = rms_norm(x[c], rs, w[c]);
    if (o) o[c] = v;
    if (o16) o16[c] = __float2bfloat16_rn(v);
  }
  if (lane == 0 && rstd) rstd[n] = rs;
}

// The RMSNorm forward of d's rows (d.rms; the residual form where d.r is given): out (fp32;
// null: not written), out16 (its bf16 copy, rows ld16 apart; null: none) and rstd as d gives.
inline void launch_rmsnorm_fwd(const DeferredNormFwd& d, float* out, __nv_bfloat16* out16,
                               int ld16) {
  const unsigned blocks = (unsigned)((d.N + 7) / 8);
  if (d.r) {
    LAUNCH(rmsnorm_fwd_kernel<true>, blocks, 256, 0)(out, out16, ld16, d.rstd, d.a, d.w, d.N, d.C,
                                                     d.eps, d.resid, d.r);
  } else {
    LAUNCH(rmsnorm_fwd_kernel<false>, blocks, 256, 0)(out, out16, ld16, d.rstd, d.a, d.w, d.N,
                                                      d.C, d.eps, nullptr, nullptr);
  }
}

// le_rmsnorm_fwd and le_residual_rmsnorm_fwd once validated: deferred to the matmul right
// after it where it may be (common.cuh's DeferredNormFwd), else run.
inline int rmsnorm_fwd(const char* fn, const DeferredNormFwd& d) {
  if (defer_norm(d)) {
    g_deferred_norm_fwd = d;
    g_produced.src = nullptr;  // no copy of anything from this call yet
    return 0;
  }
  int ld16;
  __nv_bfloat16* out16 = produce_bf16(fn, d.out, d.N, d.C, &ld16);
  launch_rmsnorm_fwd(d, fp32_dest(d.out, out16), out16, ld16);
  return op_done(fn);
}

__global__ void rmsnorm_bwd_dinp_kernel(float* dinp, const float* dout, const float* inp,
                                        const float* w, const float* rstd, int N, int C) {
  pdl_begin();
  const int n = blockIdx.x * 8 + (threadIdx.x >> 5);
  if (n >= N) return;
  const int lane = threadIdx.x & 31;
  const int64_t off = (int64_t)n * C;
  const float* x = inp + off;
  const float* d = dout + off;
  const float rs = rstd[n];
  double s2 = 0;
  for (int c = lane; c < C; c += 32) s2 += (double)(d[c] * w[c]) * (x[c] * rs);
  s2 = warp_sum(s2);
  const float bb = (float)(__shfl_sync(0xffffffffu, s2, 0) / C);
  float* dx = dinp + off;
  for (int c = lane; c < C; c += 32) dx[c] += (d[c] * w[c] - x[c] * rs * bb) * rs;
}

// Stage 1 of dw: grid (ceil(C/128), chunks); part [chunks, C].
__global__ void rmsnorm_bwd_part_kernel(double* part, const float* dout, const float* inp,
                                        const float* rstd, int N, int C, int chunk) {
  pdl_begin();
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int n0 = blockIdx.y * chunk, n1 = min(N, n0 + chunk);
  part[(int64_t)blockIdx.y * C + c] = sum_in_order<double>(n0, n1, [&](int n) {
    const int64_t i = (int64_t)n * C + c;
    return (double)dout[i] * (inp[i] * rstd[n]);
  });
}

// One thread per (row, pair i); it rotates pair i of every head of the row.
__global__ void rope_kernel(float* x, const int32_t* pos, const float* inv_freq, int N, int nh,
                            int HS, int64_t rs, int inverse) {
  pdl_begin();
  const int half = HS / 2;
  const int64_t total = (int64_t)N * half;
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < total;
       k += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = k / half;
    const int i = (int)(k % half);
    const double a = (double)((float)pos[n] * inv_freq[i]);
    const float c = (float)cos(a), sn = inverse ? -(float)sin(a) : (float)sin(a);
    float* row = x + n * rs;
    for (int h = 0; h < nh; h++) {
      float* v = row + (int64_t)h * HS;
      const float x1 = v[i], x2 = v[i + half];
      v[i] = x1 * c - x2 * sn;
      v[i + half] = x2 * c + x1 * sn;
    }
  }
}

__global__ void swiglu_fwd_kernel(float* out, __nv_bfloat16* out16, int ld16, const float* inp,
                                  int N, int I) {
  pdl_begin();
  const int64_t total = (int64_t)N * I;
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < total;
       k += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = k / I, i = k % I;
    const float g = inp[n * 2 * I + i], u = inp[n * 2 * I + I + i];
    const float sg = 1.f / (1.f + expf(-g));
    const float v = g * sg * u;
    if (out) out[k] = v;
    if (out16) out16[n * ld16 + i] = __float2bfloat16_rn(v);
  }
}

__global__ void swiglu_bwd_kernel(float* dinp, const float* inp, const float* dout, int N, int I,
                                  bool accumulate) {
  pdl_begin();
  const int64_t total = (int64_t)N * I;
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < total;
       k += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = k / I, i = k % I;
    const float g = inp[n * 2 * I + i], u = inp[n * 2 * I + I + i];
    const float sg = 1.f / (1.f + expf(-g));
    const float d = dout[k];
    float* dg = dinp + n * 2 * I + i;
    const float bg = accumulate ? dg[0] : 0.f, bu = accumulate ? dg[I] : 0.f;
    dg[0] = bg + d * u * sg * (1.f + g * (1.f - sg));
    dg[I] = bu + d * g * sg;
  }
}

}  // namespace le

LE_API int le_rmsnorm_fwd(float* out, float* rstd, const float* inp, const float* w, int N, int C,
                          float eps) {
  using namespace le;
  const char* fn = "le_rmsnorm_fwd";
  REQUIRE_INIT(fn);
  TRY(validate_rmsnorm_fwd(out, rstd, inp, w, N, C, eps));
  return rmsnorm_fwd(fn, DeferredNormFwd{out, inp, nullptr, w, nullptr, nullptr, nullptr, rstd,
                                         N, C, g_op_serial, true, eps});
}

LE_API int le_residual_rmsnorm_fwd(float* resid, float* out, float* rstd, const float* a,
                                   const float* b, const float* w, int N, int C, float eps) {
  using namespace le;
  const char* fn = "le_residual_rmsnorm_fwd";
  REQUIRE_INIT(fn);
  TRY(validate_residual_rmsnorm_fwd(resid, out, rstd, a, b, w, N, C, eps));
  return rmsnorm_fwd(fn, DeferredNormFwd{out, a, b, w, nullptr, resid, nullptr, rstd, N, C,
                                         g_op_serial, true, eps});
}

LE_API int le_rmsnorm_bwd(float* dinp, float* dw, const float* dout, const float* inp,
                          const float* w, const float* rstd, int N, int C) {
  using namespace le;
  const char* fn = "le_rmsnorm_bwd";
  REQUIRE_INIT(fn);
  TRY(validate_rmsnorm_bwd(dinp, dw, dout, inp, w, rstd, N, C));
  if (dinp) {
    LAUNCH(rmsnorm_bwd_dinp_kernel, (unsigned)((N + 7) / 8), 256, 0)(dinp, dout, inp, w, rstd, N,
                                                                     C);
  }
  if (dw) {
    const int chunk = col_chunk_rows(N), chunks = (N + chunk - 1) / chunk;
    double* part = (double*)g_scr_part.get(fn, (size_t)chunks * C * sizeof(double));
    if (!part) return 1;
    dim3 grid((C + 127) / 128, chunks);
    LAUNCH(rmsnorm_bwd_part_kernel, grid, 128, 0)(part, dout, inp, rstd, N, C, chunk);
    LAUNCH(colsum_finish_kernel, (C + 127) / 128, 128, 0)(dw, part, chunks, C);
  }
  return op_done(fn);
}

LE_API int le_rope(float* x, const int32_t* pos, const float* inv_freq, int N, int nh, int HS,
                   int64_t rs, int inverse) {
  using namespace le;
  const char* fn = "le_rope";
  REQUIRE_INIT(fn);
  TRY(validate_rope(x, pos, inv_freq, N, nh, HS, rs));
  int bad[2];
  TRY(find_bad_indices(fn, pos, (int64_t)1 << 40, false, nullptr, 0, false, N, bad));
  if (bad[0] != kNoBad) return fail_bad_rope_pos(fn, bad[0], read_int(pos + bad[0]));
  LAUNCH(rope_kernel, grid_for((int64_t)N * (HS / 2), 256), 256, 0)(x, pos, inv_freq, N, nh, HS,
                                                                     rs, inverse);
  return op_done(fn);
}

LE_API int le_swiglu_fwd(float* out, const float* inp, int N, int I) {
  using namespace le;
  const char* fn = "le_swiglu_fwd";
  REQUIRE_INIT(fn);
  TRY(validate_swiglu_fwd(out, inp, N, I));
  int ld16;
  __nv_bfloat16* out16 = produce_bf16(fn, out, N, I, &ld16);
  LAUNCH(swiglu_fwd_kernel, grid_for((int64_t)N * I, 256), 256, 0)(fp32_dest(out, out16), out16,
                                                                    ld16, inp, N, I);
  return op_done(fn);
}

LE_API int le_swiglu_bwd(float* dinp, const float* inp, const float* dout, int N, int I,
                         int accumulate) {
  using namespace le;
  const char* fn = "le_swiglu_bwd";
  REQUIRE_INIT(fn);
  TRY(validate_swiglu_bwd(dinp, inp, dout, N, I));
  LAUNCH(swiglu_bwd_kernel, grid_for((int64_t)N * I, 256), 256, 0)(dinp, inp, dout, N, I,
                                                                    accumulate != 0);
  return op_done(fn);
}
