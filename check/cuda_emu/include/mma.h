// mma.h for the host emulation: nvcuda::wmma's warp matrix operations, for the one shape the
// engine uses (16x16x16, bf16 operands, fp32 accumulator), on the emulation's fibers.
//
// A fragment's mapping of elements to lanes is unspecified in CUDA, so a kernel may only
// load, fill, multiply and store whole fragments. Here lane L = 4g + q owns the accumulator
// elements in rows g and g + 8 and columns 2q, 2q + 1, 2q + 8 and 2q + 9 (the shape of the
// tensor cores' accumulator layouts: no plain `e = lane + 32 k` loop over a tile meets it), and
// loads just what it needs for them: those two rows of A and those four columns of B. Every
// other element of a lane's fragment is NaN. So the warp does a multiply's work once between its
// lanes, a store writes each element from one lane, and a kernel that reads a tile before
// all of its writers have run (a missing __syncwarp) reads NaN or a stale value, as some lane
// would on a GPU. Faults, as a GPU's misaligned access would be one: a pointer that is not
// 32-byte aligned, a leading dimension that is not a multiple of 16 bytes.
//
// Not modelled: that all 32 lanes call each operation with the same arguments (kernels call
// them from warp-uniform code), and the tensor cores' own order and precision of summing
// (here: fp32 fused multiply-adds in k order, starting from C).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "cuda_bf16.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulation models the 16x16x16 shape only");
  float v[256];  // element (r, c) at v[r * 16 + c]; NaN where the lane holds nothing
};

namespace detail {

inline unsigned lane() { return ::emu::L->cur->lin % 32; }
inline constexpr float kNone = std::numeric_limits<float>::quiet_NaN();

inline bool row_of(unsigned lane, int r) { return unsigned(r % 8) == lane / 4; }
inline bool col_of(unsigned lane, int c) { return unsigned(c % 8 / 2) == lane % 4; }
inline bool owns(unsigned lane, int r, int c) { return row_of(lane, r) && col_of(lane, c); }

inline void check(const void* p, unsigned ldm, size_t elem, const char* what) {
  if (::emu::sticky != cudaSuccess) return;  // reported once, not by each of 32 lanes
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) {
    ::emu::fault("%s: %s pointer %p is not 256-bit aligned", ::emu::L->name, what, p);
  }
  if ((ldm * elem) % 16 != 0) {
    ::emu::fault("%s: %s leading dimension %u is not a multiple of 16 bytes", ::emu::L->name, what,
          ldm);
  }
}

}  // namespace detail

template <class Use, class T, class Layout>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, float x) {
  for (float& e : f.v) e = x;
}

// A: element (m, k) at p[m * ldm + k] (row_major) or p[k * ldm + m] (col_major).
template <class Layout>
inline void load_matrix_sync(fragment<matrix_a, 16, 16, 16, __nv_bfloat16, Layout>& f,
                             const __nv_bfloat16* p, unsigned ldm) {
  detail::check(p, ldm, 2, "load_matrix_sync (matrix_a)");
  const unsigned L = detail::lane();
  for (int m = 0; m < 16; m++) {
    for (int k = 0; k < 16; k++) {
      const bool row = std::is_same_v<Layout, row_major>;
      f.v[m * 16 + k] = detail::row_of(L, m)
                            ? __bfloat162float(p[row ? m * ldm + k : k * ldm + m])
                            : detail::kNone;
    }
  }
}

// B: element (k, n) at p[k * ldm + n] (row_major) or p[n * ldm + k] (col_major).
template <class Layout>
inline void load_matrix_sync(fragment<matrix_b, 16, 16, 16, __nv_bfloat16, Layout>& f,
                             const __nv_bfloat16* p, unsigned ldm) {
  detail::check(p, ldm, 2, "load_matrix_sync (matrix_b)");
  const unsigned L = detail::lane();
  for (int k = 0; k < 16; k++) {
    for (int n = 0; n < 16; n++) {
      const bool row = std::is_same_v<Layout, row_major>;
      f.v[k * 16 + n] = detail::col_of(L, n)
                            ? __bfloat162float(p[row ? k * ldm + n : n * ldm + k])
                            : detail::kNone;
    }
  }
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p,
                             unsigned ldm, layout_t layout) {
  detail::check(p, ldm, 4, "load_matrix_sync (accumulator)");
  const unsigned L = detail::lane();
  for (int m = 0; m < 16; m++) {
    for (int n = 0; n < 16; n++) {
      f.v[m * 16 + n] = detail::owns(L, m, n)
                            ? p[layout == mem_row_major ? m * ldm + n : n * ldm + m]
                            : detail::kNone;
    }
  }
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f,
                              unsigned ldm, layout_t layout) {
  detail::check(p, ldm, 4, "store_matrix_sync");
  const unsigned L = detail::lane();
  for (int m = 0; m < 16; m++) {
    for (int n = 0; n < 16; n++) {
      if (!detail::owns(L, m, n)) continue;
      p[layout == mem_row_major ? m * ldm + n : n * ldm + m] = f.v[m * 16 + n];
    }
  }
}

// d = a b + c (d may be c).
template <class LA, class LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
                     const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
  const unsigned L = detail::lane();
  for (int m = 0; m < 16; m++) {
    for (int n = 0; n < 16; n++) {
      if (!detail::owns(L, m, n)) {
        d.v[m * 16 + n] = detail::kNone;
        continue;
      }
      float acc = c.v[m * 16 + n];
      for (int k = 0; k < 16; k++) acc = std::fmaf(a.v[m * 16 + k], b.v[k * 16 + n], acc);
      d.v[m * 16 + n] = acc;
    }
  }
}

}  // namespace nvcuda::wmma
