// layernorm.cuh: LayerNorm forward (plain, and fused with the residual add) and backward.
//
// out = (x - mean) * rstd * w + b, rstd = 1/sqrt(var + 1e-5), var biased: GPT-2's LayerNorm.
// One warp per row. As in the CPU engine, the statistics are computed in double with two
// passes (mean, then the squared deviations: no cancellation), then rounded to float for the
// normalisation, which is done in fp32.
//
// The fused residual forward writes resid = a + b and normalises it in the same pass: the
// row is read once instead of being written by one kernel and read back by the next. Each
// lane reads and writes the same elements, so resid may alias a or b.
//
// Backward, per row: dnorm = dout * w,
//   dinp += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))   (sums in double)
// and, over rows: dw += sum_n dout * norm, db += sum_n dout. Those two column sums would
// race across rows, so they run in two deterministic stages: fixed chunks of rows
// give double partial sums, which a second kernel adds up in chunk order.
#pragma once

#include "common.cuh"

namespace le {

constexpr double kLnEps = 1e-5;
constexpr int kLnRowsPerBlock = 8;  // 8 warps

// Normalises row x into o (and saves mean/rstd) with one warp.
__device__ inline void layernorm_row_warp(float* o, float* mean, float* rstd, const float* x,
                                          const float* w, const float* b, int C, int lane) {
  double s = 0;
  for (int c = lane; c < C; c += 32) s += x[c];
  s = warp_sum(s);
  const double m = __shfl_sync(0xffffffffu, s, 0) / C;
  double v = 0;
  for (int c = lane; c < C; c += 32) {
    const double d = x[c] - m;
    v += d * d;
  }
  v = warp_sum(v);
  const double var = __shfl_sync(0xffffffffu, v, 0) / C;
  const float mf = (float)m, rs = (float)(1.0 / sqrt(var + kLnEps));
  for (int c = lane; c < C; c += 32) o[c] = (x[c] - mf) * rs * w[c] + b[c];
  if (lane == 0) {
    if (mean) *mean = mf;
    if (rstd) *rstd = rs;
  }
}

__global__ void layernorm_fwd_kernel(float* out, float* mean, float* rstd, const float* inp,
                                     const float* w, const float* b, int N, int C) {
  const int n = blockIdx.x * kLnRowsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;
  const int64_t off = (int64_t)n * C;
  layernorm_row_warp(out + off, mean ? mean + n : nullptr, rstd ? rstd + n : nullptr, inp + off,
                     w, b, C, threadIdx.x & 31);
}

__global__ void residual_layernorm_fwd_kernel(float* resid, float* out, float* mean, float* rstd,
                                              const float* a, const float* bb, const float* w,
                                              const float* bias, int N, int C) {
  const int n = blockIdx.x * kLnRowsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;
  const int lane = threadIdx.x & 31;
  const int64_t off = (int64_t)n * C;
  for (int c = lane; c < C; c += 32) resid[off + c] = a[off + c] + bb[off + c];
  __syncwarp();
  layernorm_row_warp(out + off, mean ? mean + n : nullptr, rstd ? rstd + n : nullptr,
                     resid + off, w, bias, C, lane);
}

__global__ void layernorm_bwd_dinp_kernel(float* dinp, const float* dout, const float* inp,
                                          const float* w, const float* mean, const float* rstd,
                                          int N, int C) {
  const int n = blockIdx.x * kLnRowsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;
  const int lane = threadIdx.x & 31;
  const int64_t off = (int64_t)n * C;
  const float* x = inp + off;
  const float* d = dout + off;
  const float m = mean[n], rs = rstd[n];
  double s1 = 0, s2 = 0;
  for (int c = lane; c < C; c += 32) {
    const float dn = d[c] * w[c];
    s1 += dn;
    s2 += (double)dn * ((x[c] - m) * rs);
  }
  s1 = warp_sum(s1);
  s2 = warp_sum(s2);
  const float a = (float)(__shfl_sync(0xffffffffu, s1, 0) / C);
  const float bb = (float)(__shfl_sync(0xffffffffu, s2, 0) / C);
  float* dx = dinp + off;
  for (int c = lane; c < C; c += 32) {
    const float norm = (x[c] - m) * rs;
    dx[c] += (d[c] * w[c] - a - norm * bb) * rs;
  }
}

// Stage 1 of dw/db: grid (ceil(C/128), chunks). partw/partb [chunks, C] (nullable each).
__global__ void layernorm_bwd_part_kernel(double* partw, double* partb, const float* dout,
                                          const float* inp, const float* mean, const float* rstd,
                                          int N, int C, int chunk) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int n0 = blockIdx.y * chunk, n1 = min(N, n0 + chunk);
  double aw = 0, ab = 0;
  for (int n = n0; n < n1; n++) {
    const int64_t i = (int64_t)n * C + c;
    const float d = dout[i];
    aw += (double)d * ((inp[i] - mean[n]) * rstd[n]);
    ab += d;
  }
  const int64_t k = (int64_t)blockIdx.y * C + c;
  if (partw) partw[k] = aw;
  if (partb) partb[k] = ab;
}

}  // namespace le

