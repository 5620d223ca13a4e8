// xent.cuh: fused softmax + cross-entropy (loss and logits gradient in one pass over the
// row), and argmax.
//
// One block per row. losses[n] = logsumexp(x) - x[t], with the sum of exponentials in double
// (as in the CPU engine). With dscale != 0 the row is overwritten in place with
// dscale * (softmax - onehot): the logits never need a second buffer, and the LM head's
// backward reads the gradient where the logits were. p_t - 1 is formed before scaling, which
// keeps it accurate when p_t is close to 1.
//
// Targets >= V are an error found on the device before anything is written; the first
// offending row comes back to the host for the message.
//
// argmax: each thread keeps the best (value, lowest index) of its strided slice, NaN never
// winning; the block combines them with the same rule. That gives the lowest index of the
// maximum, as the CPU engine's left-to-right strict comparison does, and V-1 for a row that
// is all NaN.
#pragma once

#include "common.cuh"

namespace le {

constexpr int kRowThreads = 256;

// grad: write the gradient, scaled by *dscale_at when given (read here, so that a replayed
// graph uses what was uploaded since), else by dscale.
__global__ void xent_kernel(float* logits, float* losses, const int32_t* targets, int V,
                            bool grad, float dscale, const float* dscale_at) {
  pdl_begin();
  __shared__ double dred[33];
  __shared__ float fred[33];
  const int64_t n = blockIdx.x;
  float* x = logits + n * V;
  const int t = targets[n];
  const int tid = threadIdx.x, nt = blockDim.x;
  if (grad && dscale_at) dscale = *dscale_at;
  if (t < 0) {
    if (tid == 0) losses[n] = 0.f;
    if (grad)
      for (int v = tid; v < V; v += nt) x[v] = 0.f;
    return;
  }
  float m = -INFINITY;
  for (int v = tid; v < V; v += nt) m = fmaxf(m, x[v]);
  m = block_max(m, fred);
  double sum = 0;
  for (int v = tid; v < V; v += nt) sum += expf(x[v] - m);
  sum = block_sum(sum, dred);
  const float xt = x[t];
  if (tid == 0) losses[n] = (float)((double)m + log(sum) - (double)xt);
  if (grad) {
    const float k = (float)(1.0 / sum);
    const float pt_minus_1 = expf(xt - m) * k - 1.f;
    __syncthreads();  // everyone has read x[t] before it is overwritten
    for (int v = tid; v < V; v += nt) {
      x[v] = v == t ? dscale * pt_minus_1 : dscale * (expf(x[v] - m) * k);
    }
  }
}

__device__ inline bool better(float v, int i, float bv, int bi) {
  if (isnan(v)) return false;
  if (bi < 0 || isnan(bv)) return true;
  return v > bv || (v == bv && i < bi);
}

__global__ void argmax_kernel(int32_t* out, const float* logits, int V) {
  pdl_begin();
  __shared__ float sv[kRowThreads];
  __shared__ int si[kRowThreads];
  const int64_t n = blockIdx.x;
  const float* x = logits + n * V;
  const int tid = threadIdx.x;
  float bv = NAN;
  int bi = -1;
  for (int v = tid; v < V; v += blockDim.x) {
    if (better(x[v], v, bv, bi)) bv = x[v], bi = v;
  }
  sv[tid] = bv;
  si[tid] = bi;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (tid < stride) {
      const float ov = sv[tid + stride];
      const int oi = si[tid + stride];
      if (oi >= 0 && better(ov, oi, sv[tid], si[tid])) sv[tid] = ov, si[tid] = oi;
    }
    __syncthreads();
  }
  if (tid == 0) out[n] = si[0] >= 0 ? si[0] : V - 1;
}

}  // namespace le

LE_API int le_xent_fwd_bwd(float* logits, float* losses, const int32_t* targets, int N, int V,
                           float dscale, const float* dscale_at) {
  using namespace le;
  const char* fn = "le_xent_fwd_bwd";
  REQUIRE_INIT(fn);
  TRY(validate_xent_fwd_bwd(logits, losses, targets, N, V, dscale_at));
  int bad[2] = {kNoBad, kNoBad};
  TRY(find_bad_indices(fn, targets, V, true, nullptr, 0, false, N, bad));
  if (bad[0] != kNoBad) return fail_bad_target(fn, bad[0], read_int(targets + bad[0]), V);
  LAUNCH(xent_kernel, (unsigned)N, kRowThreads, 0)(logits, losses, targets, V, dscale != 0.f, dscale,
                                                          dscale_at);
  return op_done(fn);
}

LE_API int le_argmax(int32_t* out, const float* logits, int N, int V) {
  using namespace le;
  const char* fn = "le_argmax";
  REQUIRE_INIT(fn);
  TRY(validate_argmax(out, logits, N, V));
  if (N > 0) forget_checked(out, (uint64_t)N * 4);  // (0 bytes would mean everything)
  LAUNCH(argmax_kernel, (unsigned)N, kRowThreads, 0)(out, logits, V);
  // Its outputs are token ids in [0, V) by construction: feeding them to the next decoding
  // step's embedding needs no check.
  if (N > 0) remember_checked(out, N, V, false);
  return op_done(fn);
}
