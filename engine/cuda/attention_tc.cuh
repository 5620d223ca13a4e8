// attention_tc.cuh: the attention kernels of bf16 mode, on tensor cores (mma.sync m16n8k16,
// bf16 operands summed in fp32; common.cuh's mma_bf16_16816). Same semantics and the same
// statistics form as attention.cuh's fp32 kernels, which describes them; these serve
// le_attention_*stats_* when the precision is bf16 and the head size is at most 128, unless
// LOTUS_TC_ATTENTION=0.
//
// Flash-style: scores, probabilities, dS and every accumulator live in registers. A block of W
// warps owns 16 W rows (queries of one (b, h) in the forward and the dq kernel, keys of one (b,
// key/value head) in the dkv kernel), warp w rows 16w .. 16w + 15, with W from 4 to 8 sized to the
// sequence (tc_warps) so that the other side is staged once for all of a short sequence's rows;
// that side streams through shared memory NC rows at a time (NC = 64, or 32 when the head size is
// over 64, to bound the registers). A row's result does not depend on W: its sums run over the same
// streamed tiles and 16-row slices, in the same order. Operands are rounded to bf16 as they are
// staged (rows padded with zeros to HSP, the head size rounded up to 16, at a pitch of HSP + 8
// elements so that the fragment loads of a warp hit 32 different banks). A warp forms its 16 x NC
// scores with mma.sync: lane (g, t) holds rows g and g + 8, columns 2t, 2t + 1 of each 8-column
// tile, so a row's max and sum combine over the four lanes of a group (two shuffles). The
// accumulator layout of two adjacent 8-column tiles is the A operand layout of a 16-column slice,
// so the probabilities (and dS) are packed to bf16 in registers and go straight into the next
// product, P V (dS K, P^T dout, dS^T q), without a trip through shared memory. The forward's output
// rows are rescaled by exp(m_old - m_new) in registers (online softmax) and each thread's partial
// row sum is combined over its group once at the end.
//
// Every kernel streams its tiles one step ahead: while a step's products run, the next step's
// tile is on its way into shared memory by cp.async, which holds no register, and a step waits
// only for what the previous step's products did not cover. The backward's kernels copy the
// bf16 rows into a second buffer of bf16 tiles (tc_stage_ahead); the forward lands fp32 rows in an
// fp32 buffer and rounds them into its bf16 tiles when their step comes (tc_land, tc_unland), and
// copies rows in bf16 storage (le_alloc_bf16) as the backward does, into two tile pairs.
// LOTUS_TC_AHEAD=0 waits for the next tile before the products instead:
// the same bits, the staging's latency exposed again (a measurement's before).
//
// Shared memory per block, at HSP = 64 and W = 4: 59 KiB (forward; 45 KiB from bf16 storage),
// 54 KiB (dq), 56 KiB (dkv),
// where kernels that keep the scores and accumulators in shared memory need 70 to 106 KiB;
// 2.25 KiB (forward) or 4.5 KiB (dq, dkv) more a warp over 4. Registers bound the blocks a
// multiprocessor holds (__launch_bounds__ below: 128 a thread in the forward, 168 in dq and
// dkv): 4 or 3 blocks of 4 warps, 3 or 2 of 5, to hide what latency remains; the forward's
// shared memory allows 3 blocks of 4 or 5 warps (227 KiB a multiprocessor on the H200).
//
// As in attention.cuh: no atomics, every gradient element written by one thread in a fixed
// order (deterministic), the probabilities recomputed from the forward's statistics. D_i =
// sum_j p_ij dp_ij is formed by the dq kernel as dout_i . out_i (equal, as out_i = sum_j p_ij
// v_j), summed in double from the fp32 rows, rather than by a first pass over the keys that
// would repeat both score products.
//
// The backward first rounds its rows (qkv, the past, dout) into packed bf16 copies, once a call
// (attention_tc_bwd_at), and its kernels stage those: every block that stages a row would
// otherwise round it again, from twice the bytes. LOTUS_TC_BF16_ROWS=0 stages the fp32 rows;
// the bits are the same. qkv and a past in bf16 storage are staged as stored, and only dout is
// rounded (attention_tc_bwd_b16).
//
// Precision: q.k, p.v, dout.v, ds.k, ds.q and p.dout take bf16 operands (q, k, v, dout as
// staged, p and ds rounded after the fp32 softmax arithmetic) with fp32 sums, as a bf16
// autocast attention does. Against the fp32 kernels, outputs and gradients differ by about
// 2^-8 relative per element (check/parity.ts's bf16 op bound).
#pragma once

#include <type_traits>

#include "attention.cuh"

