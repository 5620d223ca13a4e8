// attention.cuh: causal multi-head attention of Tq queries against [Tp past keys ‖ own keys],
// forward and backward (the semantics are lotus_engine.h's; read them there).
//
// Key j of batch b, query head h, with NKV key/value heads (G = NH / NKV query heads share
// one: h reads key/value head kh = h / G; QS = C + 2*NKV*HS is the qkv row stride, VO the
// offset of a value from its key: C when NKV == NH, NKV*HS otherwise; Tk = Tp + Tq keys):
//   j <  Tp: kv_past + b*past_bs + j*past_rs + kh*HS      (value: VO elements later)
//   j >= Tp: qkv + (b*Tq + j - Tp)*QS + C + kh*HS         (value: VO elements later)
// Query i sees keys 0 .. Tp+i that key_valid does not mask.
//
// Fused and tiled. A thread block of 4 warps takes a tile of kQT = 16 queries of one (b, h);
// warp w owns the tile's rows w, w+4, w+8, w+12. Keys and values stream through shared memory
// in tiles of kKT = 32 rows (each row read once per block, whole rows at a time, so global
// reads are coalesced; rows are padded to HS + 1 floats so that lanes reading different rows
// hit different banks). Lane k of a warp scores key k of the tile against its warp's four
// queries (one key element read per four products), then the warp updates each row's running
// max and sum (online softmax: earlier partial sums are rescaled by exp(m_old - m_new)) and
// its output rows, lanes along the head's channels. Only the tiles that the tile's last
// query sees are visited. No shuffles: a lane reads the whole score row from shared memory
// (broadcast reads), so every lane holds the same max and sum, formed in the same order.
//
// The probabilities leave the forward in one of two forms. `att` (the ABI's [B,NH,Tq,Tk]): the
// scaled scores are written as the tiles go by, and rewritten as exp(s - m) / sum at the end,
// by the lane that wrote them. `stats` ([B,NH,Tq,2]: the row's max m and 1 / sum): the
// backward recomputes p = exp(q.k * scale - m) / sum from q and k.
//
// Backward, with ds_ij = p_ij (dp_ij - D_i) scale, dp_ij = dout_i . v_j, D_i = sum_j p_ij dp_ij:
//   dq kernel, one block per query tile: D (one pass over the key tiles, summed in double per
//     lane, then over lanes in order), then dq_i += sum_j ds_ij k_j (a second pass); D goes
//     to a small scratch [B,NH,Tq] for
//   dkv kernel, one block per key tile of a key/value head: over the group's query heads,
//     then the query tiles that see it, in order, dk_j += sum_i ds_ij q_i and
//     dv_j += sum_i p_ij dout_i, accumulated in shared memory (each element by one thread)
//     and added once into dqkv or dkv_past.
// No atomics and no stored dS: every gradient element is written by one thread in a fixed
// order. When past rows of different batch entries overlap (past_bs = 0 shares one past
// across the batch), the dkv kernel runs one block per key/value head that walks b, then the key
// tiles, in order, as the CPU engine does.
#pragma once

#include <map>
#include <utility>

#include "common.cuh"

