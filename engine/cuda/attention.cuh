// attention.cuh: causal multi-head attention of Tq queries against [Tp past keys ‖ own keys],
// forward and backward (the semantics are lotus_engine.h's; read them there).
//
// Key j of batch b, head h (Tk = Tp + Tq keys):
//   j <  Tp: kv_past + b*past_bs + j*past_rs + h*HS      (value: C elements later)
//   j >= Tp: qkv + (b*Tq + j - Tp)*3C + C + h*HS         (value: C elements later)
// Query i sees keys 0 .. Tp+i that key_valid does not mask.
//
// The simple version: one thread block per (b, h, query i). The block writes the query's
// scores straight into its row of `att` (an output anyway, so no shared-memory limit on Tk),
// reduces max and sum, normalises in place, then each thread forms one output channel as a
// sum over keys in order. Softmax sums are in double, as in the CPU engine.
//
// Backward, with p = att row, dp_j = dout_i . v_j, ds_j = p_j (dp_j - sum_j p_j dp_j) * scale:
//   kernel 1, one block per (b, h, i): dp, ds (kept in scratch [B, NH, Tq, Tk]) and
//             dq_i += sum_j ds_j k_j;
//   kernel 2, one block per (b, h, key j): dk_j += sum_i ds_ij q_i, dv_j += sum_i p_ij dout_i,
//             over the queries that see j, in order, added once into dqkv or dkv_past.
// No atomics: every gradient element is written by one thread in a fixed order. When past
// rows of different batch entries overlap (past_bs = 0 shares one past across the batch),
// kernel 2 runs one block per head that walks b, then j, in order, as the CPU engine does.
#pragma once

#include "common.cuh"