namespace le {

constexpr int kTcRows = 16;  // rows per warp (one m16 tile)
// Warps a block: at least kTcMinWarps (the staging's loads in flight), at most the kernel's
// register budget allows at two blocks a multiprocessor (the forward keeps 128 registers a
// thread, the dq and dkv kernels 168), and at most g.tc_max_warps (tc_warps).
constexpr int kTcMinWarps = 4;
constexpr int kTcFwdWarps = 8;
constexpr int kTcBwdWarps = 6;

// The warps of each block over n rows (a block's own side: queries of a (b, h), keys of a
// (b, key/value head)), at most max_w: one block when n rows fit, else the fewest blocks,
// filled evenly, each at least kTcMinWarps. A loop pass's 79 queries take one block of 5
// warps, where 64-row blocks took two, the second with 15 rows: its keys and values staged
// again for a warp's work.
inline int tc_warps(int64_t n, int max_w) {
  max_w = std::max(kTcMinWarps, std::min(max_w, g.tc_max_warps));
  const int64_t r16 = (n + kTcRows - 1) / kTcRows, blocks = (r16 + max_w - 1) / max_w;
  const int64_t w = blocks > 0 ? (r16 + blocks - 1) / blocks : 1;
  return (int)std::max<int64_t>(kTcMinWarps, std::min<int64_t>(max_w, w));
}

// The head size rounded up to a kernel instance (16, 32, 64 or 128); 0 when over 128.
__host__ __device__ inline int tc_hsp(int HS) {
  return HS <= 16 ? 16 : HS <= 32 ? 32 : HS <= 64 ? 64 : HS <= 128 ? 128 : 0;
}
// Rows of the streamed side per step.
__host__ __device__ constexpr int tc_cols(int HSP) { return HSP <= 64 ? 64 : 32; }

// Dynamic shared memory: `own` rows and 2 * NC streamed rows of bf16 at pitch HSP + 8, then
// `extra` bytes.
__host__ __device__ inline size_t tc_smem(int HSP, int own, size_t extra) {
  return (size_t)(own + 2 * tc_cols(HSP)) * (HSP + 8) * 2 + extra;
}

// Stages n rows of HS elements (row r at src(r): fp32, or bf16 already rounded) into
// dst[r * (HSP + 8) + d] as bf16, zeros in the padding columns and in rows n .. rows - 1; all
// threads of the block. A thread takes 16 bytes of a row at a time (four fp32 or eight bf16
// channels: one vector load where the row is 16-byte aligned and holds them all, else scalar
// loads) and issues TcSrc<T>::U of those loads (eight fp32, four bf16) before it stores any:
// staging is bound by the latency of global loads, and a thread with one load in flight at a
// time left a tile's staging tens of microseconds long. tc_stage2 stages two such tiles of the
// same rows (keys and values, queries and dout) with the loads of both in flight together: a
// tile pair costs one round trip to memory where tc_stage twice costs two. From bf16 rows a
// thread needs half the loads for a tile, so the same registers hold a pair.
template <class T>
struct TcSrc;  // how a staging thread reads 16 bytes of T
template <>
struct TcSrc<float> {
  static constexpr int V = 4;  // channels a load
  static constexpr int U = 8;  // loads in flight
  using Raw = float4;
};
template <>
struct TcSrc<__nv_bfloat16> {
  static constexpr int V = 8;
  static constexpr int U = 4;
  using Raw = uint4;
};
// Element e of a staging pass: its row and first channel.
struct TcElem {
  int r, d;
};
template <class T>
__device__ inline TcElem tc_elem(int e, int HSP) {
  constexpr int V = TcSrc<T>::V;
  return {e / (HSP / V), (e % (HSP / V)) * V};
}
template <class T, class Src>
__device__ inline typename TcSrc<T>::Raw tc_load(Src src, TcElem x, bool in, int n, int HS) {
  constexpr int V = TcSrc<T>::V;
  typename TcSrc<T>::Raw v{};
  if (in && x.r < n && x.d < HS) {
    const T* p = src(x.r) + x.d;
    if (x.d + V <= HS && aligned16(p)) {
      v = *reinterpret_cast<const typename TcSrc<T>::Raw*>(p);
    } else {  // element by element into an array of T (not through a T* into v: aliasing)
      T e[V] = {};
      for (int i = 0; i < V && x.d + i < HS; i++) e[i] = p[i];
      memcpy(&v, e, sizeof v);
    }
  }
  return v;
}
__device__ inline void tc_store(__nv_bfloat16* dst, TcElem x, int ld, float4 v) {
  __nv_bfloat16* o = dst + x.r * ld + x.d;
  o[0] = __float2bfloat16_rn(v.x);
  o[1] = __float2bfloat16_rn(v.y);
  o[2] = __float2bfloat16_rn(v.z);
  o[3] = __float2bfloat16_rn(v.w);
}
// A 16-byte group stored as loaded: 8 bf16 (already rounded), or 4 fp32 (a landing buffer).
__device__ inline void tc_put(__nv_bfloat16* o, uint4 v) { *reinterpret_cast<uint4*>(o) = v; }
__device__ inline void tc_put(float* o, float4 v) { st4(o, v); }
__device__ inline void tc_store(__nv_bfloat16* dst, TcElem x, int ld, uint4 v) {
  tc_put(dst + x.r * ld + x.d, v);  // pitch and channel 16-byte aligned
}
template <class T, class Src>
__device__ inline void tc_stage(__nv_bfloat16* dst, int rows, int n, int HS, int HSP, Src src) {
  constexpr int U = TcSrc<T>::U;
  const int ld = HSP + 8, total = rows * (HSP / TcSrc<T>::V);
  for (int e0 = threadIdx.x; e0 < total; e0 += U * blockDim.x) {
    typename TcSrc<T>::Raw v[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int e = e0 + u * (int)blockDim.x;
      v[u] = tc_load<T>(src, tc_elem<T>(e, HSP), e < total, n, HS);
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int e = e0 + u * (int)blockDim.x;
      if (e < total) tc_store(dst, tc_elem<T>(e, HSP), ld, v[u]);
    }
  }
}
template <class T, class Src1, class Src2>
__device__ inline void tc_stage2(__nv_bfloat16* dst1, __nv_bfloat16* dst2, int rows, int n,
                                 int HS, int HSP, Src1 src1, Src2 src2) {
  constexpr int U = TcSrc<T>::U;
  const int ld = HSP + 8, total = rows * (HSP / TcSrc<T>::V);
  for (int e0 = threadIdx.x; e0 < total; e0 += U * blockDim.x) {
    typename TcSrc<T>::Raw v1[U], v2[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int e = e0 + u * (int)blockDim.x;
      v1[u] = tc_load<T>(src1, tc_elem<T>(e, HSP), e < total, n, HS);
      v2[u] = tc_load<T>(src2, tc_elem<T>(e, HSP), e < total, n, HS);
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int e = e0 + u * (int)blockDim.x;
      if (e < total) {
        tc_store(dst1, tc_elem<T>(e, HSP), ld, v1[u]);
        tc_store(dst2, tc_elem<T>(e, HSP), ld, v2[u]);
      }
    }
  }
}

// Two tiles of the same rows (keys and values, queries and dout): both tiles' loads in flight
// together from bf16 rows, and from fp32 rows where the kernel has the registers (Fp32Pairs),
// else one tile after the other. Holding both fp32 tiles' loads costs registers: the dq kernel
// pairs them at head sizes up to 64; at 128, and in the dkv kernel, already at its register
// bound, they come one after the other.
template <class T, bool Fp32Pairs, class Src1, class Src2>
__device__ inline void tc_stage_two(__nv_bfloat16* dst1, __nv_bfloat16* dst2, int rows, int n,
                                    int HS, int HSP, Src1 src1, Src2 src2) {
  if constexpr (TcSrc<T>::V == 8 || Fp32Pairs) {
    tc_stage2<T>(dst1, dst2, rows, n, HS, HSP, src1, src2);
  } else {
    tc_stage<T>(dst1, rows, n, HS, HSP, src1);
    tc_stage<T>(dst2, rows, n, HS, HSP, src2);
  }
}

// One 16-byte group of a row (tc_stage's element x of rows of T) copied as it is to o, by
// cp.async when the row holds it whole and aligned; a row's ragged end, and the padding
// (zeros), are stored at once, as tc_load reads them.
template <class T, class Src>
__device__ inline void tc_copy16(T* o, TcElem x, Src src, int n, int HS) {
  if (x.r < n && x.d + TcSrc<T>::V <= HS) {
    const T* p = src(x.r) + x.d;
    if (aligned16(p)) {
      cp_async16(o, p);
      return;
    }
  }
  tc_put(o, tc_load<T>(src, x, true, n, HS));
}

// A tile pair staged ahead of the step that reads it, while the step before computes. From
// bf16 rows, each 16-byte group goes by cp.async (tc_copy16): no register holds the tiles in
// flight, and the loads overlap the products instead of preceding them. From fp32 rows, which
// are rounded on the way, by tc_stage_two at once. Either way the tiles may be read after the
// thread's cp_async_commit and cp_async_wait and a barrier.
template <class T, bool Fp32Pairs, class Src1, class Src2>
__device__ inline void tc_stage_ahead(__nv_bfloat16* dst1, __nv_bfloat16* dst2, int rows, int n,
                                      int HS, int HSP, Src1 src1, Src2 src2) {
  if constexpr (TcSrc<T>::V != 8) {
    tc_stage_two<T, Fp32Pairs>(dst1, dst2, rows, n, HS, HSP, src1, src2);
  } else {
    const int ld = HSP + 8, total = rows * (HSP / 8);
    for (int e = threadIdx.x; e < total; e += blockDim.x) {
      const TcElem x = tc_elem<T>(e, HSP);
      tc_copy16<T>(dst1 + x.r * ld + x.d, x, src1, n, HS);
      tc_copy16<T>(dst2 + x.r * ld + x.d, x, src2, n, HS);
    }
  }
}

// After a step has sent the next step's tile (sent_next), this thread's copies of its own tile:
// waits for all but that last group, or with LOTUS_TC_AHEAD=0 (overlap false) for all of them,
// the next tile's too, so that its staging no longer overlaps the products.
__device__ inline void tc_wait_own(bool sent_next, bool overlap) {
  if (sent_next && overlap) {
    cp_async_wait<1>();
  } else {
    cp_async_wait<0>();
  }
}

// The forward's tiles from fp32 rows, a tile ahead: tc_land starts two tiles of the same rows
// (keys and values) on their way into F ([2][rows][HSP] fp32) by cp.async, each thread the
// 16-byte groups tc_stage would give it (a row's ragged end and the padding stored at once, as
// tc_load reads them), and commits them; after the thread's cp_async_wait, tc_unland rounds the
// same groups into the bf16 tiles, as tc_stage would have. A thread reads back only what it
// copied, so no barrier is needed between the two, and F is free for the next tile as soon as
// the thread has read its groups back.
template <class Src1, class Src2>
__device__ inline void tc_land(float* F, int rows, int n, int HS, int HSP, Src1 src1, Src2 src2) {
  const int total = rows * (HSP / 4);
  for (int e = threadIdx.x; e < total; e += blockDim.x) {
    const TcElem x = tc_elem<float>(e, HSP);
    tc_copy16<float>(F + x.r * HSP + x.d, x, src1, n, HS);
    tc_copy16<float>(F + (rows + x.r) * HSP + x.d, x, src2, n, HS);
  }
  cp_async_commit();
}
__device__ inline void tc_unland(__nv_bfloat16* dst1, __nv_bfloat16* dst2, const float* F,
                                 int rows, int HSP) {
  const int total = rows * (HSP / 4), ld = HSP + 8;
  for (int e = threadIdx.x; e < total; e += blockDim.x) {
    const TcElem x = tc_elem<float>(e, HSP);
    tc_store(dst1, x, ld, ld4(F + x.r * HSP + x.d));
    tc_store(dst2, x, ld, ld4(F + (rows + x.r) * HSP + x.d));
  }
}

// Where a kernel stages its rows from: qkv [B*Tq, QS], the past (rows past_rs apart, batches
// past_bs apart) and dout [B*Tq, C], as the engine's fp32 buffers or as bf16 copies of them
// (the backward's, made by tc_round_rows_kernel: the same rounding as staging fp32 rows).
template <class T>
struct TcRows {
  const T *qkv, *past, *dout;
  int64_t past_bs, past_rs;
  __device__ const T* key(const AttnShape& s, int b, int h, int j) const {
    return key_ptr(s, qkv, past, past_bs, past_rs, b, h, j);
  }
  __device__ const T* query(const AttnShape& s, int b, int h, int i) const {
    return qkv + ((int64_t)b * s.Tq + i) * s.QS + h * s.HS;
  }
  __device__ const T* dout_row(const AttnShape& s, int b, int h, int i) const {
    return dout + ((int64_t)b * s.Tq + i) * s.C + h * s.HS;
  }
};

// B(k, n) = T[k0 + k][n0 + n]: T's rows are B's rows (values in p v).
__device__ inline void tc_frag_b(uint32_t (&b)[2], const __nv_bfloat16* T, int ld, int k0, int n0,
                                 int g, int t) {
  const unsigned short* p =
      reinterpret_cast<const unsigned short*>(T + (k0 + 2 * t) * ld + n0 + g);
  b[0] = (uint32_t)p[0] | ((uint32_t)p[ld] << 16);
  b[1] = (uint32_t)p[8 * ld] | ((uint32_t)p[9 * ld] << 16);
}

// The warp's 16 x NC products S = A B^T: A = 16 rows of A_s from row r0, B = NC rows of B_s,
// both staged tiles, summed over HSP columns. s[n][r] is the lane's element r of the n-th
// 8-column tile.
template <int HSP, int NC>
__device__ inline void tc_scores(float (&s)[NC / 8][4], const __nv_bfloat16* A_s, int r0,
                                 const __nv_bfloat16* B_s, int g, int t) {
  constexpr int ld = HSP + 8;
#pragma unroll
  for (int n = 0; n < NC / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
  for (int kd = 0; kd < HSP / 16; kd++) {
    uint32_t a[4];
    tc_frag_a(a, A_s, ld, r0, 16 * kd, g, t);
#pragma unroll
    for (int n = 0; n < NC / 8; n++) {
      uint32_t b[2];
      tc_frag_bt(b, B_s, ld, 8 * n, 16 * kd, g, t);
      mma_bf16_16816(s[n], a, b);
    }
  }
}

// Columns c0 .. c0 + 15 of tc_scores's products: s[n] is the lane's part of the 8-column tile
// c0 / 8 + n, summed over the same steps in the same order as tc_scores sums it, so the bits are
// the same. The A operands are loaded again for each call (a few shared-memory loads) rather
// than held across calls: 16 x HSP of them would cost the registers this saves.
template <int HSP>
__device__ inline void tc_scores16(float (&s)[2][4], const __nv_bfloat16* A_s, int r0,
                                   const __nv_bfloat16* B_s, int c0, int g, int t) {
#pragma unroll
  for (int n = 0; n < 2; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
  for (int kd = 0; kd < HSP / 16; kd++) {
    uint32_t a[4];
    tc_frag_a(a, A_s, HSP + 8, r0, 16 * kd, g, t);
#pragma unroll
    for (int n = 0; n < 2; n++) {
      uint32_t b[2];
      tc_frag_bt(b, B_s, HSP + 8, c0 + 8 * n, 16 * kd, g, t);
      mma_bf16_16816(s[n], a, b);
    }
  }
}

// acc (16 x HSP, as HSP / 8 tiles) += P B for one 16-column slice of P: p[0], p[1] the lane's
// registers of its two 8-column tiles in the accumulator layout (rounded to bf16 here), B the
// 16 staged rows of B_s from row k0.
template <int HSP>
__device__ inline void tc_acc_pb16(float (&acc)[HSP / 8][4], const float (&p0)[4],
                                   const float (&p1)[4], const __nv_bfloat16* B_s, int k0, int g,
                                   int t) {
  const uint32_t a[4] = {pack_bf16x2(p0[0], p0[1]), pack_bf16x2(p0[2], p0[3]),
                         pack_bf16x2(p1[0], p1[1]), pack_bf16x2(p1[2], p1[3])};
#pragma unroll
  for (int nd = 0; nd < HSP / 8; nd++) {
    uint32_t b[2];
    tc_frag_b(b, B_s, HSP + 8, k0, 8 * nd, g, t);
    mma_bf16_16816(acc[nd], a, b);
  }
}

// acc (16 x HSP, as HSP / 8 tiles) += P B: P the lane's 16 x NC registers in the accumulator
// layout (rounded to bf16 here), B = NC staged rows of B_s.
template <int HSP, int NC>
__device__ inline void tc_acc_pb(float (&acc)[HSP / 8][4], const float (&p)[NC / 8][4],
                                 const __nv_bfloat16* B_s, int g, int t) {
#pragma unroll
  for (int kc = 0; kc < NC / 16; kc++) {
    tc_acc_pb16<HSP>(acc, p[2 * kc], p[2 * kc + 1], B_s, 16 * kc, g, t);
  }
}

// row[0 .. HS) += the lane's elements of row g + 8 hi of a 16 x HSP accumulator (columns
// 8 nd + 2t and 8 nd + 2t + 1): all the loads first, then the stores.
template <int HSP>
__device__ inline void tc_add_row(float* row, const float (&acc)[HSP / 8][4], int hi, int t,
                                  int HS) {
  float x[HSP / 8][2];
#pragma unroll
  for (int nd = 0; nd < HSP / 8; nd++) {
#pragma unroll
    for (int c = 0; c < 2; c++) {
      const int d = 8 * nd + 2 * t + c;
      x[nd][c] = d < HS ? row[d] : 0.f;
    }
  }
#pragma unroll
  for (int nd = 0; nd < HSP / 8; nd++) {
#pragma unroll
    for (int c = 0; c < 2; c++) {
      const int d = 8 * nd + 2 * t + c;
      if (d < HS) row[d] = x[nd][c] + acc[nd][2 * hi + c];
    }
  }
}

// Sum, or max, of a value over the four lanes of a group (the lanes that share a row).
__device__ inline float group_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
template <class T>
__device__ inline T group_sum(T v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// grid: B*NH*nqt blocks (query tiles of 16 W rows, fastest; W = blockDim.x / 32); dynamic
// shared memory: tc_fwd_smem. stats is nullable. T: the rows' type. fp32 rows land in an fp32
// buffer a tile ahead and are rounded into the one bf16 tile pair when their step comes (tc_land,
// tc_unland); bf16 rows (bf16 storage, le_alloc_bf16) go by cp.async straight into the other
// of two bf16 tile pairs (tc_stage_ahead), as in the dq kernel.
template <int HSP, class T>
__global__ void __launch_bounds__(kTcFwdWarps * 32, 2)
    attention_tc_fwd_kernel(float* out, __nv_bfloat16* out16, int ld16, float* stats,
                            TcRows<T> src, const uint8_t* key_valid, AttnShape s,
                            float scale, int nqt, bool overlap) {
  pdl_begin();
  constexpr bool kLand = std::is_same_v<T, float>;
  constexpr int NC = tc_cols(HSP), NT = NC / 8, ld = HSP + 8, NB = kLand ? 1 : 2;
  const int HS = s.HS;
  const int TR = (int)blockDim.x / 32 * kTcRows;  // the block's query rows
  auto* Qs = dyn_shared<__nv_bfloat16>();       // [TR][ld]
  __nv_bfloat16* Ks = Qs + TR * ld;             // [NB][NC][ld]
  __nv_bfloat16* Vs = Ks + NB * NC * ld;        // [NB][NC][ld]
  auto* ok_s = reinterpret_cast<uint8_t*>(Vs + NB * NC * ld);  // [NB][NC]: key exists, valid
  // fp32 rows: the next tile's keys and values as they arrive (tc_land): [2][NC][HSP].
  auto* Fs = reinterpret_cast<float*>(ok_s + 128);
  const int qt = (int)(blockIdx.x % nqt), bh = (int)(blockIdx.x / nqt);
  const int b = bh / s.NH, h = bh % s.NH;
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;
  const int i0 = qt * TR, nq = min(TR, s.Tq - i0);
  const int nk_max = s.Tp + i0 + nq;  // keys the block's last query sees
  const uint8_t* valid = key_valid ? key_valid + (int64_t)b * s.Tk : nullptr;
  // Key tile j0's rows start on their way (each thread its own elements: into Fs, or into
  // buffer buf of the bf16 tiles), and its keys' validity into a register (ok_next).
  bool ok_next = false;
  auto land = [&](int j0, int buf) {
    const int nkt = min(NC, nk_max - j0);
    const auto key = [&](int k) { return src.key(s, b, h, j0 + k); };
    const auto val = [&](int k) { return src.key(s, b, h, j0 + k) + s.VO; };
    if constexpr (kLand) {
      tc_land(Fs, NC, nkt, HS, HSP, key, val);
    } else {
      tc_stage_ahead<T, true>(Ks + buf * NC * ld, Vs + buf * NC * ld, NC, nkt, HS, HSP, key,
                              val);
      cp_async_commit();
    }
    ok_next = tid < nkt && (!valid || valid[j0 + tid]);
  };
  land(0, 0);  // in flight while the queries are staged
  tc_stage<T>(Qs, TR, nq, HS, HSP, [&](int r) { return src.query(s, b, h, i0 + r); });
  const int wr0 = kTcRows * w, wn = max(0, min(kTcRows, nq - wr0));
  const int ig = i0 + wr0 + g;  // the lane's rows: ig and ig + 8 (query indices)
  float o[HSP / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int wk_max = s.Tp + i0 + wr0 + wn;  // keys the warp's last query sees
  for (int j0 = 0, it = 0; j0 < nk_max; j0 += NC, it++) {
    const int buf = kLand ? 0 : it & 1;
    const bool more = j0 + NC < nk_max;
    if constexpr (kLand) {
      __syncthreads();  // the previous tile is no longer read
      cp_async_wait<0>();  // this thread's elements of the tile have landed in Fs
      tc_unland(Ks, Vs, Fs, NC, HSP);  // rounded to bf16, as staging rounds them
      if (tid < NC) ok_s[tid] = ok_next;
      if (more) land(j0 + NC, 0);       // the next tile, while this one's products run
      if (!overlap) cp_async_wait<0>();  // LOTUS_TC_AHEAD=0: before them
      __syncthreads();
    } else {
      if (tid < NC) ok_s[buf * NC + tid] = ok_next;
      __syncthreads();  // the other buffer's tile (the previous one) is no longer read
      if (more) land(j0 + NC, buf ^ 1);
      tc_wait_own(more, overlap);  // this thread's copies of this tile have landed
      __syncthreads();             // and every thread's
    }
    const __nv_bfloat16 *Kt = Ks + buf * NC * ld, *Vt = Vs + buf * NC * ld;
    const uint8_t* okt = ok_s + buf * NC;
    if (wn == 0 || j0 >= wk_max) continue;  // warp-uniform: no key of the tile is seen
    float sc[NT][4];
    tc_scores<HSP, NC>(sc, Qs, wr0, Kt, g, t);
    float tmax[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < NT; n++) {
#pragma unroll
      for (int r = 0; r < 4; r++) {
        const int hi = r >> 1, kk = 8 * n + 2 * t + (r & 1), j = j0 + kk;
        const bool ok = g + 8 * hi < wn && okt[kk] && j <= s.Tp + ig + 8 * hi;
        sc[n][r] = ok ? sc[n][r] * scale : -INFINITY;
        tmax[hi] = fmaxf(tmax[hi], sc[n][r]);
      }
    }
    float alpha[2];
#pragma unroll
    for (int hi = 0; hi < 2; hi++) {
      const float mn = fmaxf(m[hi], group_max(tmax[hi]));
      alpha[hi] = mn == -INFINITY ? 1.f : expf(m[hi] - mn);  // m = -inf: exp(-inf) = 0
      m[hi] = mn;
      l[hi] *= alpha[hi];
    }
#pragma unroll
    for (int n = 0; n < NT; n++) {
#pragma unroll
      for (int r = 0; r < 4; r++) {
        const int hi = r >> 1;
        sc[n][r] = sc[n][r] == -INFINITY ? 0.f : expf(sc[n][r] - m[hi]);
        l[hi] += sc[n][r];
      }
    }
#pragma unroll
    for (int nd = 0; nd < HSP / 8; nd++) {
      o[nd][0] *= alpha[0], o[nd][1] *= alpha[0], o[nd][2] *= alpha[1], o[nd][3] *= alpha[1];
    }
    tc_acc_pb<HSP, NC>(o, sc, Vt, g, t);
  }
#pragma unroll
  for (int hi = 0; hi < 2; hi++) {
    const float lr = group_sum(l[hi]);
    const int rr = g + 8 * hi, ii = ig + 8 * hi;
    if (rr >= wn) continue;
    const bool none = lr == 0.f;  // no visible valid key: output 0
    const float inv = none ? 0.f : 1.f / lr;
    float* orow = out + ((int64_t)b * s.Tq + ii) * s.C + h * HS;
    __nv_bfloat16* o16 = out16 ? out16 + ((int64_t)b * s.Tq + ii) * ld16 + h * HS : nullptr;
#pragma unroll
    for (int nd = 0; nd < HSP / 8; nd++) {
#pragma unroll
      for (int c = 0; c < 2; c++) {
        const int d = 8 * nd + 2 * t + c;
        if (d >= HS) continue;
        const float v = o[nd][2 * hi + c] * inv;
        orow[d] = v;
        if (o16) o16[d] = __float2bfloat16_rn(v);  // common.cuh's produced operands
      }
    }
    if (stats && t == 0) {  // null: a chunk without gradients keeps nothing
      stats[((int64_t)bh * s.Tq + ii) * 2] = none ? -INFINITY : m[hi];
      stats[((int64_t)bh * s.Tq + ii) * 2 + 1] = inv;
    }
  }
}

// grid: B*NH*nqt blocks (as the forward's); dynamic shared memory:
// tc_smem(HSP, 32 W + 2 NC, 2 NC).
// Writes D to Dg [B,NH,Tq] and adds dq to dqkv.
// src: the rows staged (fp32 or bf16 copies); dout and out: fp32, for D.
template <int HSP, class T>
__global__ void __launch_bounds__(kTcBwdWarps * 32, 2)
    attention_tc_dq_kernel(float* dqkv, float* Dg, const float* dout, const float* out,
                           const float* stats, const uint8_t* key_valid, TcRows<T> src,
                           AttnShape s, float scale, int nqt, bool overlap) {
  pdl_begin();
  constexpr int NC = tc_cols(HSP), NT = NC / 8, ld = HSP + 8;
  const int HS = s.HS;
  const int TR = (int)blockDim.x / 32 * kTcRows;  // the block's query rows
  auto* Qs = dyn_shared<__nv_bfloat16>();       // [TR][ld]
  __nv_bfloat16* dOs = Qs + TR * ld;            // [TR][ld]
  // Two buffers of each streamed tile: the next key tile is staged into one while the other
  // is read (tc_stage_ahead).
  __nv_bfloat16* Ks = dOs + TR * ld;                          // [2][NC][ld]
  __nv_bfloat16* Vs = Ks + 2 * NC * ld;                       // [2][NC][ld]
  auto* ok_s = reinterpret_cast<uint8_t*>(Vs + 2 * NC * ld);  // [2][NC]
  const int qt = (int)(blockIdx.x % nqt), bh = (int)(blockIdx.x / nqt);
  const int b = bh / s.NH, h = bh % s.NH;
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;
  const int i0 = qt * TR, nq = min(TR, s.Tq - i0);
  const uint8_t* valid = key_valid ? key_valid + (int64_t)b * s.Tk : nullptr;
  const int nk_max = s.Tp + i0 + nq;
  // Key tile it sits in buffer it & 1. Its rows are staged an iteration ahead, and its keys'
  // validity loaded into a register then (ok_next), stored where the tile is used.
  bool ok_next = false;
  auto ahead = [&](int j0, int buf) {
    const int nkt = min(NC, nk_max - j0);
    tc_stage_ahead<T, HSP <= 64>(
        Ks + buf * NC * ld, Vs + buf * NC * ld, NC, nkt, HS, HSP,
        [&](int k) { return src.key(s, b, h, j0 + k); },
        [&](int k) { return src.key(s, b, h, j0 + k) + s.VO; });
    ok_next = tid < nkt && (!valid || valid[j0 + tid]);
    cp_async_commit();
  };
  ahead(0, 0);  // in flight while the queries are staged and D is formed
  tc_stage2<T>(
      Qs, dOs, TR, nq, HS, HSP, [&](int r) { return src.query(s, b, h, i0 + r); },
      [&](int r) { return src.dout_row(s, b, h, i0 + r); });
  const int wr0 = kTcRows * w, wn = max(0, min(kTcRows, nq - wr0)), ig = i0 + wr0 + g;
  // The lane's rows' statistics, and D = dout . out: the group's four lanes split the row's
  // channels (d = t, t + 4, ...), sum in double and combine with two shuffles.
  float mi[2], inv[2], D[2];
#pragma unroll
  for (int hi = 0; hi < 2; hi++) {
    const bool in = g + 8 * hi < wn;
    const int64_t row = (int64_t)b * s.Tq + ig + 8 * hi;
    mi[hi] = in ? stats[((int64_t)bh * s.Tq + ig + 8 * hi) * 2] : 0.f;
    inv[hi] = in ? stats[((int64_t)bh * s.Tq + ig + 8 * hi) * 2 + 1] : 0.f;
    double part = 0;
    if (in) {
      const float* dor = dout + row * s.C + h * HS;
      const float* orow = out + row * s.C + h * HS;
      for (int d = t; d < HS; d += 4) part += (double)dor[d] * orow[d];
    }
    D[hi] = (float)group_sum(part);
    if (in && t == 0) Dg[(int64_t)bh * s.Tq + ig + 8 * hi] = D[hi];
  }
  const int wk_max = s.Tp + i0 + wr0 + wn;
  float dq[HSP / 8][4] = {};
  for (int j0 = 0, it = 0; j0 < nk_max; j0 += NC, it++) {
    const int buf = it & 1;
    if (tid < NC) ok_s[buf * NC + tid] = ok_next;
    __syncthreads();  // the other buffer's tile (the previous one) is no longer read
    const bool more = j0 + NC < nk_max;
    if (more) ahead(j0 + NC, buf ^ 1);
    tc_wait_own(more, overlap);  // this thread's copies of tile it have landed
    __syncthreads();             // and every thread's
    if (wn == 0 || j0 >= wk_max) continue;
    const __nv_bfloat16 *Kt = Ks + buf * NC * ld, *Vt = Vs + buf * NC * ld;
    const uint8_t* okt = ok_s + buf * NC;
    float p[NT][4], dp[NT][4];
    tc_scores<HSP, NC>(p, Qs, wr0, Kt, g, t);
    tc_scores<HSP, NC>(dp, dOs, wr0, Vt, g, t);
#pragma unroll
    for (int n = 0; n < NT; n++) {
#pragma unroll
      for (int r = 0; r < 4; r++) {
        const int hi = r >> 1, kk = 8 * n + 2 * t + (r & 1), j = j0 + kk;
        const bool ok = g + 8 * hi < wn && okt[kk] && j <= s.Tp + ig + 8 * hi &&
                        inv[hi] != 0.f;
        const float pr = ok ? expf(p[n][r] * scale - mi[hi]) * inv[hi] : 0.f;
        p[n][r] = pr * (dp[n][r] - D[hi]) * scale;  // dS
      }
    }
    tc_acc_pb<HSP, NC>(dq, p, Kt, g, t);
  }
  // The lane adds its elements to dqkv.
#pragma unroll
  for (int hi = 0; hi < 2; hi++) {
    if (g + 8 * hi >= wn) continue;
    tc_add_row<HSP>(dqkv + ((int64_t)b * s.Tq + ig + 8 * hi) * s.QS + h * HS, dq, hi, t, HS);
  }
}

// grid: B*NKV*nkt blocks (key tiles of 16 W rows, fastest; W = blockDim.x / 32), or NKV
// blocks with share_b (each walks b, then the key tiles, in order); dynamic shared memory:
// tc_smem(HSP, 32 W + 2 NC, 6 NC floats). A key's gradient is summed over the same 16-query slices
// (one mma.sync each, rounded once), in the same order, whatever W is: they start at multiples
// of 16 (slices of queries that do not see the key add zeros).
template <int HSP, class T>
__global__ void __launch_bounds__(kTcBwdWarps * 32, HSP <= 64 ? 2 : 1)
    attention_tc_dkv_kernel(float* dqkv, float* dkv_past, const float* Dg, const float* stats,
                            const uint8_t* key_valid, TcRows<T> src, AttnShape s, float scale,
                            int nkt_all, bool share_b, bool overlap) {
  pdl_begin();
  constexpr int NC = tc_cols(HSP), NT = NC / 8, ld = HSP + 8;
  const int HS = s.HS, NKV = s.NH / s.G;
  const int TR = (int)blockDim.x / 32 * kTcRows;  // the block's key rows
  auto* Ks = dyn_shared<__nv_bfloat16>();       // [TR][ld]
  __nv_bfloat16* Vs = Ks + TR * ld;             // [TR][ld]
  // Two buffers of each streamed tile: the next query tile is staged into one while the other
  // is read (tc_stage_ahead).
  __nv_bfloat16* Qs = Vs + TR * ld;                        // [2][NC][ld]
  __nv_bfloat16* dOs = Qs + 2 * NC * ld;                   // [2][NC][ld]
  auto* stat_s = reinterpret_cast<float*>(dOs + 2 * NC * ld);  // [2][3][NC]: m, 1 / sum, D
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;
  const int kvh = share_b ? (int)blockIdx.x : (int)(blockIdx.x / nkt_all) % NKV;
  const int b_lo = share_b ? 0 : (int)(blockIdx.x / nkt_all) / NKV;
  const int b_hi = share_b ? s.B : b_lo + 1;
  const int t_lo = share_b ? 0 : (int)(blockIdx.x % nkt_all), t_hi = share_b ? nkt_all : t_lo + 1;
  const int h_lo = kvh * s.G, h_hi = h_lo + s.G;  // the query heads that read this key head
  // The warp's 16 keys are the rows of its products here (S^T = K Q^T); the lane holds keys
  // jg and jg + 8.
  const int wr0 = kTcRows * w;
  for (int b = b_lo; b < b_hi; b++) {
    const uint8_t* valid = key_valid ? key_valid + (int64_t)b * s.Tk : nullptr;
    for (int tile = t_lo; tile < t_hi; tile++) {
      const int j0 = tile * TR, nkt = min(TR, s.Tk - j0);
      if (j0 + nkt <= s.Tp && !dkv_past) continue;  // past keys without a gradient
      const int wn = max(0, min(kTcRows, nkt - wr0)), jg = j0 + wr0 + g;
      bool key_ok[2];
#pragma unroll
      for (int hi = 0; hi < 2; hi++) {
        key_ok[hi] = g + 8 * hi < wn && (!valid || valid[jg + 8 * hi]);
      }
      float dk[HSP / 8][4] = {}, dv[HSP / 8][4] = {};
      // From the 16-query slice of the first query that sees key j0 (below).
      const int i_first = (j0 - s.Tp > 0 ? j0 - s.Tp : 0) / kTcRows * kTcRows;
      // Step k takes query tile k % nqs of head h_lo + k / nqs, from buffer k & 1. Its rows
      // are staged a step ahead, and its statistics loaded into registers then (st_next),
      // stored where the tile is used.
      const int nqs = i_first < s.Tq ? (s.Tq - i_first + NC - 1) / NC : 0;
      const int steps = (h_hi - h_lo) * nqs;
      float st_next[3] = {0.f, 0.f, 0.f};
      auto ahead = [&](int k, int buf) {
        const int h = h_lo + k / nqs, i0 = i_first + k % nqs * NC, nq = min(NC, s.Tq - i0);
        tc_stage_ahead<T, false>(
            Qs + buf * NC * ld, dOs + buf * NC * ld, NC, nq, HS, HSP,
            [&](int q) { return src.query(s, b, h, i0 + q); },
            [&](int q) { return src.dout_row(s, b, h, i0 + q); });
        if (tid < NC) {
          const bool in = tid < nq;
          const int64_t rr = (int64_t)(b * s.NH + h) * s.Tq + i0 + tid;
          st_next[0] = in ? stats[rr * 2] : 0.f;
          st_next[1] = in ? stats[rr * 2 + 1] : 0.f;
          st_next[2] = in ? Dg[rr] : 0.f;
        }
        cp_async_commit();
      };
      __syncthreads();  // the previous tile's keys and queries are no longer read
      if (steps > 0) ahead(0, 0);  // in flight while the keys are staged
      tc_stage_two<T, false>(
          Ks, Vs, TR, nkt, HS, HSP, [&](int k) { return src.key(s, b, h_lo, j0 + k); },
          [&](int k) { return src.key(s, b, h_lo, j0 + k) + s.VO; });
      for (int k = 0; k < steps; k++) {
        const int buf = k & 1, i0 = i_first + k % nqs * NC, nq = min(NC, s.Tq - i0);
        float* ms = stat_s + buf * 3 * NC;
        float *invs = ms + NC, *Ds = invs + NC;
        if (tid < NC) ms[tid] = st_next[0], invs[tid] = st_next[1], Ds[tid] = st_next[2];
        __syncthreads();  // the other buffer's tile (the previous step's) is no longer read
        const bool more = k + 1 < steps;
        if (more) ahead(k + 1, buf ^ 1);
        tc_wait_own(more, overlap);  // this thread's copies of step k's tile have landed
        __syncthreads();             // and every thread's
        // Warp-uniform: the warp's keys exist and some query of the tile sees the first.
        if (wn == 0 || j0 + wr0 > s.Tp + i0 + nq - 1) continue;
        const __nv_bfloat16 *Qt = Qs + buf * NC * ld, *dOt = dOs + buf * NC * ld;
        // The lane's probability and dS^T of key row g + 8 hi and query q, from its scores.
        auto ds_t = [&](float& pr, float& ds, int hi, int q) {
          const bool ok = key_ok[hi] && q < nq && jg + 8 * hi <= s.Tp + i0 + q &&
                          invs[q] != 0.f;
          pr = ok ? expf(pr * scale - ms[q]) * invs[q] : 0.f;
          ds = pr * (ds - Ds[q]) * scale;
        };
        if constexpr (HSP <= 64) {
          // 16 queries at a time: their scores, probabilities and dS^T, then their terms of
          // dV and dK. Each accumulator takes the same products in the same order as below, so
          // the bits are the same, with 2 x 16 x 16 scores live instead of 2 x 16 x NC. At 128
          // (NC = 32) ptxas allocates better with the order below.
#pragma unroll
          for (int kc = 0; kc < NC / 16; kc++) {
            float p[2][4], dp[2][4];
            tc_scores16<HSP>(p, Ks, wr0, Qt, 16 * kc, g, t);    // S^T
            tc_scores16<HSP>(dp, Vs, wr0, dOt, 16 * kc, g, t);  // dP^T
#pragma unroll
            for (int r = 0; r < 8; r++) {
              ds_t(p[r / 4][r % 4], dp[r / 4][r % 4], (r % 4) >> 1,
                   16 * kc + 8 * (r / 4) + 2 * t + (r & 1));
            }
            tc_acc_pb16<HSP>(dv, p[0], p[1], dOt, 16 * kc, g, t);
            tc_acc_pb16<HSP>(dk, dp[0], dp[1], Qt, 16 * kc, g, t);
          }
        } else {
          float p[NT][4], dp[NT][4];
          tc_scores<HSP, NC>(p, Ks, wr0, Qt, g, t);    // S^T
          tc_scores<HSP, NC>(dp, Vs, wr0, dOt, g, t);  // dP^T
#pragma unroll
          for (int n = 0; n < NT; n++) {
#pragma unroll
            for (int r = 0; r < 4; r++) {
              ds_t(p[n][r], dp[n][r], r >> 1, 8 * n + 2 * t + (r & 1));
            }
          }
          tc_acc_pb<HSP, NC>(dv, p, dOt, g, t);
          tc_acc_pb<HSP, NC>(dk, dp, Qt, g, t);
        }
      }
      // The lane adds its elements to the key's gradient rows (the value's VO later).
#pragma unroll
      for (int hi = 0; hi < 2; hi++) {
        const int jj = jg + 8 * hi;
        if (g + 8 * hi >= wn) continue;
        if (jj < s.Tp && !dkv_past) continue;
        float* row = key_ptr(s, dqkv, dkv_past, s.past_bs, s.past_rs, b, h_lo, jj);
        tc_add_row<HSP>(row, dk, hi, t, HS);
        tc_add_row<HSP>(row + s.VO, dv, hi, t, HS);
      }
    }
  }
}

// The register layout these kernels assume is PTX's documentation, which the host emulation
// implements; only a GPU can confirm it. le_init does, once: one warp multiplies small integer
// matrices (exact in bf16 and fp32) through mma_bf16_16816 with its operands placed as
// documented, adds them to an accumulator C placed as documented (the kernels chain products
// through it), and counts the elements of D that differ from the exact C + A B. Any: no
// tensor-core kernel is used (the fp32 attention kernels serve bf16 mode too, cuBLAS the
// few-row forwards that skinny.cuh's kernel would take) and le_device_info says so, rather
// than attention's gradients or a loop pass's products being silently wrong.
__global__ void mma_probe_kernel(int* wrong) {
  pdl_begin();
  const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
  auto A = [](int m, int k) { return (float)((m * 16 + k) % 7 - 3); };  // 16 x 16
  auto B = [](int k, int n) { return (float)((k * 8 + n) % 5 - 2); };   // 16 x 8
  const uint32_t a[4] = {pack_bf16x2(A(g, 2 * t), A(g, 2 * t + 1)),
                         pack_bf16x2(A(g + 8, 2 * t), A(g + 8, 2 * t + 1)),
                         pack_bf16x2(A(g, 2 * t + 8), A(g, 2 * t + 9)),
                         pack_bf16x2(A(g + 8, 2 * t + 8), A(g + 8, 2 * t + 9))};
  const uint32_t b[2] = {pack_bf16x2(B(2 * t, g), B(2 * t + 1, g)),
                         pack_bf16x2(B(2 * t + 8, g), B(2 * t + 9, g))};
  auto C = [](int m, int n) { return (float)((m * 8 + n) % 11 - 5); };  // 16 x 8
  float d[4];
  for (int r = 0; r < 4; r++) d[r] = C(g + 8 * (r / 2), 2 * t + r % 2);
  mma_bf16_16816(d, a, b);
  int bad = 0;
  for (int r = 0; r < 4; r++) {
    const int m = g + 8 * (r / 2), n = 2 * t + r % 2;
    float want = C(m, n);
    for (int k = 0; k < 16; k++) want += A(m, k) * B(k, n);
    bad += d[r] != want;
  }
  for (int o = 16; o > 0; o /= 2) bad += __shfl_xor_sync(0xffffffffu, bad, o);
  if (lane == 0) *wrong = bad;
}

// Runs the probe into g.dflag[3] and returns the wrong elements (of 128), or -1 when it could
// not run (then the tensor-core kernels stay off too). le_init runs it whatever the settings.
inline int probe_mma() {
  LAUNCH(mma_probe_kernel, 1, 32, 0)(g.dflag + 3);
  if (cudaGetLastError() != cudaSuccess ||
      cudaMemcpyAsync(g.hflag + 3, g.dflag + 3, sizeof(int), cudaMemcpyDeviceToHost,
                      g.stream) != cudaSuccess ||
      cudaStreamSynchronize(g.stream) != cudaSuccess) {
    (void)cudaGetLastError();
    return -1;
  }
  return g.hflag[3];
}

// Whether bf16 attention of this shape runs on tensor cores (the statistics form in bf16
// mode, head sizes up to 128, unless LOTUS_TC_ATTENTION=0 or le_init's probe failed), and the
// launches.
inline bool tc_attention_on(const AttnShape& s) {
  return g.precision == 2 && g.tc_attention && tc_hsp(s.HS) != 0;
}

// The forward kernel's dynamic shared memory: the query tile and one key/value tile pair, then
// ok_s padded to 128 bytes and the fp32 landing tiles (tc_land); from bf16 rows, two tile pairs
// and ok_s for each.
template <int HSP, class T>
inline size_t tc_fwd_smem(int TR) {
  constexpr int NC = tc_cols(HSP);
  if constexpr (std::is_same_v<T, float>) {
    return tc_smem(HSP, TR, 128 + 2 * NC * HSP * sizeof(float));
  } else {
    return tc_smem(HSP, TR + 2 * NC, 2 * NC);
  }
}

// qkv and kv_past: fp32 rows, or with T = __nv_bfloat16 bf16 storage (le_alloc_bf16).
template <int HSP, class T>
inline int attention_tc_fwd_at(const char* fn, float* out, float* stats, const T* qkv,
                               const T* kv_past, const uint8_t* key_valid,
                               const AttnShape& s) {
  const float scale = (float)(1.0 / sqrt((double)s.HS));
  const int W = tc_warps(s.Tq, kTcFwdWarps), TR = W * kTcRows, nqt = (s.Tq + TR - 1) / TR;
  const int64_t blocks = (int64_t)s.B * s.NH * nqt;
  if (blocks > 0x7fffffffLL) return fail("%s: B*NH*Tq = %lld is too large", fn, (long long)blocks);
  const size_t smem = tc_fwd_smem<HSP, T>(TR);
  TRY(attn_smem_optin(fn, attention_tc_fwd_kernel<HSP, T>, smem));
  int ld16;
  __nv_bfloat16* out16 = produce_bf16(fn, out, (int64_t)s.B * s.Tq, s.C, &ld16);
  const TcRows<T> src{qkv, kv_past, nullptr, s.past_bs, s.past_rs};
  LAUNCH((attention_tc_fwd_kernel<HSP, T>), (unsigned)blocks, W * 32, smem)(
      out, out16, ld16, stats, src, key_valid, s, scale, nqt, g.tc_ahead);
  return 0;
}

// dst row b * rows + r (cols values) = src's row at b * bs + r * rs, rounded to bf16.
__global__ void tc_round_rows_kernel(__nv_bfloat16* dst, const float* src, int64_t nrows,
                                     int64_t rows, int cols, int64_t bs, int64_t rs) {
  pdl_begin();
  const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  for (int64_t k = blockIdx.y; k < nrows; k += gridDim.y) {
    const float* row = src + (k / rows) * bs + (k % rows) * rs;
    dst[k * cols + c] = __float2bfloat16_rn(row[c]);
  }
}

// tc_round_rows_kernel four columns a thread and four rows in flight: float4 loads, 8-byte
// stores. For cols, bs and rs multiples of 4 and src 16-byte aligned; grid (ceil(cols / 4 /
// blockDim.x), up to ceil(nrows / 4)).
__global__ void tc_round_rows4_kernel(__nv_bfloat16* dst, const float* src, int64_t nrows,
                                      int64_t rows, int cols, int64_t bs, int64_t rs) {
  pdl_begin();
  const int64_t c = 4 * ((int64_t)blockIdx.x * blockDim.x + threadIdx.x);
  if (c >= cols) return;
  for (int64_t k0 = 4 * (int64_t)blockIdx.y; k0 < nrows; k0 += 4 * (int64_t)gridDim.y) {
    float4 v[4];
#pragma unroll
    for (int u = 0; u < 4; u++) {
      const int64_t k = k0 + u;
      if (k < nrows) v[u] = ld4(src + (k / rows) * bs + (k % rows) * rs + c);
    }
#pragma unroll
    for (int u = 0; u < 4; u++) {
      const int64_t k = k0 + u;
      if (k >= nrows) continue;
      const uint2 w = {pack_bf16x2(v[u].x, v[u].y), pack_bf16x2(v[u].z, v[u].w)};
      *reinterpret_cast<uint2*>(dst + k * cols + c) = w;
    }
  }
}

// The backward's rows in bf16 (g.tc_bf16_rows): qkv, the past and dout rounded once into
// g_scr_att16, each copy's rows packed, where each kernel would otherwise round the fp32 rows
// it stages, several times over (every query tile's block stages the same keys): the same
// bf16 values in shared memory, from half the bytes and half the loads.
template <int HSP, class T>
inline int attention_tc_bwd_rows(const char* fn, float* dqkv, float* dkv_past,
                                 const float* dout, const float* out, const float* stats,
                                 const uint8_t* key_valid, const TcRows<T>& src,
                                 const AttnShape& s, bool share_b, float* D) {
  const float scale = (float)(1.0 / sqrt((double)s.HS));
  const int Wq = tc_warps(s.Tq, kTcBwdWarps), Wk = tc_warps(s.Tk, kTcBwdWarps);
  const int TQ = Wq * kTcRows, TK = Wk * kTcRows;
  const int nqt = (s.Tq + TQ - 1) / TQ, nkt = (s.Tk + TK - 1) / TK;
  const int NKV = s.NH / s.G;
  const int64_t qblocks = (int64_t)s.B * s.NH * nqt, kblocks = (int64_t)s.B * NKV * nkt;
  // Both kernels hold two buffers of their streamed tiles (a pair of NC rows each).
  const int NC = tc_cols(HSP);
  const size_t smem_q = tc_smem(HSP, 2 * TQ + 2 * NC, 2 * NC);
  const size_t smem_k = tc_smem(HSP, 2 * TK + 2 * NC, 6 * NC * sizeof(float));
  TRY(attn_smem_optin(fn, attention_tc_dq_kernel<HSP, T>, smem_q));
  TRY(attn_smem_optin(fn, attention_tc_dkv_kernel<HSP, T>, smem_k));
  LAUNCH((attention_tc_dq_kernel<HSP, T>), (unsigned)qblocks, Wq * 32, smem_q)(
      dqkv, D, dout, out, stats, key_valid, src, s, scale, nqt, g.tc_ahead);
  LAUNCH((attention_tc_dkv_kernel<HSP, T>), share_b ? (unsigned)NKV : (unsigned)kblocks,
         Wk * 32, smem_k)(dqkv, dkv_past, D, stats, key_valid, src, s, scale, nkt, share_b,
                          g.tc_ahead);
  return 0;
}

// The backward from bf16 storage (le_alloc_bf16): the kernels stage qkv and the past as they
// are stored; only dout is rounded, once a call, into g_scr_att16.
template <int HSP>
inline int attention_tc_bwd_b16(const char* fn, float* dqkv, float* dkv_past, const float* dout,
                                const float* out, const float* stats, const uint8_t* key_valid,
                                const __nv_bfloat16* qkv, const __nv_bfloat16* kv_past,
                                const AttnShape& s, bool share_b, float* D) {
  const int64_t nq = (int64_t)s.B * s.Tq, n = nq * s.C;
  const size_t bytes = (size_t)n * sizeof(__nv_bfloat16);
  if (g.capturing && bytes > g_scr_att16.bytes) {
    return fail("%s: the attention backward's bf16 copy of dout (%zu bytes) would have to grow "
                "while a graph is being recorded; run the ops once before recording them",
                fn, bytes);
  }
  auto* dout16 = (__nv_bfloat16*)g_scr_att16.get(fn, bytes);
  if (!dout16) return 1;
  if (s.C % 4 == 0 && aligned16(dout)) {
    const int64_t c4 = s.C / 4;
    const int threads = (int)std::min<int64_t>(256, (c4 + 31) / 32 * 32);
    const dim3 grid((unsigned)((c4 + threads - 1) / threads),
                    (unsigned)std::min<int64_t>((nq + 3) / 4, 65535));
    LAUNCH(tc_round_rows4_kernel, grid, threads, 0)(dout16, dout, nq, nq, s.C, 0, s.C);
  } else {
    LAUNCH(to_bf16_kernel, grid_for(n, 256), 256, 0)(dout16, dout, n);
  }
  const TcRows<__nv_bfloat16> b16{qkv, kv_past, dout16, s.past_bs, s.past_rs};
  return attention_tc_bwd_rows<HSP>(fn, dqkv, dkv_past, dout, out, stats, key_valid, b16, s,
                                    share_b, D);
}

template <int HSP>
inline int attention_tc_bwd_at(const char* fn, float* dqkv, float* dkv_past, const float* dout,
                               const float* out, const float* stats, const uint8_t* key_valid,
                               const float* qkv, const float* kv_past, const AttnShape& s,
                               bool share_b, float* D) {
  const TcRows<float> f32{qkv, kv_past, dout, s.past_bs, s.past_rs};
  // Packed copies, each at a multiple of 16 bytes: qkv [B*Tq, QS], the past [B or 1, Tp,
  // VO + HS * NKV] (its keys, then its values at VO as in the fp32 rows), dout [B*Tq, C].
  const int64_t nq = (int64_t)s.B * s.Tq;
  const int64_t pcols = s.VO + (int64_t)s.HS * (s.NH / s.G);
  const int64_t pb = s.Tp == 0 ? 0 : s.past_bs != 0 ? s.B : 1;
  auto up8 = [](int64_t n) { return (n + 7) / 8 * 8; };
  const int64_t n_qkv = up8(nq * s.QS), n_past = up8(pb * s.Tp * pcols), n_dout = up8(nq * s.C);
  const size_t bytes = (size_t)(n_qkv + n_past + n_dout) * sizeof(__nv_bfloat16);
  // The fp32 rows serve (the same bits) when copies are off, when a row is too wide for the
  // copy kernel, and while a graph is being recorded if the slot would have to grow (growing
  // waits for the GPU).
  if (!g.tc_bf16_rows || s.QS > INT32_MAX || pcols > INT32_MAX ||
      (g.capturing && bytes > g_scr_att16.bytes)) {
    return attention_tc_bwd_rows<HSP>(fn, dqkv, dkv_past, dout, out, stats, key_valid, f32, s,
                                      share_b, D);
  }
  auto* base = (__nv_bfloat16*)g_scr_att16.get(fn, bytes);
  if (!base) return 1;
  __nv_bfloat16 *qkv16 = base, *past16 = base + n_qkv, *dout16 = past16 + n_past;
  auto round = [&](__nv_bfloat16* dst, const float* from, int64_t nrows, int64_t rows,
                   int64_t cols, int64_t bs, int64_t rs) {
    if (nrows == 0) return;
    if (cols % 4 == 0 && bs % 4 == 0 && rs % 4 == 0 && aligned16(from) && aligned16(dst)) {
      const int64_t c4 = cols / 4;
      const int threads = (int)std::min<int64_t>(256, (c4 + 31) / 32 * 32);
      const dim3 grid((unsigned)((c4 + threads - 1) / threads),
                      (unsigned)std::min<int64_t>((nrows + 3) / 4, 65535));
      LAUNCH(tc_round_rows4_kernel, grid, threads, 0)(dst, from, nrows, rows, (int)cols, bs, rs);
      return;
    }
    const dim3 grid((unsigned)((cols + 255) / 256), (unsigned)std::min<int64_t>(nrows, 65535));
    LAUNCH(tc_round_rows_kernel, grid, 256, 0)(dst, from, nrows, rows, (int)cols, bs, rs);
  };
  round(qkv16, qkv, nq, nq, s.QS, 0, s.QS);
  round(past16, kv_past, pb * s.Tp, s.Tp, pcols, s.past_bs, s.past_rs);
  round(dout16, dout, nq, nq, s.C, 0, s.C);
  const TcRows<__nv_bfloat16> b16{qkv16, past16, dout16,
                                  s.past_bs != 0 ? (int64_t)s.Tp * pcols : 0, pcols};
  return attention_tc_bwd_rows<HSP>(fn, dqkv, dkv_past, dout, out, stats, key_valid, b16, s,
                                    share_b, D);
}

// Calls f(std::integral_constant<int, HSP>{}) with head size HS's kernel instance.
template <class F>
inline int tc_dispatch(int HS, F f) {
  switch (tc_hsp(HS)) {
    case 16: return f(std::integral_constant<int, 16>{});
    case 32: return f(std::integral_constant<int, 32>{});
    case 64: return f(std::integral_constant<int, 64>{});
    default: return f(std::integral_constant<int, 128>{});
  }
}

// b16: qkv and kv_past are bf16 storage (le_alloc_bf16), passed as float* by the ABI.
inline int attention_tc_fwd(const char* fn, float* out, float* stats, const float* qkv,
                            const float* kv_past, const uint8_t* key_valid, const AttnShape& s,
                            bool b16) {
  return tc_dispatch(s.HS, [&](auto hsp) {
    constexpr int HSP = decltype(hsp)::value;
    if (b16) {
      return attention_tc_fwd_at<HSP>(fn, out, stats, as_bf16(qkv), as_bf16(kv_past), key_valid,
                                      s);
    }
    return attention_tc_fwd_at<HSP>(fn, out, stats, qkv, kv_past, key_valid, s);
  });
}

inline int attention_tc_bwd(const char* fn, float* dqkv, float* dkv_past, const float* dout,
                            const float* out, const float* stats, const uint8_t* key_valid,
                            const float* qkv, const float* kv_past, const AttnShape& s,
                            bool share_b, float* D, bool b16) {
  return tc_dispatch(s.HS, [&](auto hsp) {
    constexpr int HSP = decltype(hsp)::value;
    if (b16) {
      return attention_tc_bwd_b16<HSP>(fn, dqkv, dkv_past, dout, out, stats, key_valid,
                                       as_bf16(qkv), as_bf16(kv_past), s, share_b, D);
    }
    return attention_tc_bwd_at<HSP>(fn, dqkv, dkv_past, dout, out, stats, key_valid, qkv,
                                    kv_past, s, share_b, D);
  });
}

}  // namespace le
