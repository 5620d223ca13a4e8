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
// Rows of up to kLnVecMaxC elements whose buffers are 16-byte aligned (C a multiple of 4) take
// the vector path: each lane loads its elements as float4, once, keeps them in registers for
// the three passes (sum, squared deviations, normalisation) and stores float4; the backward's
// dinp kernel likewise holds its row of dout and x. Other rows take the scalar kernels, which
// read the row from memory at each pass. The two paths sum the row's elements in different
// orders (a lane owns elements 4l..4l+3, 128 + 4l.. rather than l, 32 + l, ..), in double both.
//
// Backward, per row: dnorm = dout * w,
//   dinp += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))   (sums in double)
// and, over rows: dw += sum_n dout * norm, db += sum_n dout. Those two column sums would
// race across rows, so they run in two deterministic stages: fixed chunks of rows
// give double partial sums, which a second kernel adds up in chunk order.
#pragma once

#include <initializer_list>
#include <utility>
#include <type_traits>

#include "common.cuh"
#include "llama.cuh"  // RMSNorm's forward, which a deferred norm may be

namespace le {

constexpr double kLnEps = 1e-5;
constexpr int kLnRowsPerBlock = 8;  // 8 warps

// Normalises row x into o (and its bf16 rounding into o16 when given; common.cuh's produced
// operands; o null: only o16, le_operand_only), saving mean/rstd, with one warp.
__device__ inline void layernorm_row_warp(float* o, __nv_bfloat16* o16, float* mean, float* rstd,
                                          const float* x, const float* w, const float* b, int C,
                                          int lane) {
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
  for (int c = lane; c < C; c += 32) {
    const float v = (x[c] - mf) * rs * w[c] + b[c];
    if (o) o[c] = v;
    if (o16) o16[c] = __float2bfloat16_rn(v);
  }
  if (lane == 0) {
    if (mean) *mean = mf;
    if (rstd) *rstd = rs;
  }
}

__global__ void layernorm_fwd_kernel(float* out, __nv_bfloat16* out16, int ld16, float* mean,
                                     float* rstd, const float* inp, const float* w,
                                     const float* b, int N, int C) {
  pdl_begin();
  const int n = blockIdx.x * kLnRowsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;
  const int64_t off = (int64_t)n * C;
  layernorm_row_warp(out ? out + off : nullptr, out16 ? out16 + (int64_t)n * ld16 : nullptr,
                     mean ? mean + n : nullptr, rstd ? rstd + n : nullptr, inp + off, w, b, C,
                     threadIdx.x & 31);
}

__global__ void residual_layernorm_fwd_kernel(float* resid, float* out, __nv_bfloat16* out16,
                                              int ld16, float* mean, float* rstd, const float* a,
                                              const float* bb, const float* w, const float* bias,
                                              int N, int C) {
  pdl_begin();
  const int n = blockIdx.x * kLnRowsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;
  const int lane = threadIdx.x & 31;
  const int64_t off = (int64_t)n * C;
  for (int c = lane; c < C; c += 32) resid[off + c] = a[off + c] + bb[off + c];
  __syncwarp();
  layernorm_row_warp(out ? out + off : nullptr, out16 ? out16 + (int64_t)n * ld16 : nullptr,
                     mean ? mean + n : nullptr, rstd ? rstd + n : nullptr, resid + off, w, bias,
                     C, lane);
}

constexpr int kLnVecMaxC = 32 * 4 * 8;  // 8 float4 a lane

__device__ inline double sum4(float4 v) {
  return (double)v.x + (double)v.y + (double)v.z + (double)v.w;
}

// A row's statistics as the vector forward computes them, by the warp of lanes `lane`: each
// lane loads its float4 groups of x = a (kResid false) or a + bb (true) into x (writing the
// sums to resid when it is given), then mean and rstd (*mf, *rs) from sums in double, each
// operation rounded on its own (as ln_norm, below). NV: the
// float4 groups a lane may hold, at least ceil(C / 128); a larger NV holds no more groups and
// sums in the same order, so a kernel serving every width (the gemv kernel forming a deferred
// LayerNorm, matmul.cuh) gets the same bits. a, bb and resid point at the row.
template <int NV, bool kResid>
__device__ inline void ln_vec_stats(float4 (&x)[NV], float* resid, const float* a,
                                    const float* bb, int C, int lane, float* mf, float* rs) {
  const int C4 = C / 4;
  double s = 0;
#pragma unroll
  for (int i = 0; i < NV; i++) {
    const int c = 4 * (lane + 32 * i);
    if (c < 4 * C4) {
      float4 v = ld4(a + c);
      if (kResid) {
        const float4 u = ld4(bb + c);
        v = float4{v.x + u.x, v.y + u.y, v.z + u.z, v.w + u.w};
        if (resid) st4(resid + c, v);
      }
      x[i] = v;
      s += sum4(v);
    }
  }
  s = warp_sum(s);
  const double m = __shfl_sync(0xffffffffu, s, 0) / C;
  double q = 0;
#pragma unroll
  for (int i = 0; i < NV; i++) {
    if (4 * (lane + 32 * i) < 4 * C4) {
      const double d0 = x[i].x - m, d1 = x[i].y - m, d2 = x[i].z - m, d3 = x[i].w - m;
      // q += d0 d0 + d1 d1 + d2 d2 + d3 d3, each operation rounded on its own (no fma).
      const double s01 = __dadd_rn(__dmul_rn(d0, d0), __dmul_rn(d1, d1));
      q = __dadd_rn(q, __dadd_rn(__dadd_rn(s01, __dmul_rn(d2, d2)), __dmul_rn(d3, d3)));
    }
  }
  q = warp_sum(q);
  const double var = __shfl_sync(0xffffffffu, q, 0) / C;
  *mf = (float)m;
  *rs = (float)(1.0 / sqrt(var + kLnEps));
}

// One normalised value, (v - mf) rs w + b, as the vector forward and the gemv kernel forming it
// both compute it: each operation rounded on its own, so that the compiler cannot contract the
// two kernels' copies into different fma sequences (the emulation never contracts: its bits are
// those of the expression as written).
__device__ inline float ln_norm(float v, float mf, float rs, float w, float b) {
  return __fadd_rn(__fmul_rn(__fmul_rn(v - mf, rs), w), b);
}

// The vector forward: out = LayerNorm(x), x = a (kResid false) or resid = a + bb (true),
// NV = the float4 count a lane holds, ceil(C / 128).
template <int NV, bool kResid>
__global__ void layernorm_fwd_vec_kernel(float* resid, float* out, __nv_bfloat16* out16,
                                         int ld16, float* mean, float* rstd, const float* a,
                                         const float* bb, const float* w, const float* bias,
                                         int N, int C) {
  pdl_begin();
  const int n = blockIdx.x * kLnRowsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;
  const int lane = threadIdx.x & 31, C4 = C / 4;
  const int64_t off = (int64_t)n * C;
  float4 x[NV];
  float mf, rs;
  ln_vec_stats<NV, kResid>(x, kResid ? resid + off : nullptr, a + off,
                           kResid ? bb + off : nullptr, C, lane, &mf, &rs);
#pragma unroll
  for (int i = 0; i < NV; i++) {
    const int c = 4 * (lane + 32 * i);
    if (c < 4 * C4) {
      const float4 wv = ld4(w + c), bv = ld4(bias + c), v = x[i];
      const float4 o = {ln_norm(v.x, mf, rs, wv.x, bv.x), ln_norm(v.y, mf, rs, wv.y, bv.y),
                        ln_norm(v.z, mf, rs, wv.z, bv.z), ln_norm(v.w, mf, rs, wv.w, bv.w)};
      if (out) st4(out + off + c, o);
      if (out16) {
        __nv_bfloat16* r = out16 + (int64_t)n * ld16 + c;
        r[0] = __float2bfloat16_rn(o.x), r[1] = __float2bfloat16_rn(o.y);
        r[2] = __float2bfloat16_rn(o.z), r[3] = __float2bfloat16_rn(o.w);
      }
    }
  }
  if (lane == 0) {
    if (mean) mean[n] = mf;
    if (rstd) rstd[n] = rs;
  }
}

// The vector backward's dinp (see layernorm_bwd_dinp_kernel).
template <int NV>
__global__ void layernorm_bwd_dinp_vec_kernel(float* dinp, const float* dout, const float* inp,
                                              const float* w, const float* mean,
                                              const float* rstd, int N, int C) {
  pdl_begin();
  const int n = blockIdx.x * kLnRowsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;
  const int lane = threadIdx.x & 31, C4 = C / 4;
  const int64_t off = (int64_t)n * C;
  const float m = mean[n], rs = rstd[n];
  float4 dn[NV], nm[NV];  // dout * w, and the normalised input
  double s1 = 0, s2 = 0;
#pragma unroll
  for (int i = 0; i < NV; i++) {
    const int c = 4 * (lane + 32 * i);
    if (c < 4 * C4) {
      const float4 d = ld4(dout + off + c), x = ld4(inp + off + c), wv = ld4(w + c);
      dn[i] = float4{d.x * wv.x, d.y * wv.y, d.z * wv.z, d.w * wv.w};
      nm[i] = float4{(x.x - m) * rs, (x.y - m) * rs, (x.z - m) * rs, (x.w - m) * rs};
      s1 += sum4(dn[i]);
      s2 += (double)dn[i].x * nm[i].x + (double)dn[i].y * nm[i].y +
            (double)dn[i].z * nm[i].z + (double)dn[i].w * nm[i].w;
    }
  }
  s1 = warp_sum(s1);
  s2 = warp_sum(s2);
  const float a = (float)(__shfl_sync(0xffffffffu, s1, 0) / C);
  const float bb = (float)(__shfl_sync(0xffffffffu, s2, 0) / C);
#pragma unroll
  for (int i = 0; i < NV; i++) {
    const int c = 4 * (lane + 32 * i);
    if (c < 4 * C4) {
      float4 g = ld4(dinp + off + c);
      const float4 d = dn[i], x = nm[i];
      g.x += (d.x - a - x.x * bb) * rs;
      g.y += (d.y - a - x.y * bb) * rs;
      g.z += (d.z - a - x.z * bb) * rs;
      g.w += (d.w - a - x.w * bb) * rs;
      st4(dinp + off + c, g);
    }
  }
}

// Whether a row of C floats at every pointer given can take the vector path.
inline bool ln_vec_ok(int C, std::initializer_list<const void*> ps) {
  if (C % 4 != 0 || C > kLnVecMaxC) return false;
  for (const void* p : ps) {
    if (!aligned16(p)) return false;
  }
  return true;
}

// Calls f(std::integral_constant<int, NV>) with NV = ceil(C / 128), 1..8.
template <typename F>
inline void ln_vec_dispatch(int C, F f) {
  switch ((C + 127) / 128) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    case 7: f(std::integral_constant<int, 7>{}); break;
    default: f(std::integral_constant<int, 8>{}); break;
  }
}

