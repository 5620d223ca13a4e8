// weights.cuh: bf16 copies of the weights (le_keep_bf16).
//
// In bf16 mode every matmul multiplies bf16 operands. An activation is new at every call and
// is rounded into scratch each time; a weight changes only when the optimiser steps, yet
// without a kept copy it is rounded again at every call that reads it: in a LOTUS step each
// layer's four weights are read by R + 2 forward chunks and as many backward ones, and in
// inference by every loop pass and every answer token. At batch 1 that rounding is most of a
// pass's memory traffic.
//
// A range declared with le_keep_bf16 gets a bf16 twin, allocated and filled at the first
// matmul that reads the range in bf16 mode. le_adamw writes the twin in the same kernel that
// updates the fp32 master weights, so it stays fresh through training. Any other write into
// the range through the engine's generic writers (wrote()) marks it stale, and the next matmul
// that reads it rebuilds it whole, once. The twin holds exactly what rounding at each call
// would give, so results are bit-identical either way.
#pragma once

#include <cuda_bf16.h>

#include "common.cuh"

namespace le {

__global__ void to_bf16_kernel(__nv_bfloat16* out, const float* in, int64_t n) {
  pdl_begin();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i] = __float2bfloat16_rn(in[i]);
}

struct WeightCopy {
  const float* p = nullptr;  // the declared fp32 range
  int64_t n = 0;
  __nv_bfloat16* h = nullptr;  // its bf16 twin, once a matmul has needed it
  bool fresh = false;          // h holds the rounding of the current p
};
constexpr int kWeightCopies = 8;
WeightCopy g_weights[kWeightCopies];

inline void drop_weight_copy(WeightCopy& w) {
  // Queued kernels may still read the twin: the stream is waited for first (cudaFree may
  // wait, but the runtime does not promise it). An error is sticky, and the next op reports it.
  if (w.h) {
    (void)cudaStreamSynchronize(g.stream);
    cudaFree(w.h);
    g_memory_epoch++;  // graphs that read it are out of date
  }
  w = WeightCopy{};
}

// The declared range that holds all of [x, x + n), or nullptr.
inline WeightCopy* weight_copy_of(const float* x, int64_t n) {
  for (WeightCopy& w : g_weights) {
    if (w.p && x >= w.p && x + n <= w.p + w.n) return &w;
  }
  return nullptr;
}

// The engine wrote [p, p + bytes) through a generic entry point: forget index checks there
// (common.cuh) and mark the weight copies it touches stale. Writing no bytes touches nothing.
inline void wrote(const void* p, uint64_t bytes) {
  if (bytes == 0) return;
  forget_checked(p, bytes);
  for (WeightCopy& w : g_weights) {
    if (w.p && overlaps(p, bytes, w.p, (uint64_t)w.n * 4)) w.fresh = false;
  }
}

// le_free of the block at p: copies of ranges inside it go with it.
inline void freed(const void* p, uint64_t bytes) {
  forget_checked(p, bytes);
  for (WeightCopy& w : g_weights) {
    if (w.p && overlaps(p, bytes, w.p, (uint64_t)w.n * 4)) drop_weight_copy(w);
  }
}

// Rounds a stale copy again from its fp32 range (one launch); a fresh one is left as it is.
inline void refresh(WeightCopy& w) {
  if (w.fresh) return;
  LAUNCH(to_bf16_kernel, grid_for(w.n, 256), 256, 0)(w.h, w.p, w.n);
  w.fresh = true;
}

// The bf16 twin of [x, x + n) if x lies in a declared range, made fresh first if needed; else
// nullptr (the caller rounds into scratch). Fails (returns 1) only if allocation fails.
inline int kept_bf16(const char* fn, const float* x, int64_t n, const __nv_bfloat16** out) {
  *out = nullptr;
  WeightCopy* w = weight_copy_of(x, n);
  if (!w) return 0;
  if (!w->h && g.capturing) {  // allocating would end the capture
    return fail("%s: the bf16 copy of these weights (le_keep_bf16) is made at their first "
                "matmul, which cannot be recorded into a graph; run the ops once before "
                "le_graph_begin",
                fn);
  }
  if (!w->h) {
    cudaError_t e = cudaMalloc(&w->h, (size_t)w->n * sizeof(__nv_bfloat16));
    if (e != cudaSuccess) {
      w->h = nullptr;
      (void)cudaGetLastError();
      return fail("%s: cannot allocate %.2f GiB for the bf16 copy of the weights (le_keep_bf16): "
                  "%s; reduce the batch size or the model",
                  fn, w->n * 2 / 1073741824.0, cudaGetErrorString(e));
    }
    w->fresh = false;
  }
  refresh(*w);
  *out = w->h + (x - w->p);
  return 0;
}

}  // namespace le

LE_API int le_keep_bf16(const float* p, int64_t n) {
  using namespace le;
  const char* fn = "le_keep_bf16";
  REQUIRE_INIT(fn);
  REQUIRE_NOT_CAPTURING(fn);
  TRY(validate_keep_bf16(p, n));
  if (n == 0) {
    for (WeightCopy& w : g_weights) {
      if (w.p == p) drop_weight_copy(w);
    }
    return 0;
  }
  for (WeightCopy& w : g_weights) {
    if (w.p == p && w.n == n) return 0;  // already declared
    if (w.p && overlaps(p, (uint64_t)n * 4, w.p, (uint64_t)w.n * 4)) {
      return fail("%s: [%p, +%lld floats) overlaps the range declared at %p (%lld floats); "
                  "forget that one first (n = 0)",
                  fn, (const void*)p, (long long)n, (const void*)w.p, (long long)w.n);
    }
  }
  for (WeightCopy& w : g_weights) {
    if (!w.p) {
      w = WeightCopy{p, n, nullptr, false};
      return 0;
    }
  }
  return fail("%s: %d ranges are declared already; forget one first (n = 0)", fn,
              kWeightCopies);
}
