// elementwise.cuh: strided row copies, add, scale, GELU and dropout (forward and backward).
//
// One thread per element, grid-stride. le_copy_rows with overlapping destination rows (a zero
// stride, say) must apply its rows in order (b outer, r inner), so that case runs one thread
// per column, looping over the rows: the CPU engine's order, and no races (or a single thread
// when rows overlap with a shift).
//
// GELU is the tanh approximation written as x * sigmoid(2u), u = sqrt(2/pi)(x + 0.044715x^3),
// exactly as the CPU engine computes it (one exp, no cancellation near tanh = -1). The exp
// argument is clamped at 88.3 as the CPU engine's vexp does, so sigmoid never sees inf.
#pragma once

#include "common.cuh"
#include "weights.cuh"

namespace le {

// T: float, or uint16_t for bf16 storage (copied as stored; never accumulated).
template <class T>
__global__ void copy_rows_kernel(T* dst, const T* src, int rows, int cols, int64_t dst_bs,
                                 int64_t dst_rs, int64_t src_bs, int64_t src_rs, int64_t total,
                                 bool accumulate) {
  pdl_begin();
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total;
       t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = t % cols, br = t / cols;
    const int64_t b = br / rows, r = br % rows;
    T* d = dst + b * dst_bs + r * dst_rs + c;
    const T s = src[b * src_bs + r * src_rs + c];
    if constexpr (std::is_same_v<T, float>) {
      *d = accumulate ? *d + s : s;
    } else {
      *d = s;
    }
  }
}

// Overlapping destinations: each thread owns one column and walks the rows in order. When rows
// overlap with a column shift (a stride that is not a multiple of cols), one column's element
// can be another column's too, so one thread (serial) does the whole copy in the CPU's order.
__global__ void copy_rows_ordered_kernel(float* dst, const float* src, int nb, int rows, int cols,
                                         int64_t dst_bs, int64_t dst_rs, int64_t src_bs,
                                         int64_t src_rs, bool accumulate, bool serial) {
  pdl_begin();
  const int c0 = serial ? 0 : blockIdx.x * blockDim.x + threadIdx.x;
  const int c1 = serial ? cols : c0 + 1;
  if (c0 >= cols) return;
  for (int b = 0; b < nb; b++)
    for (int r = 0; r < rows; r++)
      for (int c = c0; c < c1; c++) {
        float* d = dst + b * dst_bs + r * dst_rs + c;
        const float s = src[b * src_bs + r * src_rs + c];
        *d = accumulate ? *d + s : s;
      }
}

__global__ void add_kernel(float* out, const float* a, const float* b, int64_t n) {
  pdl_begin();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i] = a[i] + b[i];
}

__global__ void scale_kernel(float* x, float s, int64_t n) {
  pdl_begin();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    x[i] *= s;
}

constexpr float kGeluA = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluB = 0.044715f;

__device__ inline float exp_clamped(float t) { return expf(fminf(t, 88.3f)); }

// Each operation rounded on its own (no contraction into fma), so that every kernel forming
// it (GELU's, and the matmul kernels that stage a deferred GELU's output) gives the same bits.
__device__ inline float gelu_of(float x) {
  const float x3 = __fmul_rn(__fmul_rn(__fmul_rn(kGeluB, x), x), x);
  const float u = __fmul_rn(kGeluA, __fadd_rn(x, x3));
  return x / __fadd_rn(1.f, exp_clamped(__fmul_rn(-2.f, u)));
}