namespace le {

// G = NH / NKV query heads share a key/value head (grouped-query attention; G = 1 for
// le_attention_*); QS is the qkv row stride (3C, or C + 2Ckv) and VO the offset of a value
// from its key (C, or Ckv).
struct AttnShape {
  int B, Tq, Tp, C, NH, HS, Tk;
  int64_t past_bs, past_rs;
  int G;
  int64_t QS, VO;
};

inline AttnShape attn_shape(int B, int Tq, int Tp, int C, int NH, int NKV, int64_t past_bs,
                            int64_t past_rs) {
  const int HS = C / NH;
  const int64_t ckv = (int64_t)HS * NKV;
  return AttnShape{B, Tq, Tp, C, NH, HS, Tq + Tp, past_bs, past_rs, NH / NKV, C + 2 * ckv,
                   NKV == NH ? (int64_t)C : ckv};
}

__device__ inline const float* key_ptr(const AttnShape& s, const float* qkv, const float* past,
                                       int b, int h, int j) {
  const int64_t kh = (int64_t)(h / s.G) * s.HS;
  if (j < s.Tp) return past + b * s.past_bs + j * s.past_rs + kh;
  return qkv + ((int64_t)b * s.Tq + (j - s.Tp)) * s.QS + s.C + kh;
}

__device__ inline float dot_hs(const float* a, const float* b, int HS) {
  float s = 0.f;
  for (int d = 0; d < HS; d++) s += a[d] * b[d];
  return s;
}

constexpr int kAttnThreads = 128;

// grid: B*NH*Tq blocks; dynamic shared memory: HS floats (the query).
__global__ void attention_fwd_kernel(float* out, float* att, const float* qkv, const float* past,
                                     const uint8_t* key_valid, AttnShape s, float scale) {
  float* q = dyn_shared<float>();
  __shared__ double dred[33];
  __shared__ float fred[33];
  const int64_t blk = blockIdx.x;
  const int i = (int)(blk % s.Tq);
  const int bh = (int)(blk / s.Tq);
  const int b = bh / s.NH, h = bh % s.NH;
  const int tid = threadIdx.x, nt = blockDim.x;
  const float* qrow = qkv + ((int64_t)b * s.Tq + i) * s.QS + h * s.HS;
  for (int d = tid; d < s.HS; d += nt) q[d] = qrow[d];
  __syncthreads();
  float* a = att + (((int64_t)b * s.NH + h) * s.Tq + i) * s.Tk;
  float* o = out + ((int64_t)b * s.Tq + i) * s.C + h * s.HS;
  const uint8_t* valid = key_valid ? key_valid + (int64_t)b * s.Tk : nullptr;
  const int nk = s.Tp + i + 1;

  float m = -INFINITY;
  for (int j = tid; j < nk; j += nt) {
    const bool ok = !valid || valid[j];
    const float v = ok ? dot_hs(q, key_ptr(s, qkv, past, b, h, j), s.HS) * scale : -INFINITY;
    a[j] = v;
    if (ok) m = fmaxf(m, v);
  }
  m = block_max(m, fred);  // its __syncthreads also publishes the scores
  if (m == -INFINITY) {    // no visible valid key: output 0, probabilities 0
    for (int j = tid; j < s.Tk; j += nt) a[j] = 0.f;
    for (int d = tid; d < s.HS; d += nt) o[d] = 0.f;
    return;
  }
  double sum = 0;
  for (int j = tid; j < nk; j += nt) {
    const float e = expf(a[j] - m);  // masked: exp(-inf) = 0
    a[j] = e;
    sum += e;
  }
  sum = block_sum(sum, dred);
  const float inv = (float)(1.0 / sum);
  for (int j = tid; j < s.Tk; j += nt) a[j] = j < nk ? a[j] * inv : 0.f;
  __syncthreads();
  for (int d = tid; d < s.HS; d += nt) {
    float acc = 0.f;
    for (int j = 0; j < nk; j++) {
      const float w = a[j];
      if (w != 0.f) acc += w * key_ptr(s, qkv, past, b, h, j)[s.VO + d];
    }
    o[d] = acc;
  }
}

// Kernel 1 of the backward. grid: B*NH*Tq blocks; dynamic shared memory: HS floats (dout_i).
__global__ void attention_bwd_query_kernel(float* dqkv, float* ds_all, const float* dout,
                                           const float* att, const float* qkv, const float* past,
                                           AttnShape s, float scale) {
  float* dsh = dyn_shared<float>();
  __shared__ double dred[33];
  const int64_t blk = blockIdx.x;
  const int i = (int)(blk % s.Tq);
  const int bh = (int)(blk / s.Tq);
  const int b = bh / s.NH, h = bh % s.NH;
  const int tid = threadIdx.x, nt = blockDim.x;
  const float* drow = dout + ((int64_t)b * s.Tq + i) * s.C + h * s.HS;
  for (int d = tid; d < s.HS; d += nt) dsh[d] = drow[d];
  __syncthreads();
  const int64_t row = (((int64_t)b * s.NH + h) * s.Tq + i) * s.Tk;
  const float* a = att + row;
  float* ds = ds_all + row;
  const int nk = s.Tp + i + 1;
  double tf = 0;
  for (int j = tid; j < nk; j += nt) {
    const float dp = dot_hs(dsh, key_ptr(s, qkv, past, b, h, j) + s.VO, s.HS);
    ds[j] = dp;
    tf += (double)a[j] * dp;
  }
  const float t = (float)block_sum(tf, dred);
  for (int j = tid; j < s.Tk; j += nt) ds[j] = j < nk ? a[j] * (ds[j] - t) * scale : 0.f;
  __syncthreads();
  float* dq = dqkv + ((int64_t)b * s.Tq + i) * s.QS + h * s.HS;
  for (int d = tid; d < s.HS; d += nt) {
    float acc = 0.f;
    for (int j = 0; j < nk; j++) {
      const float w = ds[j];
      if (w != 0.f) acc += w * key_ptr(s, qkv, past, b, h, j)[d];
    }
    dq[d] += acc;
  }
}

// Kernel 2 of the backward. grid: (Tk, NKV, B), one block per key of a key/value head; the
// G query heads that share it are summed in order. With share_b (past rows of different batch
// entries overlap) the grid is (1, NKV, 1) and each block walks b, then j, in order: the CPU
// engine's order, and no two blocks touch the same row.
__global__ void attention_bwd_key_kernel(float* dqkv, float* dkv_past, const float* ds_all,
                                         const float* dout, const float* att, const float* qkv,
                                         AttnShape s, bool share_b) {
  const int kvh = blockIdx.y;
  const int b_lo = share_b ? 0 : (int)blockIdx.z, b_hi = share_b ? s.B : b_lo + 1;
  const int j_lo = share_b ? 0 : (int)blockIdx.x, j_hi = share_b ? s.Tk : j_lo + 1;
  for (int b = b_lo; b < b_hi; b++) {
    for (int j = j_lo; j < j_hi; j++) {
      if (j < s.Tp && !dkv_past) continue;
      float* dk = j < s.Tp
                      ? dkv_past + b * s.past_bs + j * s.past_rs + (int64_t)kvh * s.HS
                      : dqkv + ((int64_t)b * s.Tq + (j - s.Tp)) * s.QS + s.C + (int64_t)kvh * s.HS;
      const int i0 = j - s.Tp > 0 ? j - s.Tp : 0;
      for (int d = threadIdx.x; d < s.HS; d += blockDim.x) {
        float ak = 0.f, av = 0.f;
        for (int h = kvh * s.G; h < (kvh + 1) * s.G; h++) {
          const float* q0 = qkv + (int64_t)b * s.Tq * s.QS + h * s.HS;
          const float* d0 = dout + (int64_t)b * s.Tq * s.C + h * s.HS;
          const int64_t base = ((int64_t)b * s.NH + h) * s.Tq * s.Tk + j;
          for (int i = i0; i < s.Tq; i++) {
            const float wk = ds_all[base + (int64_t)i * s.Tk], wv = att[base + (int64_t)i * s.Tk];
            if (wk == 0.f && wv == 0.f) continue;
            ak += wk * q0[(int64_t)i * s.QS + d];
            av += wv * d0[(int64_t)i * s.C + d];
          }
        }
        dk[d] += ak;
        dk[s.VO + d] += av;
      }
      // Overlapping rows: the next (b, j) may touch what other threads just wrote.
      if (share_b) __syncthreads();
    }
  }
}

}  // namespace le

