// embed.cuh: token + position embedding, forward and backward.
//
// Forward: out[n, c] = wte[ids[n], c] + wpe[pos[n], c], one thread per element.
//
// Backward: dwte[ids[n]] += dout[n] and dwpe[pos[n]] += dout[n]. Rows repeat (the same token
// twice), so threads must not race on a row, and atomics would make the sums' order, and so
// their bits, depend on timing. Instead each thread owns one column c of one range of table
// rows [v0, v1) and walks n = 0..N-1 in order, adding the rows whose id falls in its range.
// Every gradient element is therefore summed over n in ascending order in fp32, exactly as
// the CPU engine does: the results are bit-identical to it. The ids are read by every thread
// of a block at the same address (a broadcast), so the cost is N reads per thread plus the
// rows that match, read a few at a time; a run of matches of one row is summed in a register.
//
// The ABI carries no vocabulary size: ids and pos are checked against the rows that fit in
// the blocks holding wte and wpe, on the device, before anything is written.
#pragma once

#include "common.cuh"

namespace le {

__global__ void embed_fwd_kernel(float* out, const int32_t* ids, const int32_t* pos,
                                 const float* wte, const float* wpe, int N, int C) {
  pdl_begin();
  const int64_t total = (int64_t)N * C;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total;
       t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = t / C, c = t % C;
    const int id = ids[n];
    const float te = id >= 0 ? wte[(int64_t)id * C + c] : 0.f;
    const float pe = wpe ? wpe[(int64_t)pos[n] * C + c] : 0.f;
    out[t] = te + pe;
  }
}

// grid: (ceil(C / blockDim.x), ranges); range r covers table rows [r*rows/ranges, ...).
// The ids are staged in shared memory kEmbedIds at a time (every thread walks all of them).
// A thread reads kEmbedU ids and issues the dout loads of those that fall in its range before
// it adds any: the walk is bound by load latency, and the thread that owns the row of
// LOTUS's latent token adds thousands of rows of dout. The row being summed stays in a
// register while consecutive matches repeat it. The additions are those of a read-modify-write
// of memory per match, in the same order (dout must not overlap the table, as everywhere).
constexpr int kEmbedIds = 2048;
constexpr int kEmbedU = 8;
__global__ void embed_bwd_kernel(float* table_grad, const float* dout, const int32_t* idx, int N,
                                 int C, int64_t rows, int ranges) {
  pdl_begin();
  __shared__ int32_t ids[kEmbedIds];
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  const bool active = c < C;  // no early return: every thread stages ids
  const int64_t v0 = rows * blockIdx.y / ranges, v1 = rows * (blockIdx.y + 1) / ranges;
  int64_t cur = -1;
  float acc = 0.f;
  for (int n0 = 0; n0 < N; n0 += kEmbedIds) {
    const int nn = min(kEmbedIds, N - n0);
    __syncthreads();  // the previous chunk is no longer read
    for (int k = threadIdx.x; k < nn; k += blockDim.x) ids[k] = idx[n0 + k];
    __syncthreads();
    if (!active) continue;
    for (int k0 = 0; k0 < nn; k0 += kEmbedU) {
      int64_t v[kEmbedU];
      float x[kEmbedU];
#pragma unroll
      for (int u = 0; u < kEmbedU; u++) {
        const int k = k0 + u;
        v[u] = k < nn ? ids[k] : -1;
        if (v[u] < v0 || v[u] >= v1) v[u] = -1;  // also negative ids (no token row)
        x[u] = v[u] >= 0 ? dout[(int64_t)(n0 + k) * C + c] : 0.f;
      }
#pragma unroll
      for (int u = 0; u < kEmbedU; u++) {
        if (v[u] < 0) continue;
        if (v[u] != cur) {
          if (cur >= 0) table_grad[cur * C + c] = acc;
          cur = v[u];
          acc = table_grad[cur * C + c];
        }
        acc += x[u];
      }
    }
  }
  if (active && cur >= 0) table_grad[cur * C + c] = acc;
}

// Validates ids and pos against the table rows that fit in their blocks. wte / wpe NULL: that
// index array is not checked (nor read).
inline int check_embed_indices(const char* fn, const int32_t* ids, const int32_t* pos,
                               const float* wte, const float* wpe, int N, int C) {
  const uint64_t vrows = wte ? rows_in_block(wte, (uint64_t)C * 4) : 0;
  const uint64_t prows = wpe ? rows_in_block(wpe, (uint64_t)C * 4) : 0;
  int bad[2] = {kNoBad, kNoBad};
  TRY(find_bad_indices(fn, wte ? ids : nullptr, (int64_t)vrows, true, wpe ? pos : nullptr,
                       (int64_t)prows, false, N, bad));
  if (bad[0] != kNoBad) return fail_bad_id(fn, bad[0], read_int(ids + bad[0]), vrows, C);
  if (bad[1] != kNoBad) return fail_bad_pos(fn, bad[1], read_int(pos + bad[1]), prows, C);
  return 0;
}

inline void launch_embed_bwd(float* grad, const float* dout, const int32_t* idx, int N, int C,
                             uint64_t rows) {
  if (rows == 0) return;
  // About 32k threads: enough to fill the GPU's schedulers, few enough that the N-long walk
  // each thread makes stays cheap.
  int64_t ranges = (32768 + C - 1) / C;
  if (ranges > (int64_t)rows) ranges = (int64_t)rows;
  if (ranges > 65535) ranges = 65535;
  if (ranges < 1) ranges = 1;
  const int threads = C < 128 ? ((C + 31) / 32) * 32 : 128;
  dim3 grid((C + threads - 1) / threads, (unsigned)ranges);
  LAUNCH(embed_bwd_kernel, grid, threads, 0)(grad, dout, idx, N, C, (int64_t)rows, (int)ranges);
}

}  // namespace le

LE_API int le_embed_fwd(float* out, const int32_t* ids, const int32_t* pos, const float* wte,
                        const float* wpe, int N, int C) {
  using namespace le;
  const char* fn = "le_embed_fwd";
  REQUIRE_INIT(fn);
  TRY(validate_embed_fwd(out, ids, pos, wte, wpe, N, C));
  TRY(check_embed_indices(fn, ids, pos, wte, wpe, N, C));
  LAUNCH(embed_fwd_kernel, grid_for((int64_t)N * C, 256), 256, 0)(out, ids, pos, wte, wpe, N, C);
  return op_done(fn);
}

LE_API int le_embed_bwd(float* dwte, float* dwpe, const float* dout, const int32_t* ids,
                        const int32_t* pos, int N, int C) {
  using namespace le;
  const char* fn = "le_embed_bwd";
  REQUIRE_INIT(fn);
  TRY(validate_embed_bwd(dwte, dwpe, dout, ids, pos, N, C));
  if (!dwte && !dwpe) return 0;
  TRY(check_embed_indices(fn, ids, pos, dwte, dwpe, N, C));
  if (dwte) launch_embed_bwd(dwte, dout, ids, N, C, rows_in_block(dwte, (uint64_t)C * 4));
  if (dwpe) launch_embed_bwd(dwpe, dout, pos, N, C, rows_in_block(dwpe, (uint64_t)C * 4));
  return op_done(fn);
}