__global__ void layernorm_bwd_dinp_kernel(float* dinp, const float* dout, const float* inp,
                                          const float* w, const float* mean, const float* rstd,
                                          int N, int C) {
  pdl_begin();
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
  pdl_begin();
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int n0 = blockIdx.y * chunk, n1 = min(N, n0 + chunk);
  double aw = 0, ab = 0;
  // kColU rows' loads in flight before their terms are added, in row order.
  for (int nb = n0; nb < n1; nb += kColU) {
    float d[kColU], t[kColU];
#pragma unroll
    for (int u = 0; u < kColU; u++) {
      const int n = nb + u;
      if (n >= n1) break;
      const int64_t i = (int64_t)n * C + c;
      d[u] = dout[i];
      t[u] = (inp[i] - mean[n]) * rstd[n];
    }
#pragma unroll
    for (int u = 0; u < kColU; u++) {
      if (nb + u >= n1) break;
      aw += (double)d[u] * t[u];
      ab += d[u];
    }
  }
  const int64_t k = (int64_t)blockIdx.y * C + c;
  if (partw) partw[k] = aw;
  if (partb) partb[k] = ab;
}

// The vector forward of d's rows: out (fp32; null: not written), out16 (its bf16 copy, rows
// ld16 apart; null: none), resid, mean and rstd as d gives them.
inline void launch_norm_fwd_vec(const DeferredNormFwd& d, float* out, __nv_bfloat16* out16,
                                int ld16) {
  const unsigned blocks = (unsigned)((d.N + kLnRowsPerBlock - 1) / kLnRowsPerBlock);
  ln_vec_dispatch(d.C, [&](auto nv) {
    if (d.r) {
      LAUNCH((layernorm_fwd_vec_kernel<decltype(nv)::value, true>), blocks,
             32 * kLnRowsPerBlock, 0)(d.resid, out, out16, ld16, d.mean, d.rstd, d.a, d.r, d.w,
                                      d.b, d.N, d.C);
    } else {
      LAUNCH((layernorm_fwd_vec_kernel<decltype(nv)::value, false>), blocks,
             32 * kLnRowsPerBlock, 0)(nullptr, out, out16, ld16, d.mean, d.rstd, d.a, nullptr,
                                      d.w, d.b, d.N, d.C);
    }
  });
}