static int attention_fwd(const char* fn, float* out, float* att, const float* qkv,
                         const float* kv_past, const uint8_t* key_valid, const le::AttnShape& s) {
  using namespace le;
  const float scale = (float)(1.0 / sqrt((double)s.HS));
  const int64_t blocks = (int64_t)s.B * s.NH * s.Tq;
  if (blocks > 0x7fffffffLL) return fail("%s: B*NH*Tq = %lld is too large", fn, (long long)blocks);
  LAUNCH(attention_fwd_kernel, (unsigned)blocks, kAttnThreads, s.HS * sizeof(float))(
      out, att, qkv, kv_past, key_valid, s, scale);
  return op_done(fn);
}

static int attention_bwd(const char* fn, float* dqkv, float* dkv_past, const float* dout,
                         const float* att, const float* qkv, const float* kv_past,
                         const le::AttnShape& s) {
  using namespace le;
  const int B = s.B, NH = s.NH, NKV = s.NH / s.G, Tq = s.Tq, Tp = s.Tp;
  const uint64_t att_bytes = mul(mul(mul(mul(B, NH), Tq), s.Tk), 4);  // dS has att's shape
  const float scale = (float)(1.0 / sqrt((double)s.HS));
  const int64_t blocks = (int64_t)B * NH * Tq;
  if (blocks > 0x7fffffffLL) return fail("%s: B*NH*Tq = %lld is too large", fn, (long long)blocks);
  if (s.Tk > 0x7fffffff || NH > 65535 || B > 65535) {
    return fail("%s: Tk = %d, NH = %d or B = %d is too large for the grid", fn, s.Tk, NH, B);
  }
  float* ds = (float*)g_scr_ds.get(fn, att_bytes);
  if (!ds) return 1;
  const bool share_b =
      Tp > 0 && dkv_past && B > 1 && s.past_bs < (int64_t)(Tp - 1) * s.past_rs + 2 * s.VO;
  LAUNCH(attention_bwd_query_kernel, (unsigned)blocks, kAttnThreads, s.HS * sizeof(float))(
      dqkv, ds, dout, att, qkv, kv_past, s, scale);
  dim3 grid(share_b ? 1u : (unsigned)s.Tk, (unsigned)NKV, share_b ? 1u : (unsigned)B);
  const int threads = s.HS < 128 ? ((s.HS + 31) / 32) * 32 : 128;
  LAUNCH(attention_bwd_key_kernel, grid, threads, 0)(dqkv, dkv_past, ds, dout, att, qkv, s,
                                                      share_b);
  return op_done(fn);
}

