// skinny.cuh: bf16 forwards of 9 to 128 rows on tensor cores, the K dimension split over
// blocks (skinny_gemm_kernel); matmul.cuh decides per shape, by timing, whether it or cuBLAS
// serves a call.
//
// A batch-1 loop pass multiplies 79 rows (K c latents and one more) by each of a layer's four
// weights, and a question's prefill some 60. cuBLAS's kernels tile the output 64 or 128 rows
// deep, so such a call runs one row tile and as many column tiles as the output is wide over
// 128: a few dozen blocks on 132 multiprocessors, each walking the whole K dimension, for a
// product whose bf16 weight takes 1 to 4 µs to read. Here a block owns kSkCols = 64 output
// columns, all rows (up to 128: 8 m16 tiles), and a slice of K; a call's grid is the column
// tiles times S slices, S the fewest that fill the device (a divisor of Cin / kSkK, at most
// kSkMaxSplits). Four warps each own 16 of the columns over every row tile. The slice's x rows
// and weight rows are staged kSkK columns at a time into shared memory, kSkStages deep
// (cp.async, or loaded and rounded where x is fp32), and multiplied with
// mma.sync.m16n8k16 (bf16 operands, fp32 sums).
//
// With S > 1 each block writes its partial sums [N, 64] to scratch (part, [S, N, Cout]); the
// last block of a column tile to arrive (a counter per tile, atomically incremented after a
// fence) adds the S partials in slice order, then the bias, and writes the output, and resets
// the counter for the next call. The sum's order is fixed by the shape and the device's SM
// count, whatever order blocks run in, so results are deterministic; they agree with cuBLAS's
// (another order of the same fp32 sums) to fp32's rounding, not to the bit.
#pragma once

#include <cuda_bf16.h>

#include "common.cuh"
#include "elementwise.cuh"