// Eight consecutive fp32 values from p (16-byte aligned), or with kGelu each one's gelu_of.
template <bool kGelu>
__device__ inline void ld8_f32(const float* p, float v[8]) {
  const float4 a = ld4(p), b = ld4(p + 4);
  const float x[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
  for (int i = 0; i < 8; i++) v[i] = kGelu ? gelu_of(x[i]) : x[i];
}

// d gelu / dx = s + x s (1 - s) 2 u',  s = sigmoid(2u), u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
// Each operation rounded on its own, as in gelu_of: it is inlined into GELU's backward and
// into the matmul's column sums (a deferred GELU backward), which must give the same bits.
__device__ inline float gelu_grad_of(float x) {
  const float x3 = __fmul_rn(__fmul_rn(__fmul_rn(kGeluB, x), x), x);
  const float u = __fmul_rn(kGeluA, __fadd_rn(x, x3));
  const float s = 1.f / __fadd_rn(1.f, exp_clamped(__fmul_rn(-2.f, u)));
  const float du = __fmul_rn(kGeluA, __fadd_rn(1.f, __fmul_rn(__fmul_rn(3.f * kGeluB, x), x)));
  const float ds = __fmul_rn(__fmul_rn(__fmul_rn(x, s), __fadd_rn(1.f, -s)), 2.f);
  return __fadd_rn(s, __fmul_rn(ds, du));
}

// acc + gelu'(x) d with one rounding (an explicit fma, so that every kernel forming it, this
// file's and matmul.cuh's column sums, gives the same bits whatever the compiler contracts).
__device__ inline float gelu_bwd_of(float x, float d, float acc) {
  return fmaf(gelu_grad_of(x), d, acc);
}

// out16: the bf16 rounding of out as well, when given (common.cuh's produced operands); out
// null: only that copy (le_operand_only). inp: fp32, or bf16 storage (T = __nv_bfloat16).
// kVec: four elements a load and store over the first n / 4 * 4 elements (every pointer
// aligned to four of its elements), the rest one at a time; the same arithmetic per element
// either way.
template <bool kVec, class T>
__global__ void gelu_fwd_kernel(float* out, __nv_bfloat16* out16, const T* inp, int64_t n) {
  pdl_begin();
  const int64_t t0 = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int64_t nv = kVec ? n / 4 : 0;
  for (int64_t i = t0; i < nv; i += stride) {
    const float4 x = ld4f(inp + 4 * i);
    const float4 v = {gelu_of(x.x), gelu_of(x.y), gelu_of(x.z), gelu_of(x.w)};
    if (out) st4(out + 4 * i, v);
    if (out16) {
      __nv_bfloat16* o = out16 + 4 * i;
      o[0] = __float2bfloat16_rn(v.x), o[1] = __float2bfloat16_rn(v.y);
      o[2] = __float2bfloat16_rn(v.z), o[3] = __float2bfloat16_rn(v.w);
    }
  }
  for (int64_t i = 4 * nv + t0; i < n; i += stride) {
    const float v = gelu_of(to_f32(inp[i]));
    if (out) out[i] = v;
    if (out16) out16[i] = __float2bfloat16_rn(v);
  }
}

// acc: dinp += ..., else dinp = 0 + ... without reading dinp (the bits of a zero-fill and
// an add). inp: fp32, or bf16 storage (T = __nv_bfloat16).
template <bool kVec, class T>
__global__ void gelu_bwd_kernel(float* dinp, const T* inp, const float* dout, int64_t n,
                                bool acc) {
  pdl_begin();
  const int64_t t0 = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int64_t nv = kVec ? n / 4 : 0;
  for (int64_t i = t0; i < nv; i += stride) {
    const float4 x = ld4f(inp + 4 * i), d = ld4(dout + 4 * i);
    float4 g = acc ? ld4(dinp + 4 * i) : float4{0.f, 0.f, 0.f, 0.f};
    g.x = gelu_bwd_of(x.x, d.x, g.x), g.y = gelu_bwd_of(x.y, d.y, g.y);
    g.z = gelu_bwd_of(x.z, d.z, g.z), g.w = gelu_bwd_of(x.w, d.w, g.w);
    st4(dinp + 4 * i, g);
  }
  for (int64_t i = 4 * nv + t0; i < n; i += stride) {
    dinp[i] = gelu_bwd_of(to_f32(inp[i]), dout[i], acc ? dinp[i] : 0.f);
  }
}

__global__ void dropout_fwd_kernel(float* x, uint8_t* mask, int64_t n, float p, float scale,
                                   uint64_t seed, const uint64_t* seed_at) {
  pdl_begin();
  if (seed_at) seed = *seed_at;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const bool keep = drop_keep(seed, i, p);
    mask[i] = keep;
    x[i] = keep ? x[i] * scale : 0.0f;
  }
}

__global__ void dropout_bwd_kernel(float* dinp, const float* dout, const uint8_t* mask,
                                   int64_t n, float scale) {
  pdl_begin();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    dinp[i] = mask[i] ? dout[i] * scale : 0.0f;
  }
}

}  // namespace le