LE_API int le_attention_fwd(float* out, float* att, const float* qkv, const float* kv_past,
                            const uint8_t* key_valid, int B, int Tq, int Tp, int C, int NH,
                            int64_t past_bs, int64_t past_rs) {
  using namespace le;
  const char* fn = "le_attention_fwd";
  REQUIRE_INIT(fn);
  TRY(validate_attention_fwd(out, att, qkv, kv_past, key_valid, B, Tq, Tp, C, NH, past_bs,
                             past_rs));
  return attention_fwd(fn, out, att, qkv, kv_past, key_valid,
                       attn_shape(B, Tq, Tp, C, NH, NH, past_bs, past_rs));
}

LE_API int le_attention_bwd(float* dqkv, float* dkv_past, const float* dout, const float* att,
                            const float* qkv, const float* kv_past, int B, int Tq, int Tp, int C,
                            int NH, int64_t past_bs, int64_t past_rs) {
  using namespace le;
  const char* fn = "le_attention_bwd";
  REQUIRE_INIT(fn);
  TRY(validate_attention_bwd(dqkv, dkv_past, dout, att, qkv, kv_past, B, Tq, Tp, C, NH, past_bs,
                             past_rs));
  return attention_bwd(fn, dqkv, dkv_past, dout, att, qkv, kv_past,
                       attn_shape(B, Tq, Tp, C, NH, NH, past_bs, past_rs));
}

LE_API int le_attention_gqa_fwd(float* out, float* att, const float* qkv, const float* kv_past,
                                const uint8_t* key_valid, int B, int Tq, int Tp, int C, int NH,
                                int NKV, int64_t past_bs, int64_t past_rs) {
  using namespace le;
  const char* fn = "le_attention_gqa_fwd";
  REQUIRE_INIT(fn);
  TRY(validate_attention_gqa_fwd(out, att, qkv, kv_past, key_valid, B, Tq, Tp, C, NH, NKV,
                                 past_bs, past_rs));
  return attention_fwd(fn, out, att, qkv, kv_past, key_valid,
                       attn_shape(B, Tq, Tp, C, NH, NKV, past_bs, past_rs));
}

LE_API int le_attention_gqa_bwd(float* dqkv, float* dkv_past, const float* dout,
                                const float* att, const float* qkv, const float* kv_past, int B,
                                int Tq, int Tp, int C, int NH, int NKV, int64_t past_bs,
                                int64_t past_rs) {
  using namespace le;
  const char* fn = "le_attention_gqa_bwd";
  REQUIRE_INIT(fn);
  TRY(validate_attention_gqa_bwd(dqkv, dkv_past, dout, att, qkv, kv_past, B, Tq, Tp, C, NH, NKV,
                                 past_bs, past_rs));
  return attention_bwd(fn, dqkv, dkv_past, dout, att, qkv, kv_past,
                       attn_shape(B, Tq, Tp, C, NH, NKV, past_bs, past_rs));
}