LE_API int le_layernorm_fwd(float* out, float* mean, float* rstd, const float* inp,
                            const float* w, const float* b, int N, int C) {
  using namespace le;
  const char* fn = "le_layernorm_fwd";
  REQUIRE_INIT(fn);
  TRY(validate_layernorm_fwd(out, mean, rstd, inp, w, b, N, C));
  const unsigned blocks = (unsigned)((N + kLnRowsPerBlock - 1) / kLnRowsPerBlock);
  LAUNCH(layernorm_fwd_kernel, blocks, 32 * kLnRowsPerBlock, 0)(out, mean, rstd, inp, w, b, N,
                                                                C);
  return op_done(fn);
}

LE_API int le_layernorm_bwd(float* dinp, float* dw, float* db, const float* dout,
                            const float* inp, const float* w, const float* mean,
                            const float* rstd, int N, int C) {
  using namespace le;
  const char* fn = "le_layernorm_bwd";
  REQUIRE_INIT(fn);
  TRY(validate_layernorm_bwd(dinp, dw, db, dout, inp, w, mean, rstd, N, C));
  double* part = nullptr;
  const int chunk = col_chunk_rows(N), chunks = (N + chunk - 1) / chunk;
  if (dw || db) {
    part = (double*)g_scr_part.get(fn, 2 * (size_t)chunks * C * sizeof(double));
    if (!part) return 1;
  }
  if (dinp) {
    const unsigned blocks = (unsigned)((N + kLnRowsPerBlock - 1) / kLnRowsPerBlock);
    LAUNCH(layernorm_bwd_dinp_kernel, blocks, 32 * kLnRowsPerBlock, 0)(
        dinp, dout, inp, w, mean, rstd, N, C);
  }
  if (dw || db) {
    double* partw = dw ? part : nullptr;
    double* partb = db ? part + (size_t)chunks * C : nullptr;
    dim3 grid((C + 127) / 128, chunks);
    LAUNCH(layernorm_bwd_part_kernel, grid, 128, 0)(partw, partb, dout, inp, mean, rstd, N, C,
                                                    chunk);
    if (dw) LAUNCH(colsum_finish_kernel, (C + 127) / 128, 128, 0)(dw, partw, chunks, C);
    if (db) LAUNCH(colsum_finish_kernel, (C + 127) / 128, 128, 0)(db, partb, chunks, C);
  }
  return op_done(fn);
}

LE_API int le_residual_layernorm_fwd(float* resid, float* out, float* mean, float* rstd,
                                     const float* a, const float* b, const float* w,
                                     const float* bias, int N, int C) {
  using namespace le;
  const char* fn = "le_residual_layernorm_fwd";
  REQUIRE_INIT(fn);
  TRY(validate_residual_layernorm_fwd(resid, out, mean, rstd, a, b, w, bias, N, C));
  const unsigned blocks = (unsigned)((N + kLnRowsPerBlock - 1) / kLnRowsPerBlock);
  LAUNCH(residual_layernorm_fwd_kernel, blocks, 32 * kLnRowsPerBlock, 0)(
      resid, out, mean, rstd, a, b, w, bias, N, C);
  return op_done(fn);
}