namespace le {

constexpr int kSkMinRows = 9, kSkMaxRows = 128, kSkCols = 64, kSkK = 32, kSkThreads = 128;
constexpr int kSkStages = 3, kSkMaxSplits = 16, kSkMaxTiles = 4096;
constexpr int kSkPitch = kSkK + 8;  // a staged row's pitch in bf16 (80 bytes: 16-byte aligned,
                                    // and the 8 rows of a fragment load hit distinct banks)
constexpr int kSkXTile = kSkMaxRows * kSkPitch, kSkWTile = kSkCols * kSkPitch;
constexpr size_t kSkSmem = kSkStages * (kSkXTile + kSkWTile) * sizeof(__nv_bfloat16);
// The kernel's static `last` flag takes 128 bytes beside the dynamic block (nvcc aligns the
// dynamic block to 128): the launch's whole shared memory stays within the 48 KiB that needs no
// opt-in.
static_assert(kSkSmem + 128 <= 48 * 1024, "within the shared memory a launch may ask for");

// Eight consecutive x values into shared memory as bf16: one cp.async from a bf16 copy, or
// two float4 loads rounded to the nearest bf16 (the bf16 GEMM's operand) from fp32; kGelu: a
// deferred GELU's input (common.cuh's DeferredGeluFwd), whose output is formed (ld8_f32), as
// GELU's kernel writes its copy.
template <bool kGelu = false>
__device__ inline void sk_stage8(__nv_bfloat16* dst, const __nv_bfloat16* src) {
  cp_async16(dst, src);
}
template <bool kGelu = false>
__device__ inline void sk_stage8(__nv_bfloat16* dst, const float* src) {
  float v[8];
  ld8_f32<kGelu>(src, v);
  uint4 q;
  q.x = pack_bf16x2(v[0], v[1]), q.y = pack_bf16x2(v[2], v[3]);
  q.z = pack_bf16x2(v[4], v[5]), q.w = pack_bf16x2(v[6], v[7]);
  *reinterpret_cast<uint4*>(dst) = q;
}

// out[n, c] = sum_k x[n, k] w[c, k] (+ bias[c]) for kSkMinRows <= N <= kSkMaxRows, x rows ldx
// apart, w the weight's kept bf16 copy [Cout, Cin]; grid (ceil(Cout / kSkCols), S), S *
// kslice = Cin, kslice a multiple of kSkK; kSkThreads threads. part: [S, N, Cout] fp32
// scratch, arrived: a zeroed counter per column tile (both unused when S = 1). kGelu (XT
// float): x is a deferred GELU's input, its output formed as it is staged.
template <class XT, bool kGelu = false>
__global__ void __launch_bounds__(kSkThreads)
    skinny_gemm_kernel(float* out, const XT* x, int ldx, const __nv_bfloat16* w,
                       const float* bias, int N, int Cin, int Cout, int kslice, float* part,
                       unsigned* arrived) {
  pdl_begin();
  // Dynamic shared memory (kSkSmem bytes): the staged x rows, then the weight rows, each
  // kSkStages buffers deep.
  __nv_bfloat16* xs = dyn_shared<__nv_bfloat16>();
  __nv_bfloat16* ws = xs + kSkStages * kSkXTile;
  __shared__ bool last;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int c0 = blockIdx.x * kSkCols, k0 = blockIdx.y * kslice, steps = kslice / kSkK;
  const int S = gridDim.y, mt = (N + 15) / 16;
  // Step s's columns into buffer b. Rows past N and columns past Cout are not staged: the
  // products they feed are outputs that are never written.
  const auto stage = [&](int s, int b) {
    const int k = k0 + s * kSkK;
    for (int i = tid; i < N * (kSkK / 8); i += kSkThreads) {
      const int r = i / (kSkK / 8), q = i % (kSkK / 8);
      sk_stage8<kGelu>(xs + b * kSkXTile + r * kSkPitch + 8 * q, x + (int64_t)r * ldx + k + 8 * q);
    }
    for (int i = tid; i < kSkCols * (kSkK / 8); i += kSkThreads) {
      const int c = i / (kSkK / 8), q = i % (kSkK / 8);
      if (c0 + c < Cout) {
        cp_async16(ws + b * kSkWTile + c * kSkPitch + 8 * q,
                   w + (int64_t)(c0 + c) * Cin + k + 8 * q);
      }
    }
  };
  float acc[kSkMaxRows / 16][2][4];
#pragma unroll
  for (int m = 0; m < kSkMaxRows / 16; m++) {
#pragma unroll
    for (int j = 0; j < 2; j++) {
#pragma unroll
      for (int r = 0; r < 4; r++) acc[m][j][r] = 0.f;
    }
  }
  for (int s = 0; s < kSkStages - 1; s++) {
    if (s < steps) stage(s, s);
    cp_async_commit();
  }
  for (int s = 0; s < steps; s++) {
    cp_async_wait<kSkStages - 2>();  // this thread's copies of step s have landed
    __syncthreads();                 // everyone's have, and step s - 1's buffer is free
    if (s + kSkStages - 1 < steps) stage(s + kSkStages - 1, (s + kSkStages - 1) % kSkStages);
    cp_async_commit();
    const __nv_bfloat16* X = xs + s % kSkStages * kSkXTile;
    const __nv_bfloat16* W = ws + s % kSkStages * kSkWTile;
#pragma unroll
    for (int kk = 0; kk < kSkK; kk += 16) {
      uint32_t b[2][2];
      tc_frag_bt(b[0], W, kSkPitch, 16 * warp, kk, g, t);
      tc_frag_bt(b[1], W, kSkPitch, 16 * warp + 8, kk, g, t);
#pragma unroll
      for (int m = 0; m < kSkMaxRows / 16; m++) {
        if (m < mt) {
          uint32_t a[4];
          tc_frag_a(a, X, kSkPitch, 16 * m, kk, g, t);
          mma_bf16_16816(acc[m][0], a, b[0]);
          mma_bf16_16816(acc[m][1], a, b[1]);
        }
      }
    }
  }
  cp_async_wait<0>();
  // The lane's elements: rows 16 m + g (+ 8), columns c0 + 16 warp + 8 j + 2 t (+ 1).
  float* dst = S == 1 ? out : part + (int64_t)blockIdx.y * N * Cout;
#pragma unroll
  for (int m = 0; m < kSkMaxRows / 16; m++) {
#pragma unroll
    for (int j = 0; j < 2; j++) {
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int r = 16 * m + g + 8 * h, c = c0 + 16 * warp + 8 * j + 2 * t;
        if (m >= mt || r >= N) continue;
        for (int e = 0; e < 2; e++) {
          if (c + e >= Cout) continue;
          const float v = acc[m][j][2 * h + e];
          dst[(int64_t)r * Cout + c + e] = S == 1 && bias ? v + bias[c + e] : v;
        }
      }
    }
  }
  if (S == 1) return;
  __threadfence();  // this block's partials are visible device-wide before it is counted
  __syncthreads();
  if (tid == 0) last = atomicAdd(&arrived[blockIdx.x], 1u) == (unsigned)S - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int i = tid; i < N * kSkCols; i += kSkThreads) {
    const int r = i / kSkCols, c = c0 + i % kSkCols;
    if (c >= Cout) continue;
    float v = __ldcg(part + (int64_t)r * Cout + c);
    for (int s = 1; s < S; s++) v += __ldcg(part + ((int64_t)s * N + r) * Cout + c);
    out[(int64_t)r * Cout + c] = bias ? v + bias[c] : v;
  }
  if (tid == 0) arrived[blockIdx.x] = 0;
}

// S for a call: the fewest K slices (a divisor of Cin / kSkK, at most kSkMaxSplits) that give
// the grid at least one block a multiprocessor; the most allowed when none does.
inline int skinny_splits(int Cin, int Cout, int sms) {
  const int steps = Cin / kSkK, tiles = (Cout + kSkCols - 1) / kSkCols;
  int s = 1;
  for (int d = 1; d <= steps && d <= kSkMaxSplits; d++) {
    if (steps % d) continue;
    s = d;
    if ((int64_t)tiles * d >= sms) break;
  }
  return s;
}

}  // namespace le