// A deferred norm forward's kernel (RMSNorm's, or LayerNorm's vector kernel), as
// launch_norm_fwd_vec.
inline void launch_norm_fwd(const DeferredNormFwd& d, float* out, __nv_bfloat16* out16,
                            int ld16) {
  if (d.rms) {
    launch_rmsnorm_fwd(d, out, out16, ld16);
  } else {
    launch_norm_fwd_vec(d, out, out16, ld16);
  }
}

// Runs the norm forward that the previous engine call deferred (common.cuh's DeferredNormFwd)
// as that op would have run it: its output's bf16 copy only, recorded as that call's, so that
// the op calling this reads it (or is refused) as after any producer. Where no copy can be made
// now (a graph is recorded and the scratch is too small), the fp32 output is written instead.
// Returns the copy (nullptr: the fp32 output instead).
inline __nv_bfloat16* run_deferred_norm_fwd(const char* fn) {
  const DeferredNormFwd d = g_deferred_norm_fwd;
  g_deferred_norm_fwd = DeferredNormFwd{};
  int ld16;
  __nv_bfloat16* out16 = produce_bf16(fn, d.out, d.N, d.C, &ld16);
  if (out16) {
    g_produced.serial = g_op_serial - 1;
    g_produced.by = d.rms ? (d.r ? "le_residual_rmsnorm_fwd" : "le_rmsnorm_fwd")
                          : (d.r ? "le_residual_layernorm_fwd" : "le_layernorm_fwd");
    g_produced.fp32 = false;
  }
  launch_norm_fwd(d, out16 ? nullptr : d.out, out16, ld16);
  return out16;
}