namespace le {

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

// Key j's row of head h's key/value head (its value at + VO): in the past (rows past_rs apart,
// batches past_bs apart) for j < Tp, else in qkv. P: the fp32 rows, a bf16 copy of them
// (attention_tc.cuh), or the gradients (dkv_past and dqkv, same layouts) a backward adds to.
template <class P>
__device__ inline P key_ptr(const AttnShape& s, P qkv, P past, int64_t past_bs, int64_t past_rs,
                            int b, int h, int j) {
  const int64_t kh = (int64_t)(h / s.G) * s.HS;
  if (j < s.Tp) return past + b * past_bs + j * past_rs + kh;
  return qkv + ((int64_t)b * s.Tq + (j - s.Tp)) * s.QS + s.C + kh;
}
__device__ inline const float* key_ptr(const AttnShape& s, const float* qkv, const float* past,
                                       int b, int h, int j) {
  return key_ptr(s, qkv, past, s.past_bs, s.past_rs, b, h, j);
}

constexpr int kAttnThreads = 128;  // 4 warps
constexpr int kQT = 16;            // queries per tile: 4 per warp
constexpr int kKT = 32;            // keys per tile: one per lane

// Stages `n` rows of HS floats (row r at src(r), r < n; zeros for n <= r < rows) into
// dst[r * ld + d], all threads of the block. A thread issues kStageU loads before it stores
// any: staging is bound by the latency of global loads, not their bandwidth.
constexpr int kStageU = 8;
template <class Src>
__device__ inline void stage_rows(float* dst, int ld, int rows, int n, int HS, Src src) {
  const int total = rows * HS;
  for (int e0 = threadIdx.x; e0 < total; e0 += kStageU * blockDim.x) {
    float v[kStageU];
#pragma unroll
    for (int u = 0; u < kStageU; u++) {
      const int e = e0 + u * (int)blockDim.x, r = e / HS, d = e % HS;
      v[u] = e < total && r < n ? src(r)[d] : 0.f;
    }
#pragma unroll
    for (int u = 0; u < kStageU; u++) {
      const int e = e0 + u * (int)blockDim.x;
      if (e < total) dst[(e / HS) * ld + e % HS] = v[u];
    }
  }
}

// Dynamic shared memory of each kernel, in bytes.
inline size_t attn_fwd_smem(int HS) {
  const int ld = HS + 1;
  return (size_t)(kQT * ld + 2 * kKT * ld + kQT * kKT + kQT * HS) * sizeof(float);
}
inline size_t attn_dq_smem(int HS) {
  const int ld = HS + 1;
  return (size_t)kQT * 32 * sizeof(double) +
         (size_t)(2 * kQT * ld + 2 * kKT * ld + kQT * kKT + kQT * HS) * sizeof(float);
}
inline size_t attn_dkv_smem(int HS) {
  const int ld = HS + 1;
  return (size_t)(2 * kKT * ld + 2 * kQT * ld + 2 * kQT * kKT + 3 * kQT + 2 * kKT * HS) *
         sizeof(float);
}

// grid: B*NH*nqt blocks (query tile fastest); dynamic shared memory: attn_fwd_smem(HS).
// att and stats are each nullable.
__global__ void attention_fwd_kernel(float* out, __nv_bfloat16* out16, int ld16, float* att,
                                     float* stats, const float* qkv, const float* past,
                                     const uint8_t* key_valid, AttnShape s, float scale,
                                     int nqt) {
  pdl_begin();
  const int HS = s.HS, ld = HS + 1;
  float* Qs = dyn_shared<float>();  // [kQT][ld]
  float* Ks = Qs + kQT * ld;        // [kKT][ld]
  float* Vs = Ks + kKT * ld;        // [kKT][ld]
  float* Ss = Vs + kKT * ld;        // [kQT][kKT] scores, then unnormalised probabilities
  float* Os = Ss + kQT * kKT;       // [kQT][HS] unnormalised outputs
  const int qt = (int)(blockIdx.x % nqt), bh = (int)(blockIdx.x / nqt);
  const int b = bh / s.NH, h = bh % s.NH;
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  const int i0 = qt * kQT, nq = min(kQT, s.Tq - i0);
  stage_rows(Qs, ld, kQT, nq, HS, [&](int r) {
    return qkv + ((int64_t)b * s.Tq + i0 + r) * s.QS + h * HS;
  });
  for (int e = tid; e < kQT * HS; e += blockDim.x) Os[e] = 0.f;
  const uint8_t* valid = key_valid ? key_valid + (int64_t)b * s.Tk : nullptr;
  const int64_t row0 = ((int64_t)bh * s.Tq + i0) * s.Tk;  // att row of query i0
  float m[4], l[4];
  for (int r = 0; r < 4; r++) m[r] = -INFINITY, l[r] = 0.f;
  const int nk_max = s.Tp + i0 + nq;  // keys the tile's last query sees
  for (int j0 = 0; j0 < nk_max; j0 += kKT) {
    const int nkt = min(kKT, nk_max - j0);
    __syncthreads();  // the previous tile is no longer read (and Qs, Os are published)
    stage_rows(Ks, ld, kKT, nkt, HS, [&](int r) { return key_ptr(s, qkv, past, b, h, j0 + r); });
    stage_rows(Vs, ld, kKT, nkt, HS,
               [&](int r) { return key_ptr(s, qkv, past, b, h, j0 + r) + s.VO; });
    __syncthreads();
    const int j = j0 + lane;
    const bool key_ok = lane < nkt && (!valid || valid[j]);
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    for (int d = 0; d < HS; d++) {
      const float kd = Ks[lane * ld + d];
      for (int r = 0; r < 4; r++) acc[r] += Qs[(w + 4 * r) * ld + d] * kd;
    }
    float sc[4], alpha[4];
    for (int r = 0; r < 4; r++) {
      const int row = w + 4 * r;
      const bool ok = key_ok && row < nq && j <= s.Tp + i0 + row;
      sc[r] = ok ? acc[r] * scale : -INFINITY;
      Ss[row * kKT + lane] = sc[r];
      if (att && row < nq && lane < nkt) att[row0 + (int64_t)row * s.Tk + j] = sc[r];
    }
    __syncwarp();
    for (int r = 0; r < 4; r++) {
      const float* srow = Ss + (w + 4 * r) * kKT;
      float tmax = -INFINITY;
      for (int k = 0; k < kKT; k++) tmax = fmaxf(tmax, srow[k]);
      const float mn = fmaxf(m[r], tmax);
      alpha[r] = mn == -INFINITY ? 1.f : expf(m[r] - mn);  // m = -inf: exp(-inf) = 0
      m[r] = mn;
    }
    __syncwarp();  // every lane has read the scores
    for (int r = 0; r < 4; r++) {
      Ss[(w + 4 * r) * kKT + lane] = sc[r] == -INFINITY ? 0.f : expf(sc[r] - m[r]);
    }
    __syncwarp();
    for (int r = 0; r < 4; r++) {
      const float* prow = Ss + (w + 4 * r) * kKT;
      float t = 0.f;
      for (int k = 0; k < kKT; k++) t += prow[k];
      l[r] = l[r] * alpha[r] + t;
    }
    for (int d = lane; d < HS; d += 32) {
      float o[4];
      for (int r = 0; r < 4; r++) o[r] = Os[(w + 4 * r) * HS + d] * alpha[r];
      for (int k = 0; k < nkt; k++) {
        const float vd = Vs[k * ld + d];
        for (int r = 0; r < 4; r++) o[r] += Ss[(w + 4 * r) * kKT + k] * vd;
      }
      for (int r = 0; r < 4; r++) Os[(w + 4 * r) * HS + d] = o[r];
    }
  }
  // A row's state and its Os entries belong to its warp's lanes: no block barrier needed.
  for (int r = 0; r < 4; r++) {
    const int row = w + 4 * r, i = i0 + row;
    if (row >= nq) continue;
    const bool none = l[r] == 0.f;  // no visible valid key: output 0, probabilities 0
    const float inv = none ? 0.f : 1.f / l[r];
    float* o = out + ((int64_t)b * s.Tq + i) * s.C + h * HS;
    __nv_bfloat16* o16 = out16 ? out16 + ((int64_t)b * s.Tq + i) * ld16 + h * HS : nullptr;
    for (int d = lane; d < HS; d += 32) {
      const float v = Os[row * HS + d] * inv;
      o[d] = v;
      if (o16) o16[d] = __float2bfloat16_rn(v);  // common.cuh's produced operands
    }
    if (att) {
      // Lane j % 32 wrote score j above: each lane rewrites its own.
      float* a = att + row0 + (int64_t)row * s.Tk;
      const int nk = s.Tp + i + 1;
      for (int jj = lane; jj < s.Tk; jj += 32) {
        a[jj] = !none && jj < nk ? expf(a[jj] - m[r]) * inv : 0.f;
      }
    }
    if (stats && lane == 0) {
      stats[((int64_t)bh * s.Tq + i) * 2] = none ? -INFINITY : m[r];
      stats[((int64_t)bh * s.Tq + i) * 2 + 1] = inv;
    }
  }
}

// p and dp of the calling lane's key (j0 + lane) for its warp's four rows (queries i0 + row).
// Ks (recomputing from stats), Vs, Qs (recomputing), dOs and the rows' (m, inv) in ms/invs are
// staged. Rows or keys outside the tile get p = 0.
struct AttnP {
  const float* att;
  const float* stats_m;  // shared [kQT]: the rows' max (stats mode)
  const float* stats_inv;
  const uint8_t* valid;
};

__device__ inline void tile_p_dp(float p[4], float dp[4], const AttnShape& s, const AttnP& ap,
                                 int bh, int i0, int nq, int j0, int nkt, const float* Qs,
                                 const float* Ks, const float* Vs, const float* dOs, float scale) {
  const int HS = s.HS, ld = HS + 1, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int j = j0 + lane;
  float a[4] = {0.f, 0.f, 0.f, 0.f}, q[4] = {0.f, 0.f, 0.f, 0.f};
  const bool recompute = ap.att == nullptr;
  for (int d = 0; d < HS; d++) {
    const float vd = Vs[lane * ld + d];
    for (int r = 0; r < 4; r++) a[r] += dOs[(w + 4 * r) * ld + d] * vd;
  }
  if (recompute) {
    for (int d = 0; d < HS; d++) {
      const float kd = Ks[lane * ld + d];
      for (int r = 0; r < 4; r++) q[r] += Qs[(w + 4 * r) * ld + d] * kd;
    }
  }
  const bool key_ok = lane < nkt && (!ap.valid || ap.valid[j]);
  for (int r = 0; r < 4; r++) {
    const int row = w + 4 * r, i = i0 + row;
    dp[r] = a[r];
    if (row >= nq || lane >= nkt) {
      p[r] = 0.f;
    } else if (!recompute) {
      p[r] = ap.att[((int64_t)bh * s.Tq + i) * s.Tk + j];
    } else {
      const float inv = ap.stats_inv[row];
      p[r] = key_ok && j <= s.Tp + i && inv != 0.f
                 ? expf(q[r] * scale - ap.stats_m[row]) * inv
                 : 0.f;
    }
  }
}

// grid: B*NH*nqt blocks; dynamic shared memory: attn_dq_smem(HS). Writes D to Dg [B,NH,Tq].
__global__ void attention_bwd_dq_kernel(float* dqkv, float* Dg, const float* dout,
                                        const float* att, const float* stats,
                                        const uint8_t* key_valid, const float* qkv,
                                        const float* past, AttnShape s, float scale, int nqt) {
  pdl_begin();
  const int HS = s.HS, ld = HS + 1;
  double* Dd = dyn_shared<double>();               // [kQT][32] per-lane partial D
  float* Qs = reinterpret_cast<float*>(Dd + kQT * 32);  // [kQT][ld]
  float* dOs = Qs + kQT * ld;                      // [kQT][ld]
  float* Ks = dOs + kQT * ld;                      // [kKT][ld]
  float* Vs = Ks + kKT * ld;                       // [kKT][ld]
  float* dSs = Vs + kKT * ld;                      // [kQT][kKT]
  float* dQs = dSs + kQT * kKT;                    // [kQT][HS]
  __shared__ float ms[kQT], invs[kQT];
  const int qt = (int)(blockIdx.x % nqt), bh = (int)(blockIdx.x / nqt);
  const int b = bh / s.NH, h = bh % s.NH;
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  const int i0 = qt * kQT, nq = min(kQT, s.Tq - i0);
  const bool recompute = att == nullptr;
  stage_rows(dOs, ld, kQT, nq, HS,
             [&](int r) { return dout + ((int64_t)b * s.Tq + i0 + r) * s.C + h * HS; });
  stage_rows(Qs, ld, kQT, nq, HS,
             [&](int r) { return qkv + ((int64_t)b * s.Tq + i0 + r) * s.QS + h * HS; });
  for (int e = tid; e < kQT * HS; e += blockDim.x) dQs[e] = 0.f;
  if (tid < kQT) {
    const bool in = recompute && tid < nq;
    ms[tid] = in ? stats[((int64_t)bh * s.Tq + i0 + tid) * 2] : 0.f;
    invs[tid] = in ? stats[((int64_t)bh * s.Tq + i0 + tid) * 2 + 1] : 0.f;
  }
  const AttnP ap{att, ms, invs, key_valid ? key_valid + (int64_t)b * s.Tk : nullptr};
  const int nk_max = s.Tp + i0 + nq;
  float p[4], dp[4], D[4];
  double part[4] = {0, 0, 0, 0};
  for (int pass = 0; pass < 2; pass++) {
    for (int j0 = 0; j0 < nk_max; j0 += kKT) {
      const int nkt = min(kKT, nk_max - j0);
      __syncthreads();
      if (recompute || pass == 1) {
        stage_rows(Ks, ld, kKT, nkt, HS,
                   [&](int r) { return key_ptr(s, qkv, past, b, h, j0 + r); });
      }
      stage_rows(Vs, ld, kKT, nkt, HS,
                 [&](int r) { return key_ptr(s, qkv, past, b, h, j0 + r) + s.VO; });
      __syncthreads();
      tile_p_dp(p, dp, s, ap, bh, i0, nq, j0, nkt, Qs, Ks, Vs, dOs, scale);
      if (pass == 0) {
        for (int r = 0; r < 4; r++) part[r] += (double)p[r] * dp[r];
        continue;
      }
      for (int r = 0; r < 4; r++) dSs[(w + 4 * r) * kKT + lane] = p[r] * (dp[r] - D[r]) * scale;
      __syncwarp();
      for (int d = lane; d < HS; d += 32) {
        float acc[4];
        for (int r = 0; r < 4; r++) acc[r] = dQs[(w + 4 * r) * HS + d];
        for (int k = 0; k < nkt; k++) {
          const float kd = Ks[k * ld + d];
          for (int r = 0; r < 4; r++) acc[r] += dSs[(w + 4 * r) * kKT + k] * kd;
        }
        for (int r = 0; r < 4; r++) dQs[(w + 4 * r) * HS + d] = acc[r];
      }
    }
    if (pass == 0) {
      for (int r = 0; r < 4; r++) Dd[(w + 4 * r) * 32 + lane] = part[r];
      __syncwarp();
      for (int r = 0; r < 4; r++) {
        double t = 0;
        for (int k = 0; k < 32; k++) t += Dd[(w + 4 * r) * 32 + k];
        D[r] = (float)t;
        const int row = w + 4 * r;
        if (lane == 0 && row < nq) Dg[(int64_t)bh * s.Tq + i0 + row] = D[r];
      }
    }
  }
  for (int r = 0; r < 4; r++) {
    const int row = w + 4 * r;
    if (row >= nq) continue;
    float* dq = dqkv + ((int64_t)b * s.Tq + i0 + row) * s.QS + h * HS;
    for (int d = lane; d < HS; d += 32) dq[d] += dQs[row * HS + d];
  }
}

// grid: B*NKV*nkt blocks (key tile fastest), or NKV blocks with share_b (each walks b, then
// the key tiles, in order); dynamic shared memory: attn_dkv_smem(HS).
__global__ void attention_bwd_dkv_kernel(float* dqkv, float* dkv_past, const float* Dg,
                                         const float* dout, const float* att, const float* stats,
                                         const uint8_t* key_valid, const float* qkv,
                                         const float* past, AttnShape s, float scale, int nkt_all,
                                         bool share_b) {
  pdl_begin();
  const int HS = s.HS, ld = HS + 1, NKV = s.NH / s.G;
  float* Ks = dyn_shared<float>();  // [kKT][ld]
  float* Vs = Ks + kKT * ld;        // [kKT][ld]
  float* Qs = Vs + kKT * ld;        // [kQT][ld]
  float* dOs = Qs + kQT * ld;       // [kQT][ld]
  float* Ps = dOs + kQT * ld;       // [kQT][kKT]
  float* dSs = Ps + kQT * kKT;      // [kQT][kKT]
  float* Ds = dSs + kQT * kKT;      // [kQT]
  float* ms = Ds + kQT;             // [kQT]
  float* invs = ms + kQT;           // [kQT]
  float* dKs = invs + kQT;          // [kKT][HS]
  float* dVs = dKs + kKT * HS;      // [kKT][HS]
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  const bool recompute = att == nullptr;
  const int kvh = share_b ? (int)blockIdx.x : (int)(blockIdx.x / nkt_all) % NKV;
  const int b_lo = share_b ? 0 : (int)(blockIdx.x / nkt_all) / NKV;
  const int b_hi = share_b ? s.B : b_lo + 1;
  const int t_lo = share_b ? 0 : (int)(blockIdx.x % nkt_all), t_hi = share_b ? nkt_all : t_lo + 1;
  const int h_lo = kvh * s.G, h_hi = h_lo + s.G;  // the query heads that read this key head
  for (int b = b_lo; b < b_hi; b++) {
    const AttnP ap{att, ms, invs, key_valid ? key_valid + (int64_t)b * s.Tk : nullptr};
    for (int t = t_lo; t < t_hi; t++) {
      const int j0 = t * kKT, nkt = min(kKT, s.Tk - j0);
      if (j0 + nkt <= s.Tp && !dkv_past) continue;  // past keys without a gradient
      __syncthreads();  // the previous tile's results are written
      stage_rows(Ks, ld, kKT, nkt, HS,
                 [&](int r) { return key_ptr(s, qkv, past, b, h_lo, j0 + r); });
      stage_rows(Vs, ld, kKT, nkt, HS,
                 [&](int r) { return key_ptr(s, qkv, past, b, h_lo, j0 + r) + s.VO; });
      for (int e = tid; e < kKT * HS; e += blockDim.x) dKs[e] = 0.f, dVs[e] = 0.f;
      const int i_first = j0 - s.Tp > 0 ? j0 - s.Tp : 0;  // the first query that sees key j0
      for (int h = h_lo; h < h_hi; h++) {
        const int bh = b * s.NH + h;
        for (int i0 = i_first; i0 < s.Tq; i0 += kQT) {
          const int nq = min(kQT, s.Tq - i0);
          __syncthreads();  // the previous query tile is no longer read
          stage_rows(Qs, ld, kQT, nq, HS,
                     [&](int r) { return qkv + ((int64_t)b * s.Tq + i0 + r) * s.QS + h * HS; });
          stage_rows(dOs, ld, kQT, nq, HS,
                     [&](int r) { return dout + ((int64_t)b * s.Tq + i0 + r) * s.C + h * HS; });
          if (tid < kQT) {
            const bool in = tid < nq;
            const int64_t rr = (int64_t)bh * s.Tq + i0 + tid;
            Ds[tid] = in ? Dg[rr] : 0.f;
            ms[tid] = in && recompute ? stats[rr * 2] : 0.f;
            invs[tid] = in && recompute ? stats[rr * 2 + 1] : 0.f;
          }
          __syncthreads();
          float p[4], dp[4];
          tile_p_dp(p, dp, s, ap, bh, i0, nq, j0, nkt, Qs, Ks, Vs, dOs, scale);
          for (int r = 0; r < 4; r++) {
            const int row = w + 4 * r;
            Ps[row * kKT + lane] = p[r];
            dSs[row * kKT + lane] = p[r] * (dp[r] - Ds[row]) * scale;
          }
          __syncthreads();
          for (int e = tid; e < kKT * HS; e += blockDim.x) {
            const int k = e / HS, d = e % HS;
            float ak = dKs[e], av = dVs[e];
            for (int r = 0; r < nq; r++) {
              ak += dSs[r * kKT + k] * Qs[r * ld + d];
              av += Ps[r * kKT + k] * dOs[r * ld + d];
            }
            dKs[e] = ak, dVs[e] = av;
          }
        }
      }
      // Each element of dKs / dVs is added by the thread that summed it.
      for (int e = tid; e < nkt * HS; e += blockDim.x) {
        const int k = e / HS, d = e % HS, j = j0 + k;
        if (j < s.Tp && !dkv_past) continue;
        float* dk = key_ptr(s, dqkv, dkv_past, s.past_bs, s.past_rs, b, h_lo, j);
        dk[d] += dKs[e];
        dk[s.VO + d] += dVs[e];
      }
    }
  }
}

// Raises a kernel's dynamic shared memory limit when it needs more than the default: 48 KiB
// less the kernel's static shared memory (at most 128 bytes here, attention_bwd_dq_kernel's),
// so anything over 47 KiB opts in. The limit only ever rises (the most a launch of the kernel
// on this device has asked for): a CUDA graph recorded with a launch of one size is replayed
// after launches of others, and a limit lowered since would refuse its node.
inline std::map<std::pair<int, const void*>, size_t> g_smem_optin;
template <class K>
inline int attn_smem_optin(const char* fn, K kernel, size_t bytes) {
  if (bytes <= 47 * 1024) return 0;
  if (bytes > 227 * 1024) {
    return fail("%s: a head size of this size needs %zu bytes of shared memory per block, "
                "over the GPU's 227 KiB",
                fn, bytes);
  }
  size_t& set = g_smem_optin[{g.device, reinterpret_cast<const void*>(kernel)}];
  if (bytes <= set) return 0;
  CUDA_TRY(fn, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)bytes));
  set = bytes;
  return 0;
}

