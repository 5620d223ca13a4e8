// attention_tc.cuh: the attention kernels of bf16 mode, on tensor cores (nvcuda::wmma,
// 16x16x16 bf16 products summed in fp32). Same semantics and the same two forms of output as
// attention.cuh's fp32 kernels, which describes them; these serve the statistics form
// (le_attention_*stats_*: per-row max and 1 / sum instead of stored probabilities) when the
// precision is bf16, unless LOTUS_TC_ATTENTION=0.
//
// A block of 4 warps takes 64 rows: queries of one (b, h) in the forward and the dq kernel,
// keys of one (b, key/value head) in the dkv kernel; warp w owns rows 16w .. 16w+15. The other
// side streams through shared memory 64 rows at a time. Operands are rounded to bf16 as they
// are staged (rows padded with zeros to HSP, the head size rounded up to 16, and a row pitch of
// HSP + 8 so that rows start in different banks). Each warp forms its 16 x 64 tile of scores
// with tensor cores into fp32 shared memory; then lanes 2r and 2r + 1 take row r of the tile,
// the even and the odd columns, for the softmax's arithmetic (in fp32, max and sum combined
// with one shuffle); the bf16 probabilities (or dS) go back to shared memory for the next
// product. Output and gradient accumulators are fp32 tiles in shared memory that the warp
// loads, multiplies into and stores (the forward's rows rescaled by exp(m_old - m_new) in
// between). As in attention.cuh: no atomics, every gradient element written by one thread in
// a fixed order (deterministic), D_i = sum_j p_ij dp_ij formed by the dq kernel in double.
//
// Precision: q.k, p.v, dout.v, ds.k, ds.q and p.dout take bf16 operands (q, k, v, dout as
// staged, p and ds rounded after the fp32 softmax arithmetic) with fp32 sums, as a bf16
// autocast attention does. Against the fp32 kernels, outputs and gradients differ by about
// 2^-8 relative per element (check/parity.ts's bf16 op bound).
#pragma once

#include <mma.h>

#include "attention.cuh"