// dst[b*dst_bs + r*dst_rs + c] (=|+=) src[b*src_bs + r*src_rs + c]
LE_API int le_copy_rows(float* dst, const float* src, int nb, int rows, int cols, int64_t dst_bs,
                        int64_t dst_rs, int64_t src_bs, int64_t src_rs, int accumulate) {
  using namespace le;
  const char* fn = "le_copy_rows";
  REQUIRE_INIT(fn);
  TRY(validate_copy_rows(dst, src, nb, rows, cols, dst_bs, dst_rs, src_bs, src_rs,
                         accumulate));
  if (nb == 0 || rows == 0 || cols == 0) return 0;
  const bool b16 = in_bf16_block(dst);  // and src (validated): disjoint rows, copied as stored
  wrote(dst, ((uint64_t)(nb - 1) * dst_bs + (uint64_t)(rows - 1) * dst_rs + cols) *
                 (b16 ? 2 : 4));
  const bool disjoint = copy_rows_disjoint(nb, rows, cols, dst_bs, dst_rs);
  if (b16) {
    const int64_t total = (int64_t)nb * rows * cols;
    LAUNCH(copy_rows_kernel<uint16_t>, grid_for(total, 256), 256, 0)(
        reinterpret_cast<uint16_t*>(dst), reinterpret_cast<const uint16_t*>(src), rows, cols,
        dst_bs, dst_rs, src_bs, src_rs, total, false);
  } else if (disjoint) {
    const int64_t total = (int64_t)nb * rows * cols;
    LAUNCH(copy_rows_kernel<float>, grid_for(total, 256), 256, 0)(
        dst, src, rows, cols, dst_bs, dst_rs, src_bs, src_rs, total, accumulate != 0);
  } else {
    // Row starts that are all multiples of cols keep each element in one column.
    const bool by_column =
        (rows == 1 || dst_rs % cols == 0) && (nb == 1 || dst_bs % cols == 0);
    const unsigned blocks = by_column ? grid_for(cols, 128) : 1, threads = by_column ? 128 : 1;
    LAUNCH(copy_rows_ordered_kernel, blocks, threads, 0)(
        dst, src, nb, rows, cols, dst_bs, dst_rs, src_bs, src_rs, accumulate != 0, !by_column);
  }
  return op_done(fn);
}

LE_API int le_add(float* out, const float* a, const float* b, int64_t n) {
  using namespace le;
  REQUIRE_INIT("le_add");
  TRY(validate_add(out, a, b, n));
  if (n == 0) return 0;
  wrote(out, (uint64_t)n * 4);
  LAUNCH(add_kernel, grid_for(n, 256), 256, 0)(out, a, b, n);
  return op_done("le_add");
}

LE_API int le_scale(float* x, float s, int64_t n) {
  using namespace le;
  REQUIRE_INIT("le_scale");
  TRY(validate_scale(x, n));
  if (n == 0) return 0;
  wrote(x, (uint64_t)n * 4);
  LAUNCH(scale_kernel, grid_for(n, 256), 256, 0)(x, s, n);
  return op_done("le_scale");
}

namespace le {

// Whether p is aligned to four elements of T (the vector kernels' loads).
template <class T>
inline bool aligned4(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % (4 * sizeof(T)) == 0;
}

// GELU's kernel over n values of inp (T: fp32, or bf16 storage): out (fp32; null: not
// written) and out16 (bf16; null: none).
template <class T>
inline void launch_gelu_fwd(float* out, __nv_bfloat16* out16, const T* inp, int64_t n) {
  if ((!out || aligned16(out)) && aligned4(inp)) {
    const unsigned grid = grid_for(n / 4 + n % 4, 256);
    LAUNCH((gelu_fwd_kernel<true, T>), grid, 256, 0)(out, out16, inp, n);
  } else {
    LAUNCH((gelu_fwd_kernel<false, T>), grid_for(n, 256), 256, 0)(out, out16, inp, n);
  }
}

// Runs the GELU forward that the previous engine call deferred (common.cuh's DeferredGeluFwd)
// as le_gelu_fwd would have run it: its output's bf16 copy only, recorded as that call's, so
// that the matmul calling this reads it as any producer's. Where no copy can be made now (a
// graph is recorded and the scratch is too small), the fp32 output is written instead, and the
// matmul rounds it as it would any input. Returns the copy (nullptr: the fp32 output instead).
inline __nv_bfloat16* run_deferred_gelu_fwd(const char* fn) {
  const DeferredGeluFwd d = g_deferred_gelu_fwd;
  g_deferred_gelu_fwd = DeferredGeluFwd{};
  int ld16;
  __nv_bfloat16* out16 = produce_bf16(fn, d.out, d.n, 0, &ld16);
  if (out16) {
    g_produced.serial = g_op_serial - 1;
    g_produced.by = "le_gelu_fwd";
    g_produced.fp32 = false;
  }
  launch_gelu_fwd(out16 ? nullptr : d.out, out16, d.inp, d.n);
  return out16;
}

}  // namespace le