// bf16 mode's tensor-core kernels for the statistics form (attention_tc.cuh, which the
// engine includes after this file). b16: qkv and kv_past are bf16 storage.
inline bool tc_attention_on(const AttnShape& s);
inline int attention_tc_fwd(const char* fn, float* out, float* stats, const float* qkv,
                            const float* kv_past, const uint8_t* key_valid, const AttnShape& s,
                            bool b16);
inline int attention_tc_bwd(const char* fn, float* dqkv, float* dkv_past, const float* dout,
                            const float* out, const float* stats, const uint8_t* key_valid,
                            const float* qkv, const float* kv_past, const AttnShape& s,
                            bool share_b, float* D, bool b16);

__global__ void widen_bf16_kernel(float* out, const __nv_bfloat16* in, int64_t n) {
  pdl_begin();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    out[i] = __bfloat162float(in[i]);
  }
}

// qkv and the past from bf16 storage, for the fp32 kernels (precision modes 0 and 1, head sizes
// over 128, LOTUS_TC_ATTENTION=0): widened into g_scr_c in the same layout (the past's span from
// its first element, so that its strides, which dkv_past shares, stay as they are). Exact: the
// kernels see the values stored.
inline int widen_qkv(const char* fn, const float** qkv, const float** past, const AttnShape& s) {
  const int64_t nq = (int64_t)s.B * s.Tq * s.QS;
  const int64_t np = (int64_t)past_elements(s.B, s.Tp, s.past_bs, s.past_rs, s.QS - s.C);
  float* wide = (float*)g_scr_c.get(fn, (size_t)(nq + np) * sizeof(float));
  if (!wide) return 1;
  LAUNCH(widen_bf16_kernel, grid_for(nq, 256), 256, 0)(wide, as_bf16(*qkv), nq);
  if (np > 0) {
    LAUNCH(widen_bf16_kernel, grid_for(np, 256), 256, 0)(wide + nq, as_bf16(*past), np);
  }
  *qkv = wide;
  *past = np > 0 ? wide + nq : *past;
  return 0;
}