// The most rows a deferred norm forward may have: the gemv kernel's (kGemvRows, matmul.cuh),
// the only kernel that forms one.
constexpr int kNormDeferMaxRows = 8;

// Whether the forward described by d may be deferred to the matmul after it (common.cuh's
// DeferredNormFwd): told so by le_operand_only, in bf16 mode with the gemv kernel on, for rows
// that kernel may serve (1 to kNormDeferMaxRows, C a multiple of 8) with its inputs and output
// 16-byte aligned (for LayerNorm, the vector path's rows; the gemv kernel reads the output with
// vector loads where it runs after the norm's kernel and no copy could be made), and no output
// written over an input (the gemv kernel's blocks read the inputs while one writes).
inline bool defer_norm(const DeferredNormFwd& d) {
  if (!g.defer_norm_fwd || g.precision != 2 || !g.gemv || d.N <= 0 || d.N > kNormDeferMaxRows ||
      d.C % 8 != 0 || g_operand_only.out != d.out || g_operand_only.serial != g_op_serial) {
    return false;
  }
  if (d.rms ? !aligned16(d.out) || !aligned16(d.a) || !aligned16(d.r ? d.r : d.a) ||
                  !aligned16(d.w)
            : !ln_vec_ok(d.C, {d.out, d.a, d.r ? d.r : d.a, d.resid ? d.resid : d.a, d.w, d.b})) {
    return false;
  }
  const auto bytes = [](const void* p, int64_t n) {
    return std::pair<const char*, const char*>((const char*)p, (const char*)p + 4 * (p ? n : 0));
  };
  const int64_t rows = (int64_t)d.N * d.C;
  const std::pair<const char*, const char*> in[] = {bytes(d.a, rows), bytes(d.r, rows),
                                                    bytes(d.w, d.C), bytes(d.b, d.C)};
  const std::pair<const char*, const char*> outs[] = {bytes(d.out, rows), bytes(d.resid, rows),
                                                      bytes(d.mean, d.N), bytes(d.rstd, d.N)};
  for (const auto& o : outs) {
    for (const auto& i : in) {
      if (o.first < i.second && i.first < o.second) return false;
    }
  }
  return true;
}

}  // namespace le

