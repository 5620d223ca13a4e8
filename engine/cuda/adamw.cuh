// adamw.cuh: the squared gradient norm and the fused AdamW step.
//
// le_sumsq sums g^2 in double over kSumsqChunks fixed chunks (one block each, fixed tree),
// then one thread adds the chunk sums in order: the same bits on every run.
//
// le_adamw is one kernel per step: global-norm clip, decoupled weight decay, both moments and
// the bias-corrected update, reading each of p, g, m, v once and writing p, m, v once (PyTorch
// needs several passes for the same, or its fused kernel), and the bf16 copy of p when the
// weights have one (le_keep_bf16, weights.cuh). The clip factor comes from
// *gnorm_sq, which lives in engine (device) memory: every thread computes it from that one
// value, so the host never waits for the norm. The scalar factors are computed on the host in
// double exactly as the CPU engine computes them, so the two engines apply the same update
// formula; only fp32 rounding of the fused multiply-adds may differ.
#pragma once

#include "common.cuh"
#include "weights.cuh"

namespace le {

constexpr int kSumsqChunks = 1024;
constexpr int kSumsqThreads = 256;

__global__ void sumsq_part_kernel(double* part, const float* g, int64_t n) {
  pdl_begin();
  __shared__ double red[33];
  const int64_t c = blockIdx.x;
  const int64_t i0 = n * c / kSumsqChunks, i1 = n * (c + 1) / kSumsqChunks;
  double acc = 0;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) acc += (double)g[i] * g[i];
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) part[c] = acc;
}

__global__ void sumsq_finish_kernel(float* out, const double* part) {
  pdl_begin();
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double total = 0;
  for (int c = 0; c < kSumsqChunks; c++) total += part[c];
  out[0] = (float)total;
}

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n,
                             float one_b1, float beta2, float one_b2, float eps, float decay,
                             float step, float bc2_sqrt, const float* gnorm_sq, float max_norm,
                             __nv_bfloat16* p16) {
  pdl_begin();
  float clip = 1.f;
  if (gnorm_sq) {
    const float coef = (float)(max_norm / (sqrt((double)*gnorm_sq) + 1e-6));
    clip = fminf(1.f, coef);
  }
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const float gi = clip == 1.f ? g[i] : g[i] * clip;
    const float mi = m[i] + one_b1 * (gi - m[i]);
    const float vi = beta2 * v[i] + one_b2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float pi = p[i] * decay - step * (mi / (sqrtf(vi) / bc2_sqrt + eps));
    p[i] = pi;
    if (p16) p16[i] = __float2bfloat16_rn(pi);
  }
}

}  // namespace le

LE_API int le_sumsq(float* out, const float* gr, int64_t n) {
  using namespace le;
  const char* fn = "le_sumsq";
  REQUIRE_INIT(fn);
  TRY(validate_sumsq(out, gr, n));
  double* part = (double*)g_scr_part.get(fn, kSumsqChunks * sizeof(double));
  if (!part) return 1;
  LAUNCH(sumsq_part_kernel, kSumsqChunks, kSumsqThreads, 0)(part, gr, n);
  LAUNCH(sumsq_finish_kernel, 1, 32, 0)(out, part);
  return op_done(fn);
}

LE_API int le_adamw(float* p, const float* gr, float* m, float* v, int64_t n, float lr,
                    float beta1, float beta2, float eps, float weight_decay, int t,
                    const float* gnorm_sq, float max_norm) {
  using namespace le;
  const char* fn = "le_adamw";
  REQUIRE_INIT(fn);
  TRY(validate_adamw(p, gr, m, v, n, beta1, beta2, t, gnorm_sq, max_norm));
  if (n == 0) return 0;
  const bool clip = gnorm_sq && max_norm > 0.f;
  const float decay = 1.f - lr * weight_decay;
  const double bc1 = 1.0 - pow((double)beta1, t);
  const double bc2 = 1.0 - pow((double)beta2, t);
  const float step = (float)(lr / bc1);
  const float bc2_sqrt = (float)sqrt(bc2);
  // Weights with a bf16 copy (le_keep_bf16) get it updated here, with no pass of their own; a
  // range only partly updated here has its copy rebuilt at the next matmul instead.
  __nv_bfloat16* p16 = nullptr;
  if (WeightCopy* w = weight_copy_of(p, n); w && w->h) {
    p16 = w->h + (p - w->p);
  } else {
    wrote(p, (uint64_t)n * 4);
  }
  LAUNCH(adamw_kernel, grid_for(n, 256), 256, 0)(p, gr, m, v, n, 1.f - beta1, beta2, 1.f - beta2,
                                                 eps, decay, step, bc2_sqrt,
                                                 clip ? gnorm_sq : nullptr, max_norm, p16);
  return op_done(fn);
}