// The forward: att and stats each nullable (the ABI functions pass one of them); b16: qkv and
// kv_past are bf16 storage (the statistics forms only).
inline int attention_fwd(const char* fn, float* out, float* att, float* stats, const float* qkv,
                         const float* kv_past, const uint8_t* key_valid, const AttnShape& s,
                         bool b16 = false) {
  const float scale = (float)(1.0 / sqrt((double)s.HS));
  const int nqt = (s.Tq + kQT - 1) / kQT;
  const int64_t blocks = (int64_t)s.B * s.NH * nqt;
  if (blocks > 0x7fffffffLL) return fail("%s: B*NH*Tq = %lld is too large", fn, (long long)blocks);
  if (att == nullptr && tc_attention_on(s)) {
    return attention_tc_fwd(fn, out, stats, qkv, kv_past, key_valid, s, b16);
  }
  if (b16) TRY(widen_qkv(fn, &qkv, &kv_past, s));
  const size_t smem = attn_fwd_smem(s.HS);
  TRY(attn_smem_optin(fn, attention_fwd_kernel, smem));
  int ld16;
  __nv_bfloat16* out16 = produce_bf16(fn, out, (int64_t)s.B * s.Tq, s.C, &ld16);
  LAUNCH(attention_fwd_kernel, (unsigned)blocks, kAttnThreads, smem)(
      out, out16, ld16, att, stats, qkv, kv_past, key_valid, s, scale, nqt);
  return 0;
}