LE_API int le_gelu_fwd(float* out, const float* inp, int64_t n) {
  using namespace le;
  const char* fn = "le_gelu_fwd";
  REQUIRE_INIT(fn);
  bool in16;
  TRY(validate_gelu_fwd(out, inp, n, &in16));
  if (n == 0) return 0;
  // Deferred to the matmul right after it (common.cuh's DeferredGeluFwd): told so by
  // le_operand_only, in bf16 mode; that matmul stages from an fp32 inp with float4 loads.
  if (g.defer_gelu_fwd && g.precision == 2 && g_operand_only.out == out &&
      g_operand_only.serial == g_op_serial && aligned16(inp) && !in16) {
    g_deferred_gelu_fwd = {out, inp, n, g_op_serial};
    g_produced.src = nullptr;  // no copy of anything from this call yet
    return 0;
  }
  int ld16;
  __nv_bfloat16* out16 = produce_bf16(fn, out, n, 0, &ld16);
  with_stored(inp, in16, [&](auto* in) { launch_gelu_fwd(fp32_dest(out, out16), out16, in, n); });
  return op_done(fn);
}

LE_API int le_gelu_bwd(float* dinp, const float* inp, const float* dout, int64_t n,
                       int accumulate) {
  using namespace le;
  const char* fn = "le_gelu_bwd";
  REQUIRE_READY(fn);
  g_op_serial++;
  // A deferred norm forward (the rebuilt input of the matmul backward after this) runs
  // now, its copy then passed on as when it ran as its own op.
  if (deferred_norm_fwd()) run_deferred_norm_fwd(fn);
  // Deferred to the matmul backward right after it (common.cuh's DeferredGelu): told so by
  // le_operand_only, in bf16 mode, overwriting dinp.
  const bool defer = g.defer_gelu_bwd && g.precision == 2 && accumulate == 0 && n > 0 &&
                     g_operand_only.out == dinp && g_operand_only.serial == g_op_serial;
  // Deferred, it may stand between a producer and its matmul, but it still must not follow
  // another deferred GELU backward or forward (whose output would never be formed) nor read an
  // output that its producer wrote only in bf16: then the check fails as for any other op.
  const ProducedCopy* c = operand_only_copy();
  const bool reads_copy =
      c && (copy_overlaps(c, inp, n, in_bf16_block(inp) ? 2 : 4) || copy_overlaps(c, dout, n));
  if (!defer || deferred_gelu() || deferred_gelu_fwd() || reads_copy) {
    TRY(check_operand_consumed(fn));
  }
  bool in16;
  TRY(validate_gelu_bwd(dinp, inp, dout, n, &in16));
  if (n == 0) return 0;
  if (defer) {
    g_deferred_gelu = {dinp, inp, dout, n, g_op_serial, in16};
    // Nothing is written: the copy the op before made still serves the matmul after.
    if (g_produced.src && by_previous_call(g_produced.serial)) g_produced.serial = g_op_serial;
    return 0;
  }
  const bool acc = accumulate != 0;
  with_stored(inp, in16, [&](auto* in) {
    using T = stored_t<decltype(in)>;
    if (aligned16(dinp) && aligned4(in) && aligned16(dout)) {
      const unsigned grid = grid_for(n / 4 + n % 4, 256);
      LAUNCH((gelu_bwd_kernel<true, T>), grid, 256, 0)(dinp, in, dout, n, acc);
    } else {
      LAUNCH((gelu_bwd_kernel<false, T>), grid_for(n, 256), 256, 0)(dinp, in, dout, n, acc);
    }
  });
  return op_done("le_gelu_bwd");
}

LE_API int le_dropout_fwd(float* x, uint8_t* mask, int64_t n, float p, uint64_t seed,
                          const uint64_t* seed_at) {
  using namespace le;
  REQUIRE_INIT("le_dropout_fwd");
  TRY(validate_dropout_fwd(x, mask, n, p, seed_at));
  if (n == 0) return 0;
  LAUNCH(dropout_fwd_kernel, grid_for(n, 256), 256, 0)(x, mask, n, p, 1.0f / (1.0f - p), seed,
                                                       seed_at);
  return op_done("le_dropout_fwd");
}

LE_API int le_dropout_bwd(float* dinp, const float* dout, const uint8_t* mask, int64_t n,
                          float p) {
  using namespace le;
  REQUIRE_INIT("le_dropout_bwd");
  TRY(validate_dropout_bwd(dinp, dout, mask, n, p));
  if (n == 0) return 0;
  LAUNCH(dropout_bwd_kernel, grid_for(n, 256), 256, 0)(dinp, dout, mask, n, 1.0f / (1.0f - p));
  return op_done("le_dropout_bwd");
}