namespace le {

constexpr int kTcWarps = 4;
constexpr int kTcRows = 16;                   // rows per warp (one wmma tile)
constexpr int kTcTile = kTcWarps * kTcRows;   // rows per block, and per streamed tile
constexpr int kTcSld = kTcTile + 4;           // fp32 score tile pitch (floats)
constexpr int kTcPld = kTcTile + 8;           // bf16 probability tile pitch (elements)

__host__ __device__ inline int tc_hsp(int HS) { return (HS + 15) / 16 * 16; }

// Shared memory regions of a kernel, each starting 128 bytes from the last boundary (wmma's
// pointers need 32): the same sizes on the host (total) and in the kernel (offsets).
struct TcCarve {
  size_t off = 0;
  __host__ __device__ size_t take(size_t bytes) {
    const size_t at = off;
    off += (bytes + 127) / 128 * 128;
    return at;
  }
};

// A [kTcTile][HSP + 8] bf16 tile, a [kTcTile][kTcSld] fp32 score tile, a [kTcTile][kTcPld]
// bf16 probability tile, a [kTcTile][HSP + 4] fp32 accumulator tile.
__host__ __device__ inline size_t tc_op_bytes(int HSP) { return (size_t)kTcTile * (HSP + 8) * 2; }
__host__ __device__ inline size_t tc_s_bytes() { return (size_t)kTcTile * kTcSld * 4; }
__host__ __device__ inline size_t tc_p_bytes() { return (size_t)kTcTile * kTcPld * 2; }
__host__ __device__ inline size_t tc_acc_bytes(int HSP) { return (size_t)kTcTile * (HSP + 4) * 4; }

struct TcFwdSmem {
  size_t q, k, v, s, p, o, total;
  __host__ __device__ explicit TcFwdSmem(int HSP) {
    TcCarve c;
    q = c.take(tc_op_bytes(HSP)), k = c.take(tc_op_bytes(HSP)), v = c.take(tc_op_bytes(HSP));
    s = c.take(tc_s_bytes()), p = c.take(tc_p_bytes()), o = c.take(tc_acc_bytes(HSP));
    total = c.off;
  }
};

struct TcDqSmem {
  size_t q, dout, k, v, s, ds, dq, total;
  __host__ __device__ explicit TcDqSmem(int HSP) {
    TcCarve c;
    q = c.take(tc_op_bytes(HSP)), dout = c.take(tc_op_bytes(HSP));
    k = c.take(tc_op_bytes(HSP)), v = c.take(tc_op_bytes(HSP));
    s = c.take(tc_s_bytes()), ds = c.take(tc_p_bytes()), dq = c.take(tc_acc_bytes(HSP));
    total = c.off;
  }
};

struct TcDkvSmem {
  size_t k, v, q, dout, rows, s, p, ds, dk, dv, total;
  __host__ __device__ explicit TcDkvSmem(int HSP) {
    TcCarve c;
    k = c.take(tc_op_bytes(HSP)), v = c.take(tc_op_bytes(HSP));
    q = c.take(tc_op_bytes(HSP)), dout = c.take(tc_op_bytes(HSP));
    rows = c.take(3 * kTcTile * sizeof(float));  // the query tile's m, 1 / sum and D
    s = c.take(tc_s_bytes()), p = c.take(tc_p_bytes()), ds = c.take(tc_p_bytes());
    dk = c.take(tc_acc_bytes(HSP)), dv = c.take(tc_acc_bytes(HSP));
    total = c.off;
  }
};

// Stages n rows of HS floats (row r at src(r)) into dst[r * (HSP + 8) + d] as bf16, zeros in
// the padding columns and in rows n .. kTcTile - 1; all threads of the block. A thread takes
// four channels at a time (one float4 load where the row is 16-byte aligned and holds all four,
// else scalar loads) and issues kTcStageU of those loads before it stores any: staging is
// bound by the latency of global loads, and a thread with one load in flight at a time left a
// tile's staging tens of microseconds long.
constexpr int kTcStageU = 8;
template <class Src>
__device__ inline void tc_stage(__nv_bfloat16* dst, int n, int HS, int HSP, Src src) {
  const int ld = HSP + 8, q4 = HSP / 4, total = kTcTile * q4;
  for (int e0 = threadIdx.x; e0 < total; e0 += kTcStageU * blockDim.x) {
    float4 v[kTcStageU];
#pragma unroll
    for (int u = 0; u < kTcStageU; u++) {
      const int e = e0 + u * (int)blockDim.x, r = e / q4, d = (e % q4) * 4;
      v[u] = float4{0.f, 0.f, 0.f, 0.f};
      if (e < total && r < n && d < HS) {
        const float* p = src(r) + d;
        if (d + 4 <= HS && aligned16(p)) {
          v[u] = ld4(p);
        } else {
          v[u].x = p[0];
          if (d + 1 < HS) v[u].y = p[1];
          if (d + 2 < HS) v[u].z = p[2];
          if (d + 3 < HS) v[u].w = p[3];
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kTcStageU; u++) {
      const int e = e0 + u * (int)blockDim.x, r = e / q4, d = (e % q4) * 4;
      if (e >= total) continue;
      __nv_bfloat16* o = dst + r * ld + d;
      o[0] = __float2bfloat16_rn(v[u].x);
      o[1] = __float2bfloat16_rn(v[u].y);
      o[2] = __float2bfloat16_rn(v[u].z);
      o[3] = __float2bfloat16_rn(v[u].w);
    }
  }
}

namespace wmma = nvcuda::wmma;
using TcA = wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using TcBrow = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using TcBcol = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major>;
using TcAcc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// The warp's 16 x 64 tile S = A B^T into fp32 S (pitch kTcSld): A's 16 rows and B's 64 rows
// are bf16 tiles of pitch HSP + 8, summed over HSP columns.
__device__ inline void tc_abt(float* S, const __nv_bfloat16* A, const __nv_bfloat16* B, int HSP) {
  const int ld = HSP + 8;
  for (int t = 0; t < kTcTile / 16; t++) {
    TcAcc acc;
    wmma::fill_fragment(acc, 0.f);
    for (int kk = 0; kk < HSP; kk += 16) {
      TcA a;
      TcBcol bt;
      wmma::load_matrix_sync(a, A + kk, ld);
      wmma::load_matrix_sync(bt, B + 16 * t * ld + kk, ld);
      wmma::mma_sync(acc, a, bt, acc);
    }
    wmma::store_matrix_sync(S + 16 * t, acc, kTcSld, wmma::mem_row_major);
  }
}

// The warp's 16 x HSP accumulator tile Acc (fp32, pitch HSP + 4) += P B: P's 16 rows are bf16
// of pitch kTcPld over 64 columns, B's 64 rows bf16 of pitch HSP + 8.
__device__ inline void tc_acc_pb(float* Acc, const __nv_bfloat16* P, const __nv_bfloat16* B,
                                 int HSP) {
  const int ld = HSP + 8, lda = HSP + 4;
  for (int t = 0; t < HSP; t += 16) {
    TcAcc acc;
    wmma::load_matrix_sync(acc, Acc + t, lda, wmma::mem_row_major);
    for (int kk = 0; kk < kTcTile; kk += 16) {
      TcA a;
      TcBrow bm;
      wmma::load_matrix_sync(a, P + kk, kTcPld);
      wmma::load_matrix_sync(bm, B + kk * ld + t, ld);
      wmma::mma_sync(acc, a, bm, acc);
    }
    wmma::store_matrix_sync(Acc + t, acc, lda, wmma::mem_row_major);
  }
}

// grid: B*NH*nqt blocks (64-query tiles, fastest); dynamic shared memory: TcFwdSmem(HSP).total.
// stats is nullable.
__global__ void attention_tc_fwd_kernel(float* out, __nv_bfloat16* out16, int ld16,
                                        float* stats, const float* qkv, const float* past,
                                        const uint8_t* key_valid, AttnShape s, float scale,
                                        int nqt) {
  const int HS = s.HS, HSP = tc_hsp(HS), ldh = HSP + 8, ldo = HSP + 4;
  const TcFwdSmem at(HSP);
  unsigned char* base = dyn_shared<unsigned char>();
  auto* Qs = reinterpret_cast<__nv_bfloat16*>(base + at.q);
  auto* Ks = reinterpret_cast<__nv_bfloat16*>(base + at.k);
  auto* Vs = reinterpret_cast<__nv_bfloat16*>(base + at.v);
  auto* Ss = reinterpret_cast<float*>(base + at.s);
  auto* Ps = reinterpret_cast<__nv_bfloat16*>(base + at.p);
  auto* Os = reinterpret_cast<float*>(base + at.o);
  const int qt = (int)(blockIdx.x % nqt), bh = (int)(blockIdx.x / nqt);
  const int b = bh / s.NH, h = bh % s.NH;
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  const int i0 = qt * kTcTile, nq = min(kTcTile, s.Tq - i0);
  tc_stage(Qs, nq, HS, HSP, [&](int r) {
    return qkv + ((int64_t)b * s.Tq + i0 + r) * s.QS + h * HS;
  });
  for (int e = tid; e < kTcTile * ldo; e += blockDim.x) Os[e] = 0.f;
  const uint8_t* valid = key_valid ? key_valid + (int64_t)b * s.Tk : nullptr;
  // The warp's rows; lanes 2r and 2r + 1 hold row r's state.
  const int wr0 = kTcRows * w, wn = max(0, min(kTcRows, nq - wr0));
  const int r = lane >> 1, half = lane & 1, i = i0 + wr0 + r;
  float* Sw = Ss + wr0 * kTcSld;
  float m = -INFINITY, l = 0.f;
  const int nk_max = s.Tp + i0 + nq;   // keys the block's last query sees
  const int wk_max = s.Tp + i0 + wr0 + wn;  // keys the warp's last query sees
  for (int j0 = 0; j0 < nk_max; j0 += kTcTile) {
    const int nkt = min(kTcTile, nk_max - j0);
    __syncthreads();  // the previous tile is no longer read (and Qs, Os are published)
    tc_stage(Ks, nkt, HS, HSP, [&](int k) { return key_ptr(s, qkv, past, b, h, j0 + k); });
    tc_stage(Vs, nkt, HS, HSP,
             [&](int k) { return key_ptr(s, qkv, past, b, h, j0 + k) + s.VO; });
    __syncthreads();
    if (wn == 0 || j0 >= wk_max) continue;  // warp-uniform: no key of the tile is seen
    tc_abt(Sw, Qs + wr0 * ldh, Ks, HSP);
    __syncwarp();
    float sc[kTcTile / 2], tmax = -INFINITY;
    for (int c = 0; c < kTcTile / 2; c++) {
      const int kk = 2 * c + half, j = j0 + kk;
      const bool ok = r < wn && kk < nkt && (!valid || valid[j]) && j <= s.Tp + i;
      sc[c] = ok ? Sw[r * kTcSld + kk] * scale : -INFINITY;
      tmax = fmaxf(tmax, sc[c]);
    }
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    const float mn = fmaxf(m, tmax);
    const float alpha = mn == -INFINITY ? 1.f : expf(m - mn);  // m = -inf: exp(-inf) = 0
    m = mn;
    float t = 0.f;
    for (int c = 0; c < kTcTile / 2; c++) {
      const float p = sc[c] == -INFINITY ? 0.f : expf(sc[c] - m);
      t += p;
      Ps[(wr0 + r) * kTcPld + 2 * c + half] = __float2bfloat16_rn(p);
    }
    t += __shfl_xor_sync(0xffffffffu, t, 1);  // both lanes: the same two halves, summed
    l = l * alpha + t;
    for (int d = half; d < HSP; d += 2) Os[(wr0 + r) * ldo + d] *= alpha;
    __syncwarp();
    tc_acc_pb(Os + wr0 * ldo, Ps + wr0 * kTcPld, Vs, HSP);
  }
  __syncwarp();
  // The warp writes its rows, lanes along the channels (row r's state from lane 2r).
  for (int rr = 0; rr < kTcRows; rr++) {
    const float lr = __shfl_sync(0xffffffffu, l, 2 * rr);
    const float mr = __shfl_sync(0xffffffffu, m, 2 * rr);
    if (rr >= wn) continue;
    const int ii = i0 + wr0 + rr;
    const bool none = lr == 0.f;  // no visible valid key: output 0
    const float inv = none ? 0.f : 1.f / lr;
    float* o = out + ((int64_t)b * s.Tq + ii) * s.C + h * HS;
    __nv_bfloat16* o16 = out16 ? out16 + ((int64_t)b * s.Tq + ii) * ld16 + h * HS : nullptr;
    for (int d = lane; d < HS; d += 32) {
      const float v = Os[(wr0 + rr) * ldo + d] * inv;
      o[d] = v;
      if (o16) o16[d] = __float2bfloat16_rn(v);  // common.cuh's produced operands
    }
    if (stats && lane == 0) {  // null: a chunk without gradients keeps nothing
      stats[((int64_t)bh * s.Tq + ii) * 2] = none ? -INFINITY : mr;
      stats[((int64_t)bh * s.Tq + ii) * 2 + 1] = inv;
    }
  }
}

// grid: B*NH*nqt blocks; dynamic shared memory: TcDqSmem(HSP).total. Writes D to Dg [B,NH,Tq].
__global__ void attention_tc_dq_kernel(float* dqkv, float* Dg, const float* dout,
                                       const float* stats, const uint8_t* key_valid,
                                       const float* qkv, const float* past, AttnShape s,
                                       float scale, int nqt) {
  const int HS = s.HS, HSP = tc_hsp(HS), ldh = HSP + 8, ldo = HSP + 4;
  const TcDqSmem at(HSP);
  unsigned char* base = dyn_shared<unsigned char>();
  auto* Qs = reinterpret_cast<__nv_bfloat16*>(base + at.q);
  auto* dOs = reinterpret_cast<__nv_bfloat16*>(base + at.dout);
  auto* Ks = reinterpret_cast<__nv_bfloat16*>(base + at.k);
  auto* Vs = reinterpret_cast<__nv_bfloat16*>(base + at.v);
  auto* Ss = reinterpret_cast<float*>(base + at.s);
  auto* dSs = reinterpret_cast<__nv_bfloat16*>(base + at.ds);
  auto* dQs = reinterpret_cast<float*>(base + at.dq);
  const int qt = (int)(blockIdx.x % nqt), bh = (int)(blockIdx.x / nqt);
  const int b = bh / s.NH, h = bh % s.NH;
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  const int i0 = qt * kTcTile, nq = min(kTcTile, s.Tq - i0);
  tc_stage(Qs, nq, HS, HSP, [&](int r) {
    return qkv + ((int64_t)b * s.Tq + i0 + r) * s.QS + h * HS;
  });
  tc_stage(dOs, nq, HS, HSP,
           [&](int r) { return dout + ((int64_t)b * s.Tq + i0 + r) * s.C + h * HS; });
  for (int e = tid; e < kTcTile * ldo; e += blockDim.x) dQs[e] = 0.f;
  const uint8_t* valid = key_valid ? key_valid + (int64_t)b * s.Tk : nullptr;
  const int wr0 = kTcRows * w, wn = max(0, min(kTcRows, nq - wr0));
  const int r = lane >> 1, half = lane & 1, i = i0 + wr0 + r;
  const bool row_ok = r < wn;
  const float mi = row_ok ? stats[((int64_t)bh * s.Tq + i) * 2] : 0.f;
  const float inv = row_ok ? stats[((int64_t)bh * s.Tq + i) * 2 + 1] : 0.f;
  float* Sw = Ss + wr0 * kTcSld;
  const int nk_max = s.Tp + i0 + nq, wk_max = s.Tp + i0 + wr0 + wn;
  double part = 0;
  float D = 0.f;
  for (int pass = 0; pass < 2; pass++) {
    for (int j0 = 0; j0 < nk_max; j0 += kTcTile) {
      const int nkt = min(kTcTile, nk_max - j0);
      __syncthreads();
      tc_stage(Ks, nkt, HS, HSP, [&](int k) { return key_ptr(s, qkv, past, b, h, j0 + k); });
      tc_stage(Vs, nkt, HS, HSP,
               [&](int k) { return key_ptr(s, qkv, past, b, h, j0 + k) + s.VO; });
      __syncthreads();
      if (wn == 0 || j0 >= wk_max) continue;
      // p from the recomputed scores, kept in registers; then dp into the same tile.
      tc_abt(Sw, Qs + wr0 * ldh, Ks, HSP);
      __syncwarp();
      float p[kTcTile / 2];
      for (int c = 0; c < kTcTile / 2; c++) {
        const int kk = 2 * c + half, j = j0 + kk;
        const bool ok = row_ok && kk < nkt && (!valid || valid[j]) && j <= s.Tp + i && inv != 0.f;
        p[c] = ok ? expf(Sw[r * kTcSld + kk] * scale - mi) * inv : 0.f;
      }
      __syncwarp();  // every lane has read the scores
      tc_abt(Sw, dOs + wr0 * ldh, Vs, HSP);
      __syncwarp();
      if (pass == 0) {
        for (int c = 0; c < kTcTile / 2; c++) part += (double)p[c] * Sw[r * kTcSld + 2 * c + half];
        continue;
      }
      for (int c = 0; c < kTcTile / 2; c++) {
        const float dp = Sw[r * kTcSld + 2 * c + half];
        dSs[(wr0 + r) * kTcPld + 2 * c + half] = __float2bfloat16_rn(p[c] * (dp - D) * scale);
      }
      __syncwarp();
      tc_acc_pb(dQs + wr0 * ldo, dSs + wr0 * kTcPld, Ks, HSP);
    }
    if (pass == 0) {
      D = (float)(part + __shfl_xor_sync(0xffffffffu, part, 1));  // the same sum in both lanes
      if (row_ok && half == 0) Dg[(int64_t)bh * s.Tq + i] = D;
    }
  }
  __syncwarp();
  // The warp adds its rows to dqkv, kTcStageU read-modify-writes in flight a lane.
  for (int e0 = lane; e0 < wn * HS; e0 += kTcStageU * 32) {
    float* dq[kTcStageU];
    float x[kTcStageU];
#pragma unroll
    for (int u = 0; u < kTcStageU; u++) {
      const int e = e0 + 32 * u, rr = e / HS, d = e % HS;
      dq[u] = e < wn * HS ? dqkv + ((int64_t)b * s.Tq + i0 + wr0 + rr) * s.QS + h * HS + d
                          : nullptr;
      if (dq[u]) x[u] = *dq[u];
    }
#pragma unroll
    for (int u = 0; u < kTcStageU; u++) {
      const int e = e0 + 32 * u;
      if (dq[u]) *dq[u] = x[u] + dQs[(wr0 + e / HS) * ldo + e % HS];
    }
  }
}

// grid: B*NKV*nkt blocks (64-key tiles, fastest), or NKV blocks with share_b (each walks b,
// then the key tiles, in order); dynamic shared memory: TcDkvSmem(HSP).total.
__global__ void attention_tc_dkv_kernel(float* dqkv, float* dkv_past, const float* Dg,
                                        const float* dout, const float* stats,
                                        const uint8_t* key_valid, const float* qkv,
                                        const float* past, AttnShape s, float scale,
                                        int nkt_all, bool share_b) {
  const int HS = s.HS, HSP = tc_hsp(HS), ldh = HSP + 8, ldo = HSP + 4, NKV = s.NH / s.G;
  const TcDkvSmem at(HSP);
  unsigned char* base = dyn_shared<unsigned char>();
  auto* Ks = reinterpret_cast<__nv_bfloat16*>(base + at.k);
  auto* Vs = reinterpret_cast<__nv_bfloat16*>(base + at.v);
  auto* Qs = reinterpret_cast<__nv_bfloat16*>(base + at.q);
  auto* dOs = reinterpret_cast<__nv_bfloat16*>(base + at.dout);
  auto* ms = reinterpret_cast<float*>(base + at.rows);  // [kTcTile] each
  float* invs = ms + kTcTile;
  float* Ds = invs + kTcTile;
  auto* Ss = reinterpret_cast<float*>(base + at.s);
  auto* Ps = reinterpret_cast<__nv_bfloat16*>(base + at.p);
  auto* dSs = reinterpret_cast<__nv_bfloat16*>(base + at.ds);
  auto* dKs = reinterpret_cast<float*>(base + at.dk);
  auto* dVs = reinterpret_cast<float*>(base + at.dv);
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  const int kvh = share_b ? (int)blockIdx.x : (int)(blockIdx.x / nkt_all) % NKV;
  const int b_lo = share_b ? 0 : (int)(blockIdx.x / nkt_all) / NKV;
  const int b_hi = share_b ? s.B : b_lo + 1;
  const int t_lo = share_b ? 0 : (int)(blockIdx.x % nkt_all), t_hi = share_b ? nkt_all : t_lo + 1;
  const int h_lo = kvh * s.G, h_hi = h_lo + s.G;  // the query heads that read this key head
  // The warp's 16 keys are rows of the score tiles here (S^T = K Q^T); lanes 2r and 2r + 1
  // take key r, the even and the odd queries.
  const int wr0 = kTcRows * w, r = lane >> 1, half = lane & 1;
  float* Sw = Ss + wr0 * kTcSld;
  for (int b = b_lo; b < b_hi; b++) {
    const uint8_t* valid = key_valid ? key_valid + (int64_t)b * s.Tk : nullptr;
    for (int t = t_lo; t < t_hi; t++) {
      const int j0 = t * kTcTile, nkt = min(kTcTile, s.Tk - j0);
      if (j0 + nkt <= s.Tp && !dkv_past) continue;  // past keys without a gradient
      const int wn = max(0, min(kTcRows, nkt - wr0)), j = j0 + wr0 + r;
      const bool key_ok = r < wn && (!valid || valid[j]);
      __syncthreads();  // the previous tile's results are written
      tc_stage(Ks, nkt, HS, HSP, [&](int k) { return key_ptr(s, qkv, past, b, h_lo, j0 + k); });
      tc_stage(Vs, nkt, HS, HSP,
               [&](int k) { return key_ptr(s, qkv, past, b, h_lo, j0 + k) + s.VO; });
      for (int e = tid; e < kTcTile * ldo; e += blockDim.x) dKs[e] = 0.f, dVs[e] = 0.f;
      const int i_first = j0 - s.Tp > 0 ? j0 - s.Tp : 0;  // the first query that sees key j0
      for (int h = h_lo; h < h_hi; h++) {
        const int bh = b * s.NH + h;
        for (int i0 = i_first; i0 < s.Tq; i0 += kTcTile) {
          const int nq = min(kTcTile, s.Tq - i0);
          __syncthreads();  // the previous query tile is no longer read
          tc_stage(Qs, nq, HS, HSP, [&](int q) {
            return qkv + ((int64_t)b * s.Tq + i0 + q) * s.QS + h * HS;
          });
          tc_stage(dOs, nq, HS, HSP,
                   [&](int q) { return dout + ((int64_t)b * s.Tq + i0 + q) * s.C + h * HS; });
          if (tid < kTcTile) {
            const bool in = tid < nq;
            const int64_t rr = (int64_t)bh * s.Tq + i0 + tid;
            ms[tid] = in ? stats[rr * 2] : 0.f;
            invs[tid] = in ? stats[rr * 2 + 1] : 0.f;
            Ds[tid] = in ? Dg[rr] : 0.f;
          }
          __syncthreads();
          // Warp-uniform: the warp's keys exist and some query of the tile sees the first.
          if (wn == 0 || j0 + wr0 > s.Tp + i0 + nq - 1) continue;
          tc_abt(Sw, Ks + wr0 * ldh, Qs, HSP);
          __syncwarp();
          float p[kTcTile / 2];
          for (int c = 0; c < kTcTile / 2; c++) {
            const int q = 2 * c + half, iq = i0 + q;
            const bool ok = key_ok && q < nq && j <= s.Tp + iq && invs[q] != 0.f;
            p[c] = ok ? expf(Sw[r * kTcSld + q] * scale - ms[q]) * invs[q] : 0.f;
            Ps[(wr0 + r) * kTcPld + q] = __float2bfloat16_rn(p[c]);
          }
          __syncwarp();  // every lane has read the scores
          tc_abt(Sw, Vs + wr0 * ldh, dOs, HSP);  // dp^T
          __syncwarp();
          for (int c = 0; c < kTcTile / 2; c++) {
            const int q = 2 * c + half;
            const float ds = p[c] * (Sw[r * kTcSld + q] - Ds[q]) * scale;
            dSs[(wr0 + r) * kTcPld + q] = __float2bfloat16_rn(ds);
          }
          __syncwarp();
          tc_acc_pb(dVs + wr0 * ldo, Ps + wr0 * kTcPld, dOs, HSP);
          tc_acc_pb(dKs + wr0 * ldo, dSs + wr0 * kTcPld, Qs, HSP);
        }
      }
      __syncthreads();  // every warp's accumulators are stored
      // Each element of dKs / dVs is added by one thread, kTcStageU elements (two
      // read-modify-writes each) in flight.
      for (int e0 = tid; e0 < nkt * HS; e0 += kTcStageU * blockDim.x) {
        float* dk[kTcStageU];
        float xk[kTcStageU], xv[kTcStageU];
#pragma unroll
        for (int u = 0; u < kTcStageU; u++) {
          const int e = e0 + u * (int)blockDim.x, k = e / HS, d = e % HS, jj = j0 + k;
          dk[u] = nullptr;
          if (e >= nkt * HS) continue;
          if (jj < s.Tp) {
            if (dkv_past) dk[u] = dkv_past + b * s.past_bs + jj * s.past_rs + (int64_t)kvh * HS + d;
          } else {
            dk[u] = dqkv + ((int64_t)b * s.Tq + (jj - s.Tp)) * s.QS + s.C + (int64_t)kvh * HS + d;
          }
          if (dk[u]) xk[u] = dk[u][0], xv[u] = dk[u][s.VO];
        }
#pragma unroll
        for (int u = 0; u < kTcStageU; u++) {
          const int e = e0 + u * (int)blockDim.x, k = e / HS, d = e % HS;
          if (!dk[u]) continue;
          dk[u][0] = xk[u] + dKs[k * ldo + d];
          dk[u][s.VO] = xv[u] + dVs[k * ldo + d];
        }
      }
    }
  }
}

// Whether bf16 attention runs on tensor cores (the statistics form in bf16 mode, unless
// LOTUS_TC_ATTENTION=0), and the launches.
inline bool tc_attention_on() { return g.precision == 2 && g.tc_attention; }

inline int attention_tc_fwd(const char* fn, float* out, float* stats, const float* qkv,
                            const float* kv_past, const uint8_t* key_valid, const AttnShape& s) {
  const float scale = (float)(1.0 / sqrt((double)s.HS));
  const int nqt = (s.Tq + kTcTile - 1) / kTcTile;
  const int64_t blocks = (int64_t)s.B * s.NH * nqt;
  if (blocks > 0x7fffffffLL) return fail("%s: B*NH*Tq = %lld is too large", fn, (long long)blocks);
  const size_t smem = TcFwdSmem(tc_hsp(s.HS)).total;
  TRY(attn_smem_optin(fn, attention_tc_fwd_kernel, smem));
  int ld16;
  __nv_bfloat16* out16 = produce_bf16(fn, out, (int64_t)s.B * s.Tq, s.C, &ld16);
  LAUNCH(attention_tc_fwd_kernel, (unsigned)blocks, kTcWarps * 32, smem)(
      out, out16, ld16, stats, qkv, kv_past, key_valid, s, scale, nqt);
  return 0;
}

inline int attention_tc_bwd(const char* fn, float* dqkv, float* dkv_past, const float* dout,
                            const float* stats, const uint8_t* key_valid, const float* qkv,
                            const float* kv_past, const AttnShape& s, bool share_b, float* D) {
  const float scale = (float)(1.0 / sqrt((double)s.HS));
  const int nqt = (s.Tq + kTcTile - 1) / kTcTile, nkt = (s.Tk + kTcTile - 1) / kTcTile;
  const int NKV = s.NH / s.G;
  const int64_t qblocks = (int64_t)s.B * s.NH * nqt, kblocks = (int64_t)s.B * NKV * nkt;
  const int HSP = tc_hsp(s.HS);
  const size_t smem_q = TcDqSmem(HSP).total, smem_k = TcDkvSmem(HSP).total;
  TRY(attn_smem_optin(fn, attention_tc_dq_kernel, smem_q));
  TRY(attn_smem_optin(fn, attention_tc_dkv_kernel, smem_k));
  LAUNCH(attention_tc_dq_kernel, (unsigned)qblocks, kTcWarps * 32, smem_q)(
      dqkv, D, dout, stats, key_valid, qkv, kv_past, s, scale, nqt);
  LAUNCH(attention_tc_dkv_kernel, share_b ? (unsigned)NKV : (unsigned)kblocks, kTcWarps * 32,
         smem_k)(dqkv, dkv_past, D, dout, stats, key_valid, qkv, kv_past, s, scale, nkt,
                 share_b);
  return 0;
}

}  // namespace le