// The backward from att (out, stats and key_valid null) or from out (the forward's output),
// stats and key_valid (att null). The fp32 kernels form D from p and dp; the tensor-core
// kernels from dout and out.
inline int attention_bwd(const char* fn, float* dqkv, float* dkv_past, const float* dout,
                         const float* out, const float* att, const float* stats,
                         const uint8_t* key_valid, const float* qkv, const float* kv_past,
                         const AttnShape& s, bool b16 = false) {
  const float scale = (float)(1.0 / sqrt((double)s.HS));
  const int nqt = (s.Tq + kQT - 1) / kQT, nkt = (s.Tk + kKT - 1) / kKT;
  const int NKV = s.NH / s.G;
  const int64_t qblocks = (int64_t)s.B * s.NH * nqt, kblocks = (int64_t)s.B * NKV * nkt;
  if (qblocks > 0x7fffffffLL || kblocks > 0x7fffffffLL) {
    return fail("%s: B*NH*(Tq+Tp) = %lld is too large", fn, (long long)kblocks);
  }
  float* D = (float*)g_scr_ds.get(fn, mul(mul(mul(s.B, s.NH), s.Tq), 4));
  if (!D) return 1;
  const bool share_b = s.Tp > 0 && dkv_past && s.B > 1 &&
                       s.past_bs < (int64_t)(s.Tp - 1) * s.past_rs + 2 * s.VO;
  if (att == nullptr && tc_attention_on(s)) {
    return attention_tc_bwd(fn, dqkv, dkv_past, dout, out, stats, key_valid, qkv, kv_past, s,
                            share_b, D, b16);
  }
  if (b16) TRY(widen_qkv(fn, &qkv, &kv_past, s));
  const size_t smem_q = attn_dq_smem(s.HS), smem_k = attn_dkv_smem(s.HS);
  TRY(attn_smem_optin(fn, attention_bwd_dq_kernel, smem_q));
  TRY(attn_smem_optin(fn, attention_bwd_dkv_kernel, smem_k));
  LAUNCH(attention_bwd_dq_kernel, (unsigned)qblocks, kAttnThreads, smem_q)(
      dqkv, D, dout, att, stats, key_valid, qkv, kv_past, s, scale, nqt);
  LAUNCH(attention_bwd_dkv_kernel, share_b ? (unsigned)NKV : (unsigned)kblocks, kAttnThreads,
         smem_k)(dqkv, dkv_past, D, dout, att, stats, key_valid, qkv, kv_past, s, scale, nkt,
                 share_b);
  return 0;
}

}  // namespace le