LE_API int le_layernorm_fwd(float* out, float* mean, float* rstd, const float* inp,
                            const float* w, const float* b, int N, int C) {
  using namespace le;
  const char* fn = "le_layernorm_fwd";
  REQUIRE_INIT(fn);
  TRY(validate_layernorm_fwd(out, mean, rstd, inp, w, b, N, C));
  // Deferred to the matmul right after it (common.cuh's DeferredNormFwd).
  if (const DeferredNormFwd d{out, inp, nullptr, w, b, nullptr, mean, rstd, N, C, g_op_serial};
      defer_norm(d)) {
    g_deferred_norm_fwd = d;
    g_produced.src = nullptr;  // no copy of anything from this call yet
    return 0;
  }
  const unsigned blocks = (unsigned)((N + kLnRowsPerBlock - 1) / kLnRowsPerBlock);
  int ld16;
  __nv_bfloat16* out16 = produce_bf16(fn, out, N, C, &ld16);
  float* o = fp32_dest(out, out16);
  if (ln_vec_ok(C, {out, inp, w, b})) {
    ln_vec_dispatch(C, [&](auto nv) {
      LAUNCH((layernorm_fwd_vec_kernel<decltype(nv)::value, false>), blocks,
             32 * kLnRowsPerBlock, 0)(nullptr, o, out16, ld16, mean, rstd, inp, nullptr, w, b, N,
                                      C);
    });
  } else {
    LAUNCH(layernorm_fwd_kernel, blocks, 32 * kLnRowsPerBlock, 0)(o, out16, ld16, mean, rstd,
                                                                  inp, w, b, N, C);
  }
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
    if (ln_vec_ok(C, {dinp, dout, inp, w})) {
      ln_vec_dispatch(C, [&](auto nv) {
        LAUNCH(layernorm_bwd_dinp_vec_kernel<decltype(nv)::value>, blocks,
               32 * kLnRowsPerBlock, 0)(dinp, dout, inp, w, mean, rstd, N, C);
      });
    } else {
      LAUNCH(layernorm_bwd_dinp_kernel, blocks, 32 * kLnRowsPerBlock, 0)(
          dinp, dout, inp, w, mean, rstd, N, C);
    }
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
  // Deferred to the matmul right after it (common.cuh's DeferredNormFwd).
  if (const DeferredNormFwd d{out, a, b, w, bias, resid, mean, rstd, N, C, g_op_serial};
      defer_norm(d)) {
    g_deferred_norm_fwd = d;
    g_produced.src = nullptr;  // no copy of anything from this call yet
    return 0;
  }
  const unsigned blocks = (unsigned)((N + kLnRowsPerBlock - 1) / kLnRowsPerBlock);
  int ld16;
  __nv_bfloat16* out16 = produce_bf16(fn, out, N, C, &ld16);
  float* o = fp32_dest(out, out16);
  if (ln_vec_ok(C, {resid, out, a, b, w, bias})) {
    ln_vec_dispatch(C, [&](auto nv) {
      LAUNCH((layernorm_fwd_vec_kernel<decltype(nv)::value, true>), blocks,
             32 * kLnRowsPerBlock, 0)(resid, o, out16, ld16, mean, rstd, a, b, w, bias, N, C);
    });
  } else {
    LAUNCH(residual_layernorm_fwd_kernel, blocks, 32 * kLnRowsPerBlock, 0)(
        resid, o, out16, ld16, mean, rstd, a, b, w, bias, N, C);
  }
  return op_done(fn);
}