LE_API int le_attention_fwd(float* out, float* att, const float* qkv, const float* kv_past,
                            const uint8_t* key_valid, int B, int Tq, int Tp, int C, int NH,
                            int64_t past_bs, int64_t past_rs) {
  using namespace le;
  const char* fn = "le_attention_fwd";
  REQUIRE_INIT(fn);
  TRY(validate_attention_fwd(out, att, qkv, kv_past, key_valid, B, Tq, Tp, C, NH, past_bs,
                             past_rs));
  const AttnShape s = attn_shape(B, Tq, Tp, C, NH, NH, past_bs, past_rs);
  TRY(attention_fwd(fn, out, att, nullptr, qkv, kv_past, key_valid, s));
  return op_done(fn);
}

LE_API int le_attention_bwd(float* dqkv, float* dkv_past, const float* dout, const float* att,
                            const float* qkv, const float* kv_past, int B, int Tq, int Tp, int C,
                            int NH, int64_t past_bs, int64_t past_rs) {
  using namespace le;
  const char* fn = "le_attention_bwd";
  REQUIRE_INIT(fn);
  TRY(validate_attention_bwd(dqkv, dkv_past, dout, att, qkv, kv_past, B, Tq, Tp, C, NH, past_bs,
                             past_rs));
  const AttnShape s = attn_shape(B, Tq, Tp, C, NH, NH, past_bs, past_rs);
  TRY(attention_bwd(fn, dqkv, dkv_past, dout, nullptr, att, nullptr, nullptr, qkv, kv_past, s));
  return op_done(fn);
}

LE_API int le_attention_stats_fwd(float* out, float* stats, const float* qkv,
                                  const float* kv_past, const uint8_t* key_valid, int B, int Tq,
                                  int Tp, int C, int NH, int64_t past_bs, int64_t past_rs) {
  using namespace le;
  const char* fn = "le_attention_stats_fwd";
  REQUIRE_INIT(fn);
  TRY(validate_attention_stats_fwd(out, stats, qkv, kv_past, key_valid, B, Tq, Tp, C, NH,
                                   past_bs, past_rs));
  const AttnShape s = attn_shape(B, Tq, Tp, C, NH, NH, past_bs, past_rs);
  TRY(attention_fwd(fn, out, nullptr, stats, qkv, kv_past, key_valid, s, in_bf16_block(qkv)));
  return op_done(fn);
}

LE_API int le_attention_stats_bwd(float* dqkv, float* dkv_past, const float* dout,
                                  const float* out, const float* stats, const uint8_t* key_valid,
                                  const float* qkv, const float* kv_past, int B, int Tq, int Tp,
                                  int C, int NH, int64_t past_bs, int64_t past_rs) {
  using namespace le;
  const char* fn = "le_attention_stats_bwd";
  REQUIRE_INIT(fn);
  TRY(validate_attention_stats_bwd(dqkv, dkv_past, dout, out, stats, key_valid, qkv, kv_past, B,
                                   Tq, Tp, C, NH, past_bs, past_rs));
  const AttnShape s = attn_shape(B, Tq, Tp, C, NH, NH, past_bs, past_rs);
  TRY(attention_bwd(fn, dqkv, dkv_past, dout, out, nullptr, stats, key_valid, qkv, kv_past, s,
                    in_bf16_block(qkv)));
  return op_done(fn);
}

LE_API int le_attention_gqa_fwd(float* out, float* att, const float* qkv, const float* kv_past,
                                const uint8_t* key_valid, int B, int Tq, int Tp, int C, int NH,
                                int NKV, int64_t past_bs, int64_t past_rs) {
  using namespace le;
  const char* fn = "le_attention_gqa_fwd";
  REQUIRE_INIT(fn);
  TRY(validate_attention_gqa_fwd(out, att, qkv, kv_past, key_valid, B, Tq, Tp, C, NH, NKV,
                                 past_bs, past_rs));
  const AttnShape s = attn_shape(B, Tq, Tp, C, NH, NKV, past_bs, past_rs);
  TRY(attention_fwd(fn, out, att, nullptr, qkv, kv_past, key_valid, s));
  return op_done(fn);
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
  const AttnShape s = attn_shape(B, Tq, Tp, C, NH, NKV, past_bs, past_rs);
  TRY(attention_bwd(fn, dqkv, dkv_past, dout, nullptr, att, nullptr, nullptr, qkv, kv_past, s));
  return op_done(fn);
}

LE_API int le_attention_gqa_stats_fwd(float* out, float* stats, const float* qkv,
                                      const float* kv_past, const uint8_t* key_valid, int B,
                                      int Tq, int Tp, int C, int NH, int NKV, int64_t past_bs,
                                      int64_t past_rs) {
  using namespace le;
  const char* fn = "le_attention_gqa_stats_fwd";
  REQUIRE_INIT(fn);
  TRY(validate_attention_gqa_stats_fwd(out, stats, qkv, kv_past, key_valid, B, Tq, Tp, C, NH,
                                       NKV, past_bs, past_rs));
  const AttnShape s = attn_shape(B, Tq, Tp, C, NH, NKV, past_bs, past_rs);
  TRY(attention_fwd(fn, out, nullptr, stats, qkv, kv_past, key_valid, s, in_bf16_block(qkv)));
  return op_done(fn);
}

LE_API int le_attention_gqa_stats_bwd(float* dqkv, float* dkv_past, const float* dout,
                                      const float* out, const float* stats,
                                      const uint8_t* key_valid, const float* qkv,
                                      const float* kv_past, int B, int Tq, int Tp, int C, int NH,
                                      int NKV, int64_t past_bs, int64_t past_rs) {
  using namespace le;
  const char* fn = "le_attention_gqa_stats_bwd";
  REQUIRE_INIT(fn);
  TRY(validate_attention_gqa_stats_bwd(dqkv, dkv_past, dout, out, stats, key_valid, qkv, kv_past,
                                       B, Tq, Tp, C, NH, NKV, past_bs, past_rs));
  const AttnShape s = attn_shape(B, Tq, Tp, C, NH, NKV, past_bs, past_rs);
  TRY(attention_bwd(fn, dqkv, dkv_past, dout, out, nullptr, stats, key_valid, qkv, kv_past, s,
                    in_bf16_block(qkv)));
  return op_done(fn);
}
