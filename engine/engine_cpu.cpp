// engine_cpu.cpp: the CPU implementation of lotus_engine.h (C++17, OpenMP, fp32 storage).
//
// Read lotus_engine.h first: it is the contract. This file is organised like llm.c's CPU
// reference: one function per op, forward and backward side by side, shapes in comments.
// Two ops are made fast because they dominate a training step: the matmuls (a cache-blocked
// GEMM with a register-tiled micro-kernel written with GCC/Clang vector extensions, so it
// compiles to AVX-512, AVX2, SSE or NEON without intrinsics) and attention (parallel over
// (b, h), O(Tp) work per query, so Tq = 1 decoding with a long past is cheap). The obvious
// triple-loop matmul is kept (matmul_*_naive) as the oracle; le_cpu_set_reference switches
// to it for tests and benchmarks.
//
// Determinism. Every output element is computed by exactly one thread in a fixed order, and
// how work is split between threads never changes that order. So results are bit-identical
// from run to run, and also across thread counts. Reductions across rows (dw, dbias,
// LayerNorm dw/db, embedding gradients, sumsq) are therefore parallelised over columns or
// over fixed chunks, never with atomics or thread-count-dependent partial sums.
//
// Errors never abort: every entry point validates its arguments first (before writing
// anything), returns 1 and leaves a message in a thread-local buffer. Every tensor argument
// must be engine memory: le_alloc keeps a registry of live blocks, and each op checks that
// the bytes it will touch lie inside one block. That costs a map lookup per pointer and
// turns an out-of-range token id or a wrong shape into a message instead of a segfault. The
// error buffer, the registry and each op's checks live in engine_checks.h, which the CUDA
// engine shares, so both engines reject the same calls with the same messages.

#include "lotus_engine.h"
#include "engine_checks.h"
#include "comm_mpi.h"

#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <vector>
#include <cstdlib>
#include <cstring>

using namespace le;  // the shared checks: fail, TRY, check_span, validate_<op>, the registry

namespace {

// Open MPI moves a started all-reduce (le_comm_allreduce_start) on only inside MPI calls: the
// heavy ops give the started ones a turn when they begin, so that the sums advance while the
// backward computes. Nothing started: one test of an empty list.
inline void comm_poll() {
  if (!le::comm::st().pending.empty()) le::comm::progress("le_comm_progress");
}

// ============================================================================================
// Memory
// ============================================================================================

// Blocks of 1 MiB or more come from mmap: the kernel hands out zeroed pages lazily, so a
// large zero-filled allocation costs nothing until it is touched, and free returns it to the
// system. Smaller blocks come from aligned_alloc + memset. The registry (engine_checks.h)
// keeps each block's mmap length in Block::mapped.
constexpr uint64_t kMmapThreshold = 1ull << 20;
constexpr uint64_t kAlign = 64;

// ============================================================================================
// Threads and scratch space
// ============================================================================================

int g_threads = 0;  // 0: not yet chosen
bool g_reference = false;

int nthreads() {
  if (g_threads <= 0) g_threads = std::max(1, omp_get_max_threads());
  return g_threads;
}

// Below this many elements of work a parallel region costs more than it saves.
constexpr int64_t kParMin = 1 << 15;

// Runs f(i) for i in [0, n): on all threads with a static schedule when `par`, otherwise
// inline. Small work never enters OpenMP: even a serialised region (`if` clause false) costs
// about 0.3 us in libgomp, some 30 FFI calls' worth.
template <class F>
inline void par_for(int64_t n, bool par, F&& f) {
  const int T = nthreads();
  if (!par || T == 1 || n <= 1) {
    for (int64_t i = 0; i < n; i++) f(i);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(T)
  for (int64_t i = 0; i < n; i++) f(i);
}

// Grow-only, 64-byte-aligned scratch owned by the calling thread. Ops size it before their
// parallel region, so nothing is allocated inside hot loops and, after the first step,
// nothing is allocated at all.
struct Scratch {
  float* p = nullptr;
  size_t n = 0;
  float* get(size_t need) {
    if (need <= n) return p;
    std::free(p);
    const size_t bytes = (need * sizeof(float) + kAlign - 1) / kAlign * kAlign;
    p = static_cast<float*>(std::aligned_alloc(kAlign, bytes));
    n = p ? need : 0;
    return p;
  }
  ~Scratch() { std::free(p); }
};
thread_local Scratch g_gemm_a, g_gemm_b, g_attn;

// ============================================================================================
// Vector helpers (GCC/Clang vector extensions: portable SIMD without intrinsics)
// ============================================================================================

#if defined(__AVX512F__)
constexpr int VW = 16;  // floats per vector register
#elif defined(__AVX__)
constexpr int VW = 8;
#else
constexpr int VW = 4;
#endif

typedef float vf __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4)));  // unaligned access
typedef int32_t vi __attribute__((vector_size(VW * 4)));

inline vf splat(float s) {
  vf v;
  for (int i = 0; i < VW; i++) v[i] = s;
  return v;
}
inline vf loadu(const float* p) { return *reinterpret_cast<const vfu*>(p); }
inline void storeu(float* p, vf v) { *reinterpret_cast<vfu*>(p) = v; }
// Partial load/store for tails: lanes past n are zero / untouched.
inline vf load_part(const float* p, int n) {
  vf v = splat(0.f);
  for (int i = 0; i < n; i++) v[i] = p[i];
  return v;
}
inline void store_part(float* p, vf v, int n) {
  for (int i = 0; i < n; i++) p[i] = v[i];
}
inline float hsum(vf v) {  // fixed lane order, so deterministic
  float s = 0.f;
  for (int i = 0; i < VW; i++) s += v[i];
  return s;
}

// exp(x) in fp32, vectorised. Cody-Waite reduction x = n ln2 + r with |r| <= ln2/2 and a
// degree-7 Taylor polynomial (truncation error r^8/8! < 1e-8 relative, below fp32's ulp),
// then 2^n through the exponent bits. Inputs below -87.3 give 0 (exp would be subnormal),
// above 88.3 they saturate at exp(88.3) (finite, so sigmoid-style uses never see inf/inf).
// glibc's scalar expf would make softmax and GELU several times slower than their matmuls.
inline vf vexp(vf x) {
  const vf lo = splat(-87.3f), hi = splat(88.3f);
  vf xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const vf n = (xc * splat(1.44269504088896341f) + magic) - magic;
  // ln2 split so that n * kLn2Hi is exact for |n| <= 128 (kLn2Hi has 12 significant bits).
  const float kLn2Hi = 2839.0f / 4096.0f, kLn2Lo = 3.19461848e-5f;
  vf r = xc - n * splat(kLn2Hi);
  r = r - n * splat(kLn2Lo);
  vf p = splat(1.f / 5040.f);
  p = p * r + splat(1.f / 720.f);
  p = p * r + splat(1.f / 120.f);
  p = p * r + splat(1.f / 24.f);
  p = p * r + splat(1.f / 6.f);
  p = p * r + splat(0.5f);
  p = p * r + splat(1.f);
  p = p * r + splat(1.f);
  const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  const vf res = p * (vf)bits;  // same-size vector cast: a bit copy
  return x < lo ? splat(0.f) : res;
}

// Sum of n floats in double, 8 fixed lanes combined in a fixed order.
double sum_d(const float* x, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++) acc[l] += x[i + l];
  for (; i < n; i++) acc[i & 7] += x[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Dot product of n floats in double, 8 fixed lanes combined in a fixed order.
double dot_d(const float* x, const float* y, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++) acc[l] += (double)x[i + l] * y[i + l];
  for (; i < n; i++) acc[i & 7] += (double)x[i] * y[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Dot product of n floats (fp32, fixed order).
inline float dot(const float* a, const float* b, int n) {
  vf acc = splat(0.f);
  int i = 0;
  for (; i + VW <= n; i += VW) acc += loadu(a + i) * loadu(b + i);
  float s = hsum(acc);
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}


// ============================================================================================
// GEMM: C[M,N] (=|+=) A[M,K] B[K,N], A(i,k) = A[i*ars + k*acs], B(k,j) = B[k*brs + j*bcs]
// ============================================================================================
//
// The GotoBLAS/BLIS scheme: B is packed in KC x NR slivers (shared by all threads), each
// thread packs its own MC x KC block of A in MR-row slivers, and a micro-kernel keeps an
// MR x NR tile of C in registers while it streams one sliver of each. One GEMM routine
// serves the three matmul shapes by strides alone:
//   forward   out  = inp  W^T : A = inp  [N,Cin],        B(k,j) = W[j,k]
//   backward  dinp += dout W  : A = dout [N,Cout],       B = W   [Cout,Cin]
//             dw   += dout^T inp : A(i,k) = dout[k,i],   B = inp [N,Cin]
// Each C element is sum over KC-blocks (in order) of an in-order FMA chain, whatever the
// thread count or the M split, hence determinism across thread counts.

constexpr int NV = 2;  // vectors per micro-tile row
constexpr int NR = NV * VW;
#if defined(__AVX512F__)
constexpr int MR = 12;  // 12 x 2 accumulators + 2 B vectors + 1 broadcast fit in 32 zmm
#else
constexpr int MR = 6;  // 6 x 2 accumulators + 2 + 1 fit in 16 registers
#endif
constexpr int KC = 256;
constexpr int MC = MR * 10;
constexpr int NC = 2048;

// Micro-kernel: acc[MR x NR] = a_sliver[kc x MR]^T b_sliver[kc x NR]; then, for the valid
// mr x nr corner, C = acc (+ bias) when `init`, else C += acc.
void micro_kernel(int kc, const float* __restrict a, const float* __restrict b, float* c,
                  int64_t ldc, int mr, int nr, bool init, const float* bias) {
  vf acc[MR][NV];
  for (int i = 0; i < MR; i++)
    for (int v = 0; v < NV; v++) acc[i][v] = splat(0.f);
  for (int k = 0; k < kc; k++) {
    vf bv[NV];
    for (int v = 0; v < NV; v++) bv[v] = *reinterpret_cast<const vf*>(b + k * NR + v * VW);
    for (int i = 0; i < MR; i++) {
      const float av = a[k * MR + i];
      for (int v = 0; v < NV; v++) acc[i][v] += bv[v] * av;
    }
  }
  if (mr == MR && nr == NR) {
    vf bb[NV];
    for (int v = 0; v < NV; v++) bb[v] = bias ? loadu(bias + v * VW) : splat(0.f);
    for (int i = 0; i < MR; i++)
      for (int v = 0; v < NV; v++) {
        float* cp = c + i * ldc + v * VW;
        storeu(cp, init ? (bias ? acc[i][v] + bb[v] : acc[i][v]) : loadu(cp) + acc[i][v]);
      }
    return;
  }
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nr; j++) {
      const float s = acc[i][j / VW][j % VW];
      float* cp = c + i * ldc + j;
      *cp = init ? (bias ? s + bias[j] : s) : *cp + s;
    }
}

// pa[s][k][r] = A(i0 + s*MR + r, p0 + k), zero past row M.
void pack_a(float* pa, const float* A, int64_t ars, int64_t acs, int i0, int rows, int p0,
            int kc) {
  for (int s = 0; s * MR < rows; s++) {
    float* dst = pa + (int64_t)s * MR * kc;
    const int rr = std::min(MR, rows - s * MR);
    if (acs == 1) {
      for (int r = 0; r < rr; r++) {
        const float* src = A + (int64_t)(i0 + s * MR + r) * ars + p0;
        for (int k = 0; k < kc; k++) dst[k * MR + r] = src[k];
      }
    } else {
      for (int k = 0; k < kc; k++)
        for (int r = 0; r < rr; r++)
          dst[k * MR + r] = A[(int64_t)(i0 + s * MR + r) * ars + (int64_t)(p0 + k) * acs];
    }
    for (int r = rr; r < MR; r++)
      for (int k = 0; k < kc; k++) dst[k * MR + r] = 0.f;
  }
}

// pb[s][k][j] = B(p0 + k, j0 + s*NR + j), zero past column N. Slivers [s0, s1).
void pack_b(float* pb, const float* B, int64_t brs, int64_t bcs, int p0, int kc, int j0,
            int cols, int s0, int s1) {
  for (int s = s0; s < s1; s++) {
    float* dst = pb + (int64_t)s * NR * kc;
    const int jj = std::min(NR, cols - s * NR);
    if (bcs == 1) {
      for (int k = 0; k < kc; k++) {
        const float* src = B + (int64_t)(p0 + k) * brs + j0 + s * NR;
        int j = 0;
        for (; j < jj; j++) dst[k * NR + j] = src[j];
        for (; j < NR; j++) dst[k * NR + j] = 0.f;
      }
    } else {
      for (int j = 0; j < jj; j++) {
        const float* src = B + (int64_t)(j0 + s * NR + j) * bcs + (int64_t)p0 * brs;
        for (int k = 0; k < kc; k++) dst[k * NR + j] = src[(int64_t)k * brs];
      }
      for (int j = jj; j < NR; j++)
        for (int k = 0; k < kc; k++) dst[k * NR + j] = 0.f;
    }
  }
}

// Returns non-zero only if scratch cannot be allocated.
int gemm(const char* fn, int M, int N, int K, const float* A, int64_t ars, int64_t acs,
         const float* B, int64_t brs, int64_t bcs, float* C, int64_t ldc, bool accumulate,
         const float* bias) {
  const int T = (int64_t)M * N * K < 64 * kParMin ? 1 : nthreads();
  float* pa_all = g_gemm_a.get((size_t)T * MC * KC);
  float* pb = g_gemm_b.get((size_t)KC * ((std::min(NC, N) + NR - 1) / NR) * NR);
  if (!pa_all || !pb) return fail("%s: cannot allocate GEMM scratch space", fn);
  const int slivers = (M + MR - 1) / MR;

  // The body runs on each thread of a team, or inline for small products (see par_for).
  // Outside a parallel region omp_get_num_threads() is 1 and the barriers are no-ops.
  auto body = [&]() {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    float* pa = pa_all + (size_t)tid * MC * KC;
    // Row slivers [s0, s1) belong to this thread: balanced to within one sliver.
    const int s0 = (int)((int64_t)slivers * tid / nt), s1 = (int)((int64_t)slivers * (tid + 1) / nt);
    for (int jc = 0; jc < N; jc += NC) {
      const int nc = std::min(NC, N - jc);
      const int nsl = (nc + NR - 1) / NR;
      for (int pc = 0; pc < K; pc += KC) {
        const int kc = std::min(KC, K - pc);
        pack_b(pb, B, brs, bcs, pc, kc, jc, nc, nsl * tid / nt, nsl * (tid + 1) / nt);
#pragma omp barrier
        const bool init = pc == 0 && !accumulate;
        for (int sb = s0; sb < s1; sb += MC / MR) {
          const int i0 = sb * MR;
          const int rows = std::min(std::min(s1 - sb, MC / MR) * MR, M - i0);
          pack_a(pa, A, ars, acs, i0, rows, pc, kc);
          for (int js = 0; js < nsl; js++) {
            const int j0 = jc + js * NR;
            const int nr = std::min(NR, N - j0);
            for (int is = 0; is * MR < rows; is++) {
              micro_kernel(kc, pa + (int64_t)is * MR * kc, pb + (int64_t)js * NR * kc,
                           C + (int64_t)(i0 + is * MR) * ldc + j0, ldc,
                           std::min(MR, rows - is * MR), nr, init,
                           init && bias ? bias + j0 : nullptr);
            }
          }
        }
#pragma omp barrier
      }
    }
  };
  if (T == 1) {
    body();
  } else {
#pragma omp parallel num_threads(T)
    body();
  }
  return 0;
}

// ============================================================================================
// Matmul reference versions (the oracle; selected with le_cpu_set_reference)
// ============================================================================================

// out[N,Cout] = inp[N,Cin] W[Cout,Cin]^T + bias
void matmul_fwd_naive(float* out, const float* inp, const float* w, const float* bias, int N,
                      int Cin, int Cout) {
#pragma omp parallel for schedule(static) num_threads(nthreads())
  for (int n = 0; n < N; n++)
    for (int o = 0; o < Cout; o++) {
      float acc = 0.f;
      for (int k = 0; k < Cin; k++) acc += inp[(int64_t)n * Cin + k] * w[(int64_t)o * Cin + k];
      out[(int64_t)n * Cout + o] = bias ? acc + bias[o] : acc;
    }
}

// dinp[N,Cin] (+)= dout W;  dw[Cout,Cin] += dout^T inp
void matmul_bwd_naive(float* dinp, float* dw, const float* dout, const float* inp,
                      const float* w, int N, int Cin, int Cout, bool accumulate) {
  if (dinp) {
#pragma omp parallel for schedule(static) num_threads(nthreads())
    for (int n = 0; n < N; n++)
      for (int k = 0; k < Cin; k++) {
        float acc = 0.f;
        for (int o = 0; o < Cout; o++)
          acc += dout[(int64_t)n * Cout + o] * w[(int64_t)o * Cin + k];
        float* d = dinp + (int64_t)n * Cin + k;
        *d = (accumulate ? *d : 0.f) + acc;
      }
  }
  if (dw) {
#pragma omp parallel for schedule(static) num_threads(nthreads())
    for (int o = 0; o < Cout; o++)
      for (int k = 0; k < Cin; k++) {
        float acc = 0.f;
        for (int n = 0; n < N; n++)
          acc += dout[(int64_t)n * Cout + o] * inp[(int64_t)n * Cin + k];
        dw[(int64_t)o * Cin + k] += acc;
      }
  }
}

// Column sums of x[N,C] in double, added into out[C]. Parallel over 64-column blocks so each
// column's sum runs over n in order on one thread.
void colsum_add(float* out, const float* x, int N, int C) {
  const int blocks = (C + 63) / 64;
  par_for(blocks, (int64_t)N * C > kParMin, [&](int64_t bk_) {
    const int bk = (int)bk_;
    const int c0 = bk * 64, c1 = std::min(C, c0 + 64);
    double acc[64] = {0};
    for (int n = 0; n < N; n++) {
      const float* row = x + (int64_t)n * C;
      for (int c = c0; c < c1; c++) acc[c - c0] += row[c];
    }
    for (int c = c0; c < c1; c++) out[c] += (float)acc[c - c0];
  });
}


// bf16 storage (le_alloc_bf16): fp32 rounded to the nearest bf16, ties to even (NaN stays a
// quiet NaN), as the CUDA engine's __float2bfloat16_rn rounds; and bf16 widened exactly.
inline uint16_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline float bf16_value(uint16_t h) {
  const uint32_t u = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// dst (a bf16 block) = src rounded, n values.
inline void round_bf16(float* dst, const float* src, int64_t n) {
  auto* d = reinterpret_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; i++) d[i] = bf16_bits(src[i]);
}
// The n values from p: widened into `keep` when p is bf16 storage (is16, as its validator or
// in_bf16_block found), else p itself.
inline const float* widened(const float* p, int64_t n, bool is16, std::vector<float>& keep) {
  if (!is16) return p;
  const auto* h = reinterpret_cast<const uint16_t*>(p);
  keep.resize((size_t)n);
  for (int64_t i = 0; i < n; i++) keep[(size_t)i] = bf16_value(h[i]);
  return keep.data();
}

}  // namespace

// ============================================================================================
// The C ABI
// ============================================================================================

extern "C" {

// ---- lifecycle and memory -----------------------------------------------------------------

int le_abi_version(void) { return LE_ABI_VERSION; }
int le_backend(void) { return 0; }
uint64_t le_last_error(char* buf, uint64_t cap) { return copy_last_error(buf, cap); }

uint64_t le_device_info(char* buf, uint64_t cap) {
  char info[96];
  const int len = snprintf(info, sizeof info, "{\"backend\":\"cpu\",\"threads\":%d}", nthreads());
  if (buf != nullptr && cap > 0) {
    const size_t n = (uint64_t)len < cap - 1 ? (size_t)len : (size_t)(cap - 1);
    memcpy(buf, info, n);
    buf[n] = '\0';
  }
  return (uint64_t)len;
}

int le_init(int device) {
  (void)device;
  nthreads();
  return 0;
}

int le_set_num_threads(int n) {
  if (n > 4096) return fail("le_set_num_threads: n must be <= 4096 (got %d)", n);
  g_threads = n > 0 ? n : std::max(1, omp_get_max_threads());
  return 0;
}

// Every output is written in fp32: nothing to skip.
int le_operand_only(const float* out) {
  (void)out;
  return 0;
}

// Timing marks: an op has run when it returns, so a mark is the clock at the call.
static double g_marks[kMarks];  // the steady clock at the mark, in ms
static bool g_marked[kMarks];   // whether mark i was ever recorded

int le_mark(int i) {
  TRY(validate_mark("le_mark", i));
  g_marks[i] = std::chrono::duration<double, std::milli>(
                   std::chrono::steady_clock::now().time_since_epoch())
                   .count();
  g_marked[i] = true;
  return 0;
}

int le_mark_elapsed(int a, int b, float* ms) {
  const char* fn = "le_mark_elapsed";
  TRY(validate_mark(fn, a));
  TRY(validate_mark(fn, b));
  for (int i : {a, b}) {
    if (!g_marked[i]) return fail("%s: mark %d was never recorded (le_mark)", fn, i);
  }
  if (!ms) return fail("%s: ms is NULL", fn);
  *ms = (float)(g_marks[b] - g_marks[a]);
  return 0;
}

int le_set_precision(int mode) {
  TRY(validate_set_precision(mode));
  if (mode != 0) {
    return fail("le_set_precision: the CPU engine computes in fp32 only (mode 0); mode %d "
                "needs the CUDA engine (--backend cuda)",
                mode);
  }
  return 0;
}

void* le_alloc(uint64_t bytes) {
  if (validate_alloc(bytes)) return nullptr;
  const uint64_t rounded = std::max<uint64_t>(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
  void* p = nullptr;
  uint64_t mapped = 0;
  if (rounded >= kMmapThreshold) {
    p = mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) p = nullptr;
    mapped = rounded;
  } else {
    p = std::aligned_alloc(kAlign, rounded);
    if (p) std::memset(p, 0, rounded);
  }
  if (!p) {
    fail("le_alloc: cannot allocate %llu bytes (%.2f GiB): %s; reduce the batch size or the "
         "model, or free buffers first",
         (unsigned long long)bytes, bytes / 1073741824.0, std::strerror(errno ? errno : ENOMEM));
    return nullptr;
  }
  register_block(p, Block{bytes, mapped});
  return p;
}

void* le_alloc_bf16(uint64_t n) {
  if (validate_alloc_bf16(n)) return nullptr;
  void* p = le_alloc(2 * n);
  if (p) mark_bf16_block(p);
  return p;
}

int le_free(void* p) {
  if (!p) return 0;
  Block b{};
  TRY(unregister_block(p, &b));
  if (b.mapped) {
    munmap(p, b.mapped);
  } else {
    std::free(p);
  }
  return 0;
}

uint64_t le_bytes_in_use(void) { return bytes_in_use(); }

int le_upload(void* dst, const void* host_src, uint64_t bytes) {
  if (bytes == 0) return 0;
  TRY(validate_upload(dst, host_src, bytes));
  std::memcpy(dst, host_src, bytes);
  return 0;
}

int le_download(void* host_dst, const void* src, uint64_t bytes) {
  if (bytes == 0) return 0;
  TRY(validate_download(host_dst, src, bytes));
  std::memcpy(host_dst, src, bytes);
  return 0;
}

int le_zero(void* dst, uint64_t bytes) {
  if (bytes == 0) return 0;
  TRY(validate_zero(dst, bytes));
  std::memset(dst, 0, bytes);
  return 0;
}

int le_copy(void* dst, const void* src, uint64_t bytes) {
  if (bytes == 0) return 0;
  TRY(validate_copy(dst, src, bytes));
  std::memmove(dst, src, bytes);
  return 0;
}

int le_sync(void) { return 0; }

// dst[b*dst_bs + r*dst_rs + c] (=|+=) src[b*src_bs + r*src_rs + c]
int le_copy_rows(float* dst, const float* src, int nb, int rows, int cols, int64_t dst_bs,
                 int64_t dst_rs, int64_t src_bs, int64_t src_rs, int accumulate) {
  TRY(validate_copy_rows(dst, src, nb, rows, cols, dst_bs, dst_rs, src_bs, src_rs,
                         accumulate));
  if (nb == 0 || rows == 0 || cols == 0) return 0;
  if (in_bf16_block(dst)) {  // both bf16 (validated), copied as they are, in order
    auto* d16 = reinterpret_cast<uint16_t*>(dst);
    const auto* s16 = reinterpret_cast<const uint16_t*>(src);
    for (int64_t b = 0; b < nb; b++)
      for (int64_t r = 0; r < rows; r++) {
        std::memmove(d16 + b * dst_bs + r * dst_rs, s16 + b * src_bs + r * src_rs,
                     (size_t)cols * 2);
      }
    return 0;
  }
  // Destination rows that overlap (a zero stride, say) would race when accumulated in
  // parallel, so such copies run in order on one thread.
  const bool disjoint = copy_rows_disjoint(nb, rows, cols, dst_bs, dst_rs);
  const int64_t total = (int64_t)nb * rows;
  par_for(total, disjoint && total * cols > kParMin, [&](int64_t t) {
    const int64_t b = t / rows, r = t % rows;
    float* d = dst + b * dst_bs + r * dst_rs;
    const float* s = src + b * src_bs + r * src_rs;
    if (accumulate) {
      for (int c = 0; c < cols; c++) d[c] += s[c];
    } else {
      std::memmove(d, s, (size_t)cols * sizeof(float));
    }
  });
  return 0;
}

int le_add(float* out, const float* a, const float* b, int64_t n) {
  TRY(validate_add(out, a, b, n));
  if (n == 0) return 0;
  par_for(n, n > kParMin, [&](int64_t i) {
    out[i] = a[i] + b[i];
  });
  return 0;
}

int le_scale(float* x, float s, int64_t n) {
  TRY(validate_scale(x, n));
  if (n == 0) return 0;
  par_for(n, n > kParMin, [&](int64_t i) {
    x[i] *= s;
  });
  return 0;
}

// ---- dropout ------------------------------------------------------------------------------

int le_dropout_fwd(float* x, uint8_t* mask, int64_t n, float p, uint64_t seed,
                   const uint64_t* seed_at) {
  TRY(validate_dropout_fwd(x, mask, n, p, seed_at));
  if (n == 0) return 0;
  if (seed_at) seed = *seed_at;
  const float scale = 1.0f / (1.0f - p);
  par_for(n, n > kParMin, [&](int64_t i) {
    const bool keep = drop_keep(seed, i, p);
    mask[i] = keep;
    x[i] = keep ? x[i] * scale : 0.0f;
  });
  return 0;
}

int le_dropout_bwd(float* dinp, const float* dout, const uint8_t* mask, int64_t n, float p) {
  TRY(validate_dropout_bwd(dinp, dout, mask, n, p));
  if (n == 0) return 0;
  const float scale = 1.0f / (1.0f - p);
  par_for(n, n > kParMin, [&](int64_t i) {
    dinp[i] = mask[i] ? dout[i] * scale : 0.0f;
  });
  return 0;
}

// ---- embedding ----------------------------------------------------------------------------

// Validates ids and pos against the rows their tables' blocks can hold (the ABI passes no
// vocabulary size), before anything is written.
static int check_embed_indices(const char* fn, const int32_t* ids, const int32_t* pos,
                               const float* wte, const float* wpe, int N, int C) {
  if (wte) {
    const uint64_t vrows = rows_in_block(wte, (uint64_t)C * 4);
    for (int n = 0; n < N; n++)
      if (ids[n] >= 0 && (uint64_t)ids[n] >= vrows) return fail_bad_id(fn, n, ids[n], vrows, C);
  }
  if (wpe) {
    const uint64_t prows = rows_in_block(wpe, (uint64_t)C * 4);
    for (int n = 0; n < N; n++)
      if (pos[n] < 0 || (uint64_t)pos[n] >= prows) return fail_bad_pos(fn, n, pos[n], prows, C);
  }
  return 0;
}

// out[N,C] = wte[ids[n]] (skipped when ids[n] < 0) + wpe[pos[n]] (skipped when wpe is NULL)
int le_embed_fwd(float* out, const int32_t* ids, const int32_t* pos, const float* wte,
                 const float* wpe, int N, int C) {
  TRY(validate_embed_fwd(out, ids, pos, wte, wpe, N, C));
  TRY(check_embed_indices("le_embed_fwd", ids, pos, wte, wpe, N, C));
  par_for(N, (int64_t)N * C > kParMin, [&](int64_t n_) {
    const int n = (int)n_;
    float* o = out + (int64_t)n * C;
    const float* te = ids[n] >= 0 ? wte + (int64_t)ids[n] * C : nullptr;
    const float* pe = wpe ? wpe + (int64_t)pos[n] * C : nullptr;
    for (int c = 0; c < C; c++) o[c] = (te ? te[c] : 0.f) + (pe ? pe[c] : 0.f);
  });
  return 0;
}

// dwte[ids[n]] += dout[n]; dwpe[pos[n]] += dout[n]. Rows repeat (the same token twice), so
// this is parallel over channel blocks: each column is accumulated over n in order.
int le_embed_bwd(float* dwte, float* dwpe, const float* dout, const int32_t* ids,
                 const int32_t* pos, int N, int C) {
  TRY(validate_embed_bwd(dwte, dwpe, dout, ids, pos, N, C));
  TRY(check_embed_indices("le_embed_bwd", ids, pos, dwte, dwpe, N, C));
  const int blocks = (C + 63) / 64;
  par_for(blocks, (int64_t)N * C > kParMin, [&](int64_t bk_) {
    const int bk = (int)bk_;
    const int c0 = bk * 64, c1 = std::min(C, c0 + 64);
    for (int n = 0; n < N; n++) {
      const float* d = dout + (int64_t)n * C;
      if (dwte && ids[n] >= 0) {
        float* g = dwte + (int64_t)ids[n] * C;
        for (int c = c0; c < c1; c++) g[c] += d[c];
      }
      if (dwpe) {
        float* g = dwpe + (int64_t)pos[n] * C;
        for (int c = c0; c < c1; c++) g[c] += d[c];
      }
    }
  });
  return 0;
}

// ---- LayerNorm ----------------------------------------------------------------------------

// GPT-2's epsilon.
static constexpr double kLnEps = 1e-5;

// One row: statistics in double (two passes, so no cancellation), output in fp32.
static inline void layernorm_row(float* o, float* mean, float* rstd, const float* x,
                                 const float* w, const float* b, int C) {
  const double m = sum_d(x, C) / C;
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int c = 0;
  for (; c + 8 <= C; c += 8)
    for (int l = 0; l < 8; l++) {
      const double d = x[c + l] - m;
      acc[l] += d * d;
    }
  for (; c < C; c++) {
    const double d = x[c] - m;
    acc[c & 7] += d * d;
  }
  const double var =
      (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))) / C;
  const float mf = (float)m, rs = (float)(1.0 / std::sqrt(var + kLnEps));
  for (c = 0; c < C; c++) o[c] = (x[c] - mf) * rs * w[c] + b[c];
  if (mean) *mean = mf;
  if (rstd) *rstd = rs;
}

int le_layernorm_fwd(float* out, float* mean, float* rstd, const float* inp, const float* w,
                     const float* b, int N, int C) {
  TRY(validate_layernorm_fwd(out, mean, rstd, inp, w, b, N, C));
  par_for(N, (int64_t)N * C > kParMin, [&](int64_t n_) {
    const int n = (int)n_;
    layernorm_row(out + (int64_t)n * C, mean ? mean + n : nullptr, rstd ? rstd + n : nullptr,
                  inp + (int64_t)n * C, w, b, C);
  });
  return 0;
}

// norm = (x - mean) rstd, dnorm = dout w:
//   dinp += rstd (dnorm - mean(dnorm) - norm mean(dnorm norm));  dw += dout norm;  db += dout
int le_layernorm_bwd(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                     const float* w, const float* mean, const float* rstd, int N, int C) {
  TRY(validate_layernorm_bwd(dinp, dw, db, dout, inp, w, mean, rstd, N, C));
  comm_poll();
  const bool par = (int64_t)N * C > kParMin;
  if (dinp) {
    par_for(N, par, [&](int64_t n_) {
      const int n = (int)n_;
      const float* x = inp + (int64_t)n * C;
      const float* d = dout + (int64_t)n * C;
      float* dx = dinp + (int64_t)n * C;
      const float m = mean[n], rs = rstd[n];
      double s1 = 0, s2 = 0;
      for (int c = 0; c < C; c++) {
        const float dn = d[c] * w[c];
        s1 += dn;
        s2 += (double)dn * ((x[c] - m) * rs);
      }
      const float a = (float)(s1 / C), bb = (float)(s2 / C);
      for (int c = 0; c < C; c++) {
        const float norm = (x[c] - m) * rs;
        dx[c] += (d[c] * w[c] - a - norm * bb) * rs;
      }
    });
  }
  if (dw || db) {
    const int blocks = (C + 63) / 64;
    par_for(blocks, par, [&](int64_t bk_) {
      const int bk = (int)bk_;
      const int c0 = bk * 64, c1 = std::min(C, c0 + 64);
      double aw[64] = {0}, ab[64] = {0};
      for (int n = 0; n < N; n++) {
        const float* x = inp + (int64_t)n * C;
        const float* d = dout + (int64_t)n * C;
        const float m = mean[n], rs = rstd[n];
        for (int c = c0; c < c1; c++) {
          aw[c - c0] += (double)d[c] * ((x[c] - m) * rs);
          ab[c - c0] += d[c];
        }
      }
      for (int c = c0; c < c1; c++) {
        if (dw) dw[c] += (float)aw[c - c0];
        if (db) db[c] += (float)ab[c - c0];
      }
    });
  }
  return 0;
}

// resid = a + b; out = LayerNorm(resid). resid may alias a or b (in-place residual stream).
int le_residual_layernorm_fwd(float* resid, float* out, float* mean, float* rstd, const float* a,
                              const float* b, const float* w, const float* bias, int N, int C) {
  TRY(validate_residual_layernorm_fwd(resid, out, mean, rstd, a, b, w, bias, N, C));
  par_for(N, (int64_t)N * C > kParMin, [&](int64_t n_) {
    const int n = (int)n_;
    float* r = resid + (int64_t)n * C;
    const float* ar = a + (int64_t)n * C;
    const float* br = b + (int64_t)n * C;
    for (int c = 0; c < C; c++) r[c] = ar[c] + br[c];
    layernorm_row(out + (int64_t)n * C, mean ? mean + n : nullptr, rstd ? rstd + n : nullptr, r,
                  w, bias, C);
  });
  return 0;
}

// ---- matmul -------------------------------------------------------------------------------

// Forward products with at most this many rows take the dot-product path (decoding).
constexpr int kGemvMaxRows = 4;

extern "C++" {
namespace {

// le_matmul_fwd into fp32 out, after its checks.
int matmul_fwd_f32(float* out, const float* inp, const float* w, const float* bias, int N,
                   int Cin, int Cout) {
  if (g_reference) {
    matmul_fwd_naive(out, inp, w, bias, N, Cin, Cout);
    return 0;
  }
  if (N <= kGemvMaxRows) {
    // Decoding multiplies a few rows by a large weight (the LM head: 1 x C x V). The packed
    // GEMM would repack all of W for them on every call; a dot product per output reads W
    // once, in place, parallel over the output columns. Each output is one fixed-order dot
    // product, so the result does not depend on the thread count.
    par_for(Cout, (int64_t)N * Cout * Cin > kParMin, [&](int64_t j) {
      const float* wr = w + j * (int64_t)Cin;
      for (int n = 0; n < N; n++) {
        const float s = dot(inp + (int64_t)n * Cin, wr, Cin);
        out[(int64_t)n * Cout + j] = bias ? s + bias[j] : s;
      }
    });
    return 0;
  }
  return gemm("le_matmul_fwd", N, Cout, Cin, inp, Cin, 1, w, 1, Cin, out, Cout, false, bias);
}

}  // namespace
}  // extern "C++"

int le_matmul_fwd(float* out, const float* inp, const float* w, const float* bias, int N,
                  int Cin, int Cout) {
  TRY(validate_matmul_fwd(out, inp, w, bias, N, Cin, Cout));
  comm_poll();
  if (in_bf16_block(out)) {  // bf16 storage: the fp32 result, rounded
    std::vector<float> wide((size_t)N * Cout);
    TRY(matmul_fwd_f32(wide.data(), inp, w, bias, N, Cin, Cout));
    round_bf16(out, wide.data(), (int64_t)wide.size());
    return 0;
  }
  return matmul_fwd_f32(out, inp, w, bias, N, Cin, Cout);
}

int le_matmul_bwd(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                  const float* w, int N, int Cin, int Cout, int accumulate) {
  const char* fn = "le_matmul_bwd";
  TRY(validate_matmul_bwd(dinp, dw, dbias, dout, inp, w, N, Cin, Cout));
  comm_poll();
  if (dbias) colsum_add(dbias, dout, N, Cout);
  if (g_reference) {
    matmul_bwd_naive(dinp, dw, dout, inp, w, N, Cin, Cout, accumulate != 0);
    return 0;
  }
  if (dinp) {
    TRY(gemm(fn, N, Cin, Cout, dout, Cout, 1, w, Cin, 1, dinp, Cin, accumulate != 0, nullptr));
  }
  comm_poll();
  if (dw) TRY(gemm(fn, Cout, Cin, N, dout, 1, Cout, inp, Cin, 1, dw, Cin, true, nullptr));
  return 0;
}

// ---- GELU (tanh approximation) -------------------------------------------------------------
//
// gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3). Since 1 + tanh(u) =
// 2 sigmoid(2u), this is x sigmoid(2u): no cancellation near tanh = -1, and one exp.

namespace {
constexpr float kGeluA = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluB = 0.044715f;

inline vf gelu_v(vf x) {
  const vf u = splat(kGeluA) * (x + splat(kGeluB) * x * x * x);
  return x / (splat(1.f) + vexp(splat(-2.f) * u));
}
// d gelu / dx = s + x s (1 - s) 2 u',  s = sigmoid(2u), u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
inline vf gelu_grad_v(vf x) {
  const vf u = splat(kGeluA) * (x + splat(kGeluB) * x * x * x);
  const vf s = splat(1.f) / (splat(1.f) + vexp(splat(-2.f) * u));
  const vf du = splat(kGeluA) * (splat(1.f) + splat(3.f * kGeluB) * x * x);
  return s + x * s * (splat(1.f) - s) * splat(2.f) * du;
}
}  // namespace

int le_gelu_fwd(float* out, const float* inp, int64_t n) {
  bool in16;
  TRY(validate_gelu_fwd(out, inp, n, &in16));
  if (n == 0) return 0;
  std::vector<float> keep;  // inp from bf16 storage, widened
  inp = widened(inp, n, in16, keep);
  const int64_t nv = (n + VW - 1) / VW;
  par_for(nv, n > kParMin, [&](int64_t v) {
    const int64_t i = v * VW;
    if (i + VW <= n) {
      storeu(out + i, gelu_v(loadu(inp + i)));
    } else {
      store_part(out + i, gelu_v(load_part(inp + i, (int)(n - i))), (int)(n - i));
    }
  });
  return 0;
}

int le_gelu_bwd(float* dinp, const float* inp, const float* dout, int64_t n, int accumulate) {
  bool in16;
  TRY(validate_gelu_bwd(dinp, inp, dout, n, &in16));
  comm_poll();
  if (n == 0) return 0;
  std::vector<float> keep;  // inp from bf16 storage, widened
  inp = widened(inp, n, in16, keep);
  const int64_t nv = (n + VW - 1) / VW;
  // Overwriting adds to 0 rather than to dinp: the same bits as a zero-fill and an add.
  par_for(nv, n > kParMin, [&](int64_t v) {
    const int64_t i = v * VW;
    if (i + VW <= n) {
      const vf base = accumulate ? loadu(dinp + i) : splat(0.f);
      storeu(dinp + i, base + gelu_grad_v(loadu(inp + i)) * loadu(dout + i));
    } else {
      const int k = (int)(n - i);
      const vf base = accumulate ? load_part(dinp + i, k) : splat(0.f);
      store_part(dinp + i,
                 base + gelu_grad_v(load_part(inp + i, k)) * load_part(dout + i, k), k);
    }
  });
  return 0;
}

// ---- attention ----------------------------------------------------------------------------
//
// Key j of batch b, head h (Tk = Tp + Tq keys):
//   j <  Tp: kv_past + b*past_bs + j*past_rs + h*HS      (value: C elements later)
//   j >= Tp: qkv + (b*Tq + j - Tp)*3C + C + h*HS         (value: C elements later)
// Query i sees keys 0 .. Tp+i that key_valid does not mask.
//
// How it is fast. A dot product per (query, key) ends in a horizontal sum, which costs more
// than the dot itself at HS = 64. So when a (b, h) has enough queries to amortise it, its
// keys (forward) or values (backward) are first copied into a transposed tile KT[HS][ldk]
// (ldk = Tk rounded up to whole vectors, zero-padded), and a query's scores are computed a
// few vectors of keys at a time: s[j..j+4VW) = sum_d q[d] KT[d][j..j+4VW), with the four
// accumulators in registers. Sums of rows (p V, ds K) keep the head's HS outputs in
// registers the same way. The backward keeps each (b, h)'s ds rows, then forms each key's
// gradients dk_j = sum_i ds[i][j] q_i and dv_j = sum_i p[i][j] dout_i in registers, adding
// them to dqkv / dkv_past once (rank-1 updates of a transposed dK tile per query would stream
// the whole tile through L2 for every query). With one or a few queries (decoding), the transpose would cost as much as the
// scores, so keys are read in place with one dot product each. Every sum still runs in a
// fixed order on one thread, so results are deterministic and independent of thread count.

extern "C++" {  // the helpers below use templates, which cannot have C linkage
namespace {

// G = NH / NKV query heads share a key/value head; QS is the qkv row stride (3C, or C + 2Ckv
// with grouped-query attention) and VO the offset of a value from its key (C, or Ckv).
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

// Below this many queries per (b, h), scores use direct dot products (no transpose).
constexpr int kTransposeMinTq = 8;

inline const float* key_ptr(const AttnShape& s, const float* qkv, const float* past, int b,
                            int h, int j) {
  const int64_t kh = (int64_t)(h / s.G) * s.HS;
  if (j < s.Tp) return past + b * s.past_bs + j * s.past_rs + kh;
  return qkv + ((int64_t)b * s.Tq + (j - s.Tp)) * s.QS + s.C + kh;
}

inline int round_up_vw(int n) { return (n + VW - 1) / VW * VW; }

// dst[d*ld + j] = row_j[off + d] for the Tk keys of (b, h), zero for Tk <= j < ld.
// off = 0 for keys, VO for values. Blocks of 16 keys keep the written lines in L1.
void transpose_kv(float* dst, int64_t ld, const AttnShape& s, const float* qkv,
                  const float* past, int b, int h, int off) {
  for (int j0 = 0; j0 < s.Tk; j0 += 16) {
    const int j1 = std::min(s.Tk, j0 + 16);
    for (int j = j0; j < j1; j++) {
      const float* r = key_ptr(s, qkv, past, b, h, j) + off;
      for (int d = 0; d < s.HS; d++) dst[d * ld + j] = r[d];
    }
  }
  for (int d = 0; d < s.HS; d++)
    for (int64_t j = s.Tk; j < ld; j++) dst[d * ld + j] = 0.f;
}

// out[v*VW .. (v+U)*VW) = sum_d x[d] * T[d][same], the d-sum in order, in registers.
template <int U>
inline void tdot_block(float* out, const float* t, int64_t ld, const float* x, int HS) {
  vf acc[U];
  for (int u = 0; u < U; u++) acc[u] = splat(0.f);
  for (int d = 0; d < HS; d++) {
    const float xd = x[d];
    const float* row = t + d * ld;
    for (int u = 0; u < U; u++) acc[u] += loadu(row + u * VW) * xd;
  }
  for (int u = 0; u < U; u++) storeu(out + u * VW, acc[u]);
}

// out[0..round_up_vw(n)) = x^T T[:, 0..n) for a transposed tile T [HS][ld].
void tdot(float* out, const float* t, int64_t ld, const float* x, int HS, int n) {
  const int nv = (n + VW - 1) / VW;
  int v = 0;
  for (; v + 4 <= nv; v += 4) tdot_block<4>(out + v * VW, t + v * VW, ld, x, HS);
  switch (nv - v) {
    case 3: tdot_block<3>(out + v * VW, t + v * VW, ld, x, HS); break;
    case 2: tdot_block<2>(out + v * VW, t + v * VW, ld, x, HS); break;
    case 1: tdot_block<1>(out + v * VW, t + v * VW, ld, x, HS); break;
    default: break;
  }
}

// out[0..HS) += sum_{j < n, w[j] != 0} w[j] * (key_ptr(j) + off)[0..HS), j in order. Up to
// four vectors of the head stay in registers while the rows stream by.
void combine_rows(float* out, const float* w, int n, const AttnShape& s, const float* qkv,
                  const float* past, int b, int h, int off) {
  for (int c0 = 0; c0 < s.HS; c0 += 4 * VW) {
    const int len = std::min(4 * VW, s.HS - c0);
    const int nv = (len + VW - 1) / VW;
    vf acc[4] = {splat(0.f), splat(0.f), splat(0.f), splat(0.f)};
    if (len == 4 * VW) {
      for (int j = 0; j < n; j++) {
        if (w[j] == 0.f) continue;
        const float* r = key_ptr(s, qkv, past, b, h, j) + off + c0;
        for (int u = 0; u < 4; u++) acc[u] += loadu(r + u * VW) * w[j];
      }
    } else {
      for (int j = 0; j < n; j++) {
        if (w[j] == 0.f) continue;
        const float* r = key_ptr(s, qkv, past, b, h, j) + off + c0;
        for (int u = 0; u < nv; u++) {
          const int k = std::min(VW, len - u * VW);
          acc[u] += (k == VW ? loadu(r + u * VW) : load_part(r + u * VW, k)) * w[j];
        }
      }
    }
    for (int u = 0; u < nv; u++) {
      const int k = std::min(VW, len - u * VW);
      float* o = out + c0 + u * VW;
      if (k == VW) {
        storeu(o, loadu(o) + acc[u]);
      } else {
        store_part(o, load_part(o, k) + acc[u], k);
      }
    }
  }
}

// Gradients of key and value j of (b, h), added once to their rows:
//   dk += sum_{i >= i0} ds[i][j] q_i,   dv += sum_{i >= i0} p[i][j] dout_i   (i in order)
// q_i = q0 + i*QS, dout_i = d0 + i*C; ds and p rows have strides ld_ds and ld_p.
void kv_grad_rows(float* dk, float* dv, const float* ds, int64_t ld_ds, const float* p,
                  int64_t ld_p, int i0, int Tq, const float* q0, const float* d0, int HS, int C,
                  int64_t QS) {
  for (int c0 = 0; c0 < HS; c0 += 4 * VW) {
    const int len = std::min(4 * VW, HS - c0);
    const int nv = (len + VW - 1) / VW;
    vf ak[4] = {splat(0.f), splat(0.f), splat(0.f), splat(0.f)};
    vf av[4] = {splat(0.f), splat(0.f), splat(0.f), splat(0.f)};
    for (int i = i0; i < Tq; i++) {
      const float wk = ds[i * ld_ds], wv = p[i * ld_p];
      if (wk == 0.f && wv == 0.f) continue;
      const float* q = q0 + (int64_t)i * QS + c0;
      const float* d = d0 + (int64_t)i * C + c0;
      if (len == 4 * VW) {
        for (int u = 0; u < 4; u++) {
          ak[u] += loadu(q + u * VW) * wk;
          av[u] += loadu(d + u * VW) * wv;
        }
      } else {
        for (int u = 0; u < nv; u++) {
          const int k = std::min(VW, len - u * VW);
          ak[u] += load_part(q + u * VW, k) * wk;
          av[u] += load_part(d + u * VW, k) * wv;
        }
      }
    }
    for (int u = 0; u < nv; u++) {
      const int k = std::min(VW, len - u * VW);
      float* pk = dk + c0 + u * VW;
      float* pv = dv + c0 + u * VW;
      if (k == VW) {
        storeu(pk, loadu(pk) + ak[u]);
        storeu(pv, loadu(pv) + av[u]);
      } else {
        store_part(pk, load_part(pk, k) + ak[u], k);
        store_part(pv, load_part(pv, k) + av[u], k);
      }
    }
  }
}

// a[0..nk) = exp(a - m) in place. Not inlined, so that the statistics backward, which
// recomputes probabilities through it, rounds exactly as the forward did.
__attribute__((noinline)) void exp_row(float* a, int nk, float m) {
  const vf mv = splat(m);
  int j = 0;
  for (; j + VW <= nk; j += VW) storeu(a + j, vexp(loadu(a + j) - mv));
  if (j < nk) store_part(a + j, vexp(load_part(a + j, nk - j) - mv), nk - j);
}

// a[0..nk) *= inv; a[nk..Tk) = 0.
__attribute__((noinline)) void scale_row(float* a, int nk, int Tk, float inv) {
  int j = 0;
  for (j = 0; j < nk; j++) a[j] *= inv;
  for (j = nk; j < Tk; j++) a[j] = 0.f;
}

// Unnormalised log-probabilities to probabilities in place: a[0..nk) holds scores (-inf for
// masked keys) and their max m; a[nk..Tk) becomes 0. Returns 1 / sum.
float softmax_row(float* a, int nk, int Tk, float m) {
  exp_row(a, nk, m);
  const float inv = (float)(1.0 / sum_d(a, nk));
  scale_row(a, nk, Tk, inv);
  return inv;
}

// a[j] = scale * row[j] for the visible valid keys j < nk, -inf for masked ones; returns
// their max (-inf when none). Not inlined, for the reason exp_row gives.
__attribute__((noinline)) float scaled_scores(float* a, const float* row, int nk,
                                              const uint8_t* valid, float scale) {
  float m = -INFINITY;
  for (int j = 0; j < nk; j++) {
    const bool ok = !valid || valid[j];
    a[j] = ok ? row[j] * scale : -INFINITY;  // vexp maps -inf to exactly 0
    if (ok) m = std::max(m, a[j]);
  }
  return m;
}

}  // namespace
}  // extern "C++"

extern "C++" {
namespace {

// The forward of both ABI forms: att [B,NH,Tq,Tk] and stats [B,NH,Tq,2] are each nullable
// (without att, each thread keeps the row's probabilities in its scratch).
int attention_fwd_cpu(const char* fn, float* out, float* att, float* stats, const float* qkv,
                      const float* kv_past, const uint8_t* key_valid, const AttnShape& s) {
  const int B = s.B, Tq = s.Tq, Tp = s.Tp, C = s.C, NH = s.NH;
  const int HS = s.HS, Tk = s.Tk, ldk = round_up_vw(Tk);
  const bool transposed = Tq >= kTransposeMinTq;
  const float scale = (float)(1.0 / std::sqrt((double)HS));
  const int T = (int64_t)B * Tq * Tk * C > kParMin ? nthreads() : 1;
  // per thread: a score row [ldk], KT [HS][ldk] (transposed path only), a probability row
  // [ldk] (without att)
  const size_t per_thread = (transposed ? (size_t)HS * ldk : 0) + ldk + (att ? 0 : ldk);
  float* ws = g_attn.get((size_t)T * per_thread);
  if (!ws) return fail("%s: cannot allocate %zu floats of scratch space", fn, T * per_thread);
  par_for(B * NH, T > 1, [&](int64_t bh_) {
    const int bh = (int)bh_;
    const int b = bh / NH, h = bh % NH;
    float* row = ws + (size_t)omp_get_thread_num() * per_thread;
    float* kt = row + ldk;
    float* prow = kt + (transposed ? (size_t)HS * ldk : 0);
    if (transposed) transpose_kv(kt, ldk, s, qkv, kv_past, b, h, 0);
    const uint8_t* valid = key_valid ? key_valid + (int64_t)b * Tk : nullptr;
    for (int i = 0; i < Tq; i++) {
      const float* q = qkv + ((int64_t)b * Tq + i) * s.QS + h * HS;
      float* a = att ? att + (((int64_t)b * NH + h) * Tq + i) * Tk : prow;
      float* st = stats ? stats + (((int64_t)b * NH + h) * Tq + i) * 2 : nullptr;
      float* o = out + ((int64_t)b * Tq + i) * C + h * HS;
      const int nk = Tp + i + 1;  // visible keys
      if (transposed) {
        tdot(row, kt, ldk, q, HS, nk);
      } else {
        for (int j = 0; j < nk; j++) row[j] = dot(q, key_ptr(s, qkv, kv_past, b, h, j), HS);
      }
      const float m = scaled_scores(a, row, nk, valid, scale);
      for (int d = 0; d < HS; d++) o[d] = 0.f;
      if (m == -INFINITY) {  // no visible valid key: output 0, probabilities 0
        for (int j = 0; j < Tk; j++) a[j] = 0.f;
        if (st) st[0] = -INFINITY, st[1] = 0.f;
        continue;
      }
      const float inv = softmax_row(a, nk, Tk, m);
      if (st) st[0] = m, st[1] = inv;
      combine_rows(o, a, nk, s, qkv, kv_past, b, h, (int)s.VO);
    }
  });
  return 0;
}

}  // namespace
}  // extern "C++"

extern "C++" {
namespace {
// qkv and the past of a statistics attention call as fp32: themselves, or widened from bf16
// storage into buffers of the same layout (the past's span from its first element, so that its
// strides, which dkv_past shares, stay as they are).
struct WideQkv {
  std::vector<float> qkv_keep, past_keep;
  const float *qkv, *past;
  WideQkv(const float* q, const float* p, const AttnShape& s) {
    qkv = widened(q, (int64_t)s.B * s.Tq * s.QS, in_bf16_block(q), qkv_keep);
    const int64_t span = (int64_t)past_elements(s.B, s.Tp, s.past_bs, s.past_rs, s.QS - s.C);
    past = s.Tp == 0 ? p : widened(p, span, in_bf16_block(p), past_keep);
  }
};
}  // namespace
}  // extern "C++"

// out [B,Tq,C], att [B,NH,Tq,Tk]
int le_attention_fwd(float* out, float* att, const float* qkv, const float* kv_past,
                     const uint8_t* key_valid, int B, int Tq, int Tp, int C, int NH,
                     int64_t past_bs, int64_t past_rs) {
  TRY(validate_attention_fwd(out, att, qkv, kv_past, key_valid, B, Tq, Tp, C, NH, past_bs,
                             past_rs));
  return attention_fwd_cpu("le_attention_fwd", out, att, nullptr, qkv, kv_past, key_valid,
                           attn_shape(B, Tq, Tp, C, NH, NH, past_bs, past_rs));
}

// out [B,Tq,C], stats [B,NH,Tq,2] (nullable)
int le_attention_stats_fwd(float* out, float* stats, const float* qkv, const float* kv_past,
                           const uint8_t* key_valid, int B, int Tq, int Tp, int C, int NH,
                           int64_t past_bs, int64_t past_rs) {
  TRY(validate_attention_stats_fwd(out, stats, qkv, kv_past, key_valid, B, Tq, Tp, C, NH,
                                   past_bs, past_rs));
  const AttnShape s = attn_shape(B, Tq, Tp, C, NH, NH, past_bs, past_rs);
  const WideQkv w(qkv, kv_past, s);
  return attention_fwd_cpu("le_attention_stats_fwd", out, nullptr, stats, w.qkv, w.past,
                           key_valid, s);
}

int le_attention_gqa_fwd(float* out, float* att, const float* qkv, const float* kv_past,
                         const uint8_t* key_valid, int B, int Tq, int Tp, int C, int NH, int NKV,
                         int64_t past_bs, int64_t past_rs) {
  TRY(validate_attention_gqa_fwd(out, att, qkv, kv_past, key_valid, B, Tq, Tp, C, NH, NKV,
                                 past_bs, past_rs));
  return attention_fwd_cpu("le_attention_gqa_fwd", out, att, nullptr, qkv, kv_past, key_valid,
                           attn_shape(B, Tq, Tp, C, NH, NKV, past_bs, past_rs));
}

int le_attention_gqa_stats_fwd(float* out, float* stats, const float* qkv, const float* kv_past,
                               const uint8_t* key_valid, int B, int Tq, int Tp, int C, int NH,
                               int NKV, int64_t past_bs, int64_t past_rs) {
  TRY(validate_attention_gqa_stats_fwd(out, stats, qkv, kv_past, key_valid, B, Tq, Tp, C, NH,
                                       NKV, past_bs, past_rs));
  const AttnShape s = attn_shape(B, Tq, Tp, C, NH, NKV, past_bs, past_rs);
  const WideQkv w(qkv, kv_past, s);
  return attention_fwd_cpu("le_attention_gqa_stats_fwd", out, nullptr, stats, w.qkv, w.past,
                           key_valid, s);
}

extern "C++" {
namespace {

// The backward of every ABI form: from att (stats and key_valid null), or from stats and
// key_valid (att null), recomputing each probability row exactly as the forward made it (the
// same scores, scaled_scores, exp_row and scale_row), so both forms give the same bits.
// With p = att row, dp_j = dout_i . v_j, ds_j = p_j (dp_j - sum_j p_j dp_j):
//   dq_i += scale sum_j ds_j k_j;  dk_j += scale ds_j q_i;  dv_j += p_j dout_i
// Work items are (b, key/value head); the G query heads of a group run in order inside one,
// so the key/value gradients they share are summed by one thread in a fixed order.
int attention_bwd_cpu(const char* fn, float* dqkv, float* dkv_past, const float* dout,
                      const float* att, const float* stats, const uint8_t* key_valid,
                      const float* qkv, const float* kv_past, const AttnShape& s) {
  const int B = s.B, Tq = s.Tq, Tp = s.Tp, C = s.C, NH = s.NH, G = s.G, NKV = NH / G;
  const int64_t past_bs = s.past_bs, past_rs = s.past_rs, QS = s.QS, VO = s.VO;
  const int HS = s.HS, Tk = s.Tk, ldk = round_up_vw(Tk);
  const bool transposed = Tq >= kTransposeMinTq;
  const bool recompute = att == nullptr;
  const float scale = (float)(1.0 / std::sqrt((double)HS));
  // Past rows of different batches that overlap (past_bs = 0 shares one past across the
  // batch) would race on dkv_past, so then only heads run in parallel and b runs in order.
  const bool share_b =
      Tp > 0 && dkv_past && B > 1 && past_bs < (int64_t)(Tp - 1) * past_rs + 2 * VO;
  const int T = (int64_t)B * Tq * Tk * C > kParMin ? nthreads() : 1;
  // per thread: dS [Tq][ldk], dp [ldk], VT [HS][ldk] (transposed path only); recomputing:
  // P [Tq][ldk], a score row [ldk], KT [HS][ldk] (transposed path only)
  const size_t tile = transposed ? (size_t)HS * ldk : 0;
  const size_t per_thread =
      (size_t)Tq * ldk + ldk + tile + (recompute ? (size_t)Tq * ldk + ldk + tile : 0);
  float* ws = g_attn.get((size_t)T * per_thread);
  if (!ws) return fail("%s: cannot allocate %zu floats of scratch space", fn, T * per_thread);
  const int items = share_b ? NKV : B * NKV;
  par_for(items, T > 1, [&](int64_t it_) {
    const int it = (int)it_;
    float* dS = ws + (size_t)omp_get_thread_num() * per_thread;
    float* dp = dS + (size_t)Tq * ldk;
    float* vt = dp + ldk;
    float* P = vt + tile;  // recomputing only
    float* row = P + (size_t)Tq * ldk;
    float* kt = row + ldk;
    const int b_lo = share_b ? 0 : it / NKV, b_hi = share_b ? B : it / NKV + 1;
    const int kvh = it % NKV;
    for (int b = b_lo; b < b_hi; b++) {
      const uint8_t* valid = key_valid ? key_valid + (int64_t)b * Tk : nullptr;
      // The group's heads share their keys and values: transposed once per (b, group).
      if (transposed) transpose_kv(vt, ldk, s, qkv, kv_past, b, kvh * G, (int)VO);
      if (transposed && recompute) transpose_kv(kt, ldk, s, qkv, kv_past, b, kvh * G, 0);
      for (int h = kvh * G; h < (kvh + 1) * G; h++) {
        const float* att_bh = recompute ? P : att + ((int64_t)b * NH + h) * Tq * Tk;
        const int64_t ld_p = recompute ? ldk : Tk;
        const float* q0 = qkv + (int64_t)b * Tq * QS + h * HS;
        const float* d0 = dout + (int64_t)b * Tq * C + h * HS;
        if (recompute) {
          // The forward's probability rows, from its scores and (max, 1/sum).
          for (int i = 0; i < Tq; i++) {
            const float* q = q0 + (int64_t)i * QS;
            const float* st = stats + (((int64_t)b * NH + h) * Tq + i) * 2;
            float* a = P + (int64_t)i * ldk;
            const int nk = Tp + i + 1;
            if (st[1] == 0.f) {  // no visible valid key
              for (int j = 0; j < Tk; j++) a[j] = 0.f;
              continue;
            }
            if (transposed) {
              tdot(row, kt, ldk, q, HS, nk);
            } else {
              for (int j = 0; j < nk; j++) {
                row[j] = dot(q, key_ptr(s, qkv, kv_past, b, h, j), HS);
              }
            }
            scaled_scores(a, row, nk, valid, scale);
            exp_row(a, nk, st[0]);
            scale_row(a, nk, Tk, st[1]);
          }
        }
        // Pass 1, per query: dp, ds (kept for pass 2) and dq.
        for (int i = 0; i < Tq; i++) {
          const float* a = att_bh + (int64_t)i * ld_p;
          const float* d = d0 + (int64_t)i * C;
          float* ds = dS + (int64_t)i * ldk;
          const int nk = Tp + i + 1;
          if (transposed) {
            tdot(dp, vt, ldk, d, HS, nk);
          } else {
            for (int j = 0; j < nk; j++) {
              dp[j] = dot(d, key_ptr(s, qkv, kv_past, b, h, j) + VO, HS);
            }
          }
          const float tf = (float)dot_d(a, dp, nk);
          for (int j = 0; j < nk; j++) ds[j] = a[j] * (dp[j] - tf) * scale;
          for (int j = nk; j < Tk; j++) ds[j] = 0.f;
          combine_rows(dqkv + ((int64_t)b * Tq + i) * QS + h * HS, ds, nk, s, qkv, kv_past, b, h,
                       0);
        }
        // Pass 2, per key: dk and dv from the queries that see it (i >= j - Tp).
        for (int j = 0; j < Tk; j++) {
          float* dk;
          if (j < Tp) {
            if (!dkv_past) continue;
            dk = dkv_past + b * past_bs + j * past_rs + (int64_t)kvh * HS;
          } else {
            dk = dqkv + ((int64_t)b * Tq + (j - Tp)) * QS + C + (int64_t)kvh * HS;
          }
          kv_grad_rows(dk, dk + VO, dS + j, ldk, att_bh + j, ld_p, std::max(0, j - Tp), Tq, q0,
                       d0, HS, C, QS);
        }
      }
    }
  });
  return 0;
}

}  // namespace
}  // extern "C++"

int le_attention_bwd(float* dqkv, float* dkv_past, const float* dout, const float* att,
                     const float* qkv, const float* kv_past, int B, int Tq, int Tp, int C,
                     int NH, int64_t past_bs, int64_t past_rs) {
  TRY(validate_attention_bwd(dqkv, dkv_past, dout, att, qkv, kv_past, B, Tq, Tp, C, NH, past_bs,
                             past_rs));
  return attention_bwd_cpu("le_attention_bwd", dqkv, dkv_past, dout, att, nullptr, nullptr, qkv,
                           kv_past, attn_shape(B, Tq, Tp, C, NH, NH, past_bs, past_rs));
}

int le_attention_stats_bwd(float* dqkv, float* dkv_past, const float* dout, const float* out,
                           const float* stats, const uint8_t* key_valid, const float* qkv,
                           const float* kv_past, int B, int Tq, int Tp, int C, int NH,
                           int64_t past_bs, int64_t past_rs) {
  TRY(validate_attention_stats_bwd(dqkv, dkv_past, dout, out, stats, key_valid, qkv, kv_past, B,
                                   Tq, Tp, C, NH, past_bs, past_rs));
  comm_poll();
  const AttnShape s = attn_shape(B, Tq, Tp, C, NH, NH, past_bs, past_rs);
  const WideQkv w(qkv, kv_past, s);
  return attention_bwd_cpu("le_attention_stats_bwd", dqkv, dkv_past, dout, nullptr, stats,
                           key_valid, w.qkv, w.past, s);
}

int le_attention_gqa_bwd(float* dqkv, float* dkv_past, const float* dout, const float* att,
                         const float* qkv, const float* kv_past, int B, int Tq, int Tp, int C,
                         int NH, int NKV, int64_t past_bs, int64_t past_rs) {
  TRY(validate_attention_gqa_bwd(dqkv, dkv_past, dout, att, qkv, kv_past, B, Tq, Tp, C, NH, NKV,
                                 past_bs, past_rs));
  return attention_bwd_cpu("le_attention_gqa_bwd", dqkv, dkv_past, dout, att, nullptr, nullptr,
                           qkv, kv_past, attn_shape(B, Tq, Tp, C, NH, NKV, past_bs, past_rs));
}

int le_attention_gqa_stats_bwd(float* dqkv, float* dkv_past, const float* dout,
                               const float* out, const float* stats, const uint8_t* key_valid,
                               const float* qkv, const float* kv_past, int B, int Tq, int Tp,
                               int C, int NH, int NKV, int64_t past_bs, int64_t past_rs) {
  TRY(validate_attention_gqa_stats_bwd(dqkv, dkv_past, dout, out, stats, key_valid, qkv, kv_past,
                                       B, Tq, Tp, C, NH, NKV, past_bs, past_rs));
  comm_poll();
  const AttnShape s = attn_shape(B, Tq, Tp, C, NH, NKV, past_bs, past_rs);
  const WideQkv w(qkv, kv_past, s);
  return attention_bwd_cpu("le_attention_gqa_stats_bwd", dqkv, dkv_past, dout, nullptr, stats,
                           key_valid, w.qkv, w.past, s);
}

// ---- softmax cross-entropy ----------------------------------------------------------------

int le_xent_fwd_bwd(float* logits, float* losses, const int32_t* targets, int N, int V,
                    float dscale, const float* dscale_at) {
  TRY(validate_xent_fwd_bwd(logits, losses, targets, N, V, dscale_at));
  for (int n = 0; n < N; n++) {
    if (targets[n] >= V) return fail_bad_target("le_xent_fwd_bwd", n, targets[n], V);
  }
  const bool grad = dscale != 0.f;
  if (grad && dscale_at) dscale = *dscale_at;
  par_for(N, (int64_t)N * V > kParMin, [&](int64_t n_) {
    const int n = (int)n_;
    float* x = logits + (int64_t)n * V;
    const int t = targets[n];
    if (t < 0) {
      losses[n] = 0.f;
      if (grad) std::memset(x, 0, (size_t)V * sizeof(float));
      return;
    }
    vf mx = splat(-INFINITY);
    int v = 0;
    for (; v + VW <= V; v += VW) {
      const vf xv = loadu(x + v);
      mx = xv > mx ? xv : mx;
    }
    float m = -INFINITY;
    for (int l = 0; l < VW; l++) m = std::max(m, mx[l]);
    for (; v < V; v++) m = std::max(m, x[v]);
    const vf mv = splat(m);
    double acc[VW] = {0};
    for (v = 0; v + VW <= V; v += VW) {
      const vf e = vexp(loadu(x + v) - mv);
      for (int l = 0; l < VW; l++) acc[l] += e[l];
    }
    if (v < V) {
      const vf e = vexp(load_part(x + v, V - v) - mv);
      for (int l = 0; l < V - v; l++) acc[l] += e[l];
    }
    double sum = 0;
    for (int l = 0; l < VW; l++) sum += acc[l];
    const double lse = (double)m + std::log(sum);
    losses[n] = (float)(lse - (double)x[t]);
    if (grad) {
      const vf k = splat((float)(1.0 / sum)), ds = splat(dscale);
      // p_t - 1 before scaling, which is accurate when p_t is close to 1
      const float pt_minus_1 = (vexp(splat(x[t]) - mv) * k)[0] - 1.f;
      for (v = 0; v + VW <= V; v += VW) storeu(x + v, ds * (vexp(loadu(x + v) - mv) * k));
      if (v < V) store_part(x + v, ds * (vexp(load_part(x + v, V - v) - mv) * k), V - v);
      x[t] = dscale * pt_minus_1;
    }
  });
  return 0;
}

int le_argmax(int32_t* out, const float* logits, int N, int V) {
  TRY(validate_argmax(out, logits, N, V));
  par_for(N, (int64_t)N * V > kParMin, [&](int64_t n_) {
    const int n = (int)n_;
    const float* x = logits + (int64_t)n * V;
    int best = 0;
    while (best < V - 1 && std::isnan(x[best])) best++;  // start from the first number
    for (int v = best + 1; v < V; v++)
      if (x[v] > x[best]) best = v;  // strict: the lowest index wins ties; NaN never wins
    out[n] = best;
  });
  return 0;
}

// ---- optimiser ----------------------------------------------------------------------------

// 64 fixed chunks summed in double, then combined in order: the same bits for any thread
// count.
int le_sumsq(float* out, const float* g, int64_t n) {
  TRY(validate_sumsq(out, g, n));
  constexpr int kChunks = 64;
  double part[kChunks];
  par_for(kChunks, n > kParMin, [&](int64_t c_) {
    const int c = (int)c_;
    const int64_t i0 = n * c / kChunks, i1 = n * (c + 1) / kChunks;
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = i0;
    for (; i + 8 <= i1; i += 8)
      for (int l = 0; l < 8; l++) acc[l] += (double)g[i + l] * g[i + l];
    for (; i < i1; i++) acc[0] += (double)g[i] * g[i];
    part[c] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  });
  double total = 0;
  for (int c = 0; c < kChunks; c++) total += part[c];
  out[0] = (float)total;
  return 0;
}

// PyTorch's AdamW (torch.optim.AdamW, foreach=False), step by step:
//   g *= clip;  p *= 1 - lr wd;  m = lerp(m, g, 1 - b1);  v = b2 v + (1 - b2) g^2
//   p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
int le_adamw(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
             float beta2, float eps, float weight_decay, int t, const float* gnorm_sq,
             float max_norm) {
  TRY(validate_adamw(p, g, m, v, n, beta1, beta2, t, gnorm_sq, max_norm));
  if (n == 0) return 0;
  float clip = 1.f;
  if (gnorm_sq && max_norm > 0.f) {
    const float coef = (float)(max_norm / (std::sqrt((double)*gnorm_sq) + 1e-6));
    clip = std::min(1.f, coef);
  }
  const float decay = 1.f - lr * weight_decay;
  const float one_b1 = 1.f - beta1, one_b2 = 1.f - beta2;
  const double bc1 = 1.0 - std::pow((double)beta1, t);
  const double bc2 = 1.0 - std::pow((double)beta2, t);
  const float step = (float)(lr / bc1);
  const float bc2_sqrt = (float)std::sqrt(bc2);
  par_for(n, n > kParMin, [&](int64_t i) {
    const float gi = clip == 1.f ? g[i] : g[i] * clip;
    const float mi = m[i] + one_b1 * (gi - m[i]);
    const float vi = beta2 * v[i] + one_b2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step * (mi / (std::sqrt(vi) / bc2_sqrt + eps));
  });
  return 0;
}

// The CPU engine multiplies in fp32: there is nothing to keep.
int le_keep_bf16(const float* p, int64_t n) { return validate_keep_bf16(p, n); }

// Graphs are the CUDA engine's: here every op runs when it is called.
static int no_graphs(const char* fn) {
  return fail("%s: graphs are the CUDA engine's; the CPU engine runs each op when it is called",
              fn);
}
int le_graph_begin(void) { return no_graphs("le_graph_begin"); }
int le_graph_end(int) { return no_graphs("le_graph_end"); }
int le_graph_launch(int) { return no_graphs("le_graph_launch"); }
int le_graph_free(int) { return 0; }

// ---- Llama-family ops ---------------------------------------------------------------------

// One row of RMSNorm: o = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps), the mean of squares
// in double; returns rstd.
static float rmsnorm_row(float* o, const float* x, const float* w, int C, float eps) {
  const float rs = (float)(1.0 / std::sqrt(dot_d(x, x, C) / C + (double)eps));
  for (int c = 0; c < C; c++) o[c] = x[c] * rs * w[c];
  return rs;
}

int le_rmsnorm_fwd(float* out, float* rstd, const float* inp, const float* w, int N, int C,
                   float eps) {
  TRY(validate_rmsnorm_fwd(out, rstd, inp, w, N, C, eps));
  par_for(N, (int64_t)N * C > kParMin, [&](int64_t n) {
    const float rs = rmsnorm_row(out + n * C, inp + n * C, w, C, eps);
    if (rstd) rstd[n] = rs;
  });
  return 0;
}

// resid = a + b, then RMSNorm of each row of resid: le_add and le_rmsnorm_fwd's arithmetic.
int le_residual_rmsnorm_fwd(float* resid, float* out, float* rstd, const float* a, const float* b,
                            const float* w, int N, int C, float eps) {
  TRY(validate_residual_rmsnorm_fwd(resid, out, rstd, a, b, w, N, C, eps));
  par_for(N, (int64_t)N * C > kParMin, [&](int64_t n) {
    float* r = resid + n * C;
    for (int c = 0; c < C; c++) r[c] = a[n * C + c] + b[n * C + c];
    const float rs = rmsnorm_row(out + n * C, r, w, C, eps);
    if (rstd) rstd[n] = rs;
  });
  return 0;
}

// norm = x rstd, dnorm = dout w:  dinp += rstd (dnorm - norm mean(dnorm norm));  dw += dout norm
int le_rmsnorm_bwd(float* dinp, float* dw, const float* dout, const float* inp, const float* w,
                   const float* rstd, int N, int C) {
  TRY(validate_rmsnorm_bwd(dinp, dw, dout, inp, w, rstd, N, C));
  const bool par = (int64_t)N * C > kParMin;
  if (dinp) {
    par_for(N, par, [&](int64_t n) {
      const float* x = inp + n * C;
      const float* d = dout + n * C;
      float* dx = dinp + n * C;
      const float rs = rstd[n];
      double s2 = 0;
      for (int c = 0; c < C; c++) s2 += (double)(d[c] * w[c]) * (x[c] * rs);
      const float bb = (float)(s2 / C);
      for (int c = 0; c < C; c++) dx[c] += (d[c] * w[c] - x[c] * rs * bb) * rs;
    });
  }
  if (dw) {
    const int blocks = (C + 63) / 64;
    par_for(blocks, par, [&](int64_t bk) {
      const int c0 = (int)bk * 64, c1 = std::min(C, c0 + 64);
      double aw[64] = {0};
      for (int n = 0; n < N; n++) {
        const float* x = inp + (int64_t)n * C;
        const float* d = dout + (int64_t)n * C;
        const float rs = rstd[n];
        for (int c = c0; c < c1; c++) aw[c - c0] += (double)d[c] * (x[c] * rs);
      }
      for (int c = c0; c < c1; c++) dw[c] += (float)aw[c - c0];
    });
  }
  return 0;
}

// Pairs (i, i + HS/2) of each head rotate by a = (float)pos * inv_freq[i] (fp32 product, as
// the Hugging Face Llama computes it; cos and sin in double, rounded to fp32).
int le_rope(float* x, const int32_t* pos, const float* inv_freq, int N, int nh, int HS,
            int64_t rs, int inverse) {
  const char* fn = "le_rope";
  TRY(validate_rope(x, pos, inv_freq, N, nh, HS, rs));
  for (int n = 0; n < N; n++)
    if (pos[n] < 0) return fail_bad_rope_pos(fn, n, pos[n]);
  const int half = HS / 2;
  par_for(N, (int64_t)N * nh * HS > kParMin, [&](int64_t n) {
    float* row = x + n * rs;
    const float p = (float)pos[n];
    for (int i = 0; i < half; i++) {
      const double a = (double)(p * inv_freq[i]);
      const float c = (float)std::cos(a), sn = inverse ? -(float)std::sin(a) : (float)std::sin(a);
      for (int h = 0; h < nh; h++) {
        float* v = row + (int64_t)h * HS;
        const float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * c - x2 * sn;
        v[i + half] = x2 * c + x1 * sn;
      }
    }
  });
  return 0;
}

// out[n, i] = silu(g) u with g = inp[n, i], u = inp[n, I + i], silu(g) = g / (1 + exp(-g)).
int le_swiglu_fwd(float* out, const float* inp, int N, int I) {
  TRY(validate_swiglu_fwd(out, inp, N, I));
  par_for(N, (int64_t)N * I > kParMin, [&](int64_t n) {
    const float* g = inp + n * 2 * I;
    float* o = out + n * I;
    for (int i = 0; i < I; i++) {
      const float sg = 1.f / (1.f + std::exp(-g[i]));
      o[i] = g[i] * sg * g[I + i];
    }
  });
  return 0;
}

// dg (+)= dout u sg (1 + g (1 - sg));  du (+)= dout silu(g)
int le_swiglu_bwd(float* dinp, const float* inp, const float* dout, int N, int I,
                  int accumulate) {
  TRY(validate_swiglu_bwd(dinp, inp, dout, N, I));
  par_for(N, (int64_t)N * I > kParMin, [&](int64_t n) {
    const float* g = inp + n * 2 * I;
    const float* d = dout + n * I;
    float* dg = dinp + n * 2 * I;
    for (int i = 0; i < I; i++) {
      const float sg = 1.f / (1.f + std::exp(-g[i]));
      const float bg = accumulate ? dg[i] : 0.f, bu = accumulate ? dg[I + i] : 0.f;
      dg[i] = bg + d[i] * g[I + i] * sg * (1.f + g[i] * (1.f - sg));
      dg[I + i] = bu + d[i] * g[i] * sg;
    }
  });
  return 0;
}

// ---- not part of the ABI: CPU-only test hook ----------------------------------------------

// on != 0: matmuls use the naive triple loops above (the oracle the blocked GEMM is tested
// against, and the baseline the benchmark compares with). Returns the previous setting.
int le_cpu_set_reference(int on) {
  const int prev = g_reference ? 1 : 0;
  g_reference = on != 0;
  return prev;
}

// ---- data-parallel collectives: MPI on host memory (comm_mpi.h) ----------------------------

int le_comm_init(double timeout_s) { return le::comm::join("le_comm_init", timeout_s); }
int le_comm_rank(void) { return le::comm::st().joined ? le::comm::st().rank : -1; }
int le_comm_size(void) { return le::comm::st().joined ? le::comm::st().size : 0; }

int le_comm_allreduce_sum(float* buf, int64_t n) {
  const char* fn = "le_comm_allreduce_sum";
  REQUIRE_NONNEG(fn, "n", n);
  if (n > 0) TRY(check_span(fn, "buf", buf, mul((uint64_t)n, 4)));
  return le::comm::allreduce_host(fn, buf, n);
}

int le_comm_broadcast(void* buf, uint64_t bytes, int root) {
  const char* fn = "le_comm_broadcast";
  if (bytes > 0) TRY(check_span(fn, "buf", buf, bytes));
  return le::comm::broadcast_host(fn, buf, bytes, root);
}

int le_comm_barrier(void) { return le::comm::barrier("le_comm_barrier"); }
int le_comm_finalize(void) { return le::comm::leave("le_comm_finalize"); }

// Overlap: MPI_Iallreduce now, MPI_Testall between ops, MPI_Waitall at the end.
int le_comm_allreduce_start(float* buf, int64_t n) {
  const char* fn = "le_comm_allreduce_start";
  REQUIRE_NONNEG(fn, "n", n);
  if (n > 0) TRY(check_span(fn, "buf", buf, mul((uint64_t)n, 4)));
  if (n == 0) return le::comm::require_joined(fn);
  return le::comm::allreduce_start(fn, buf, n);
}
int le_comm_progress(void) {
  TRY(le::comm::require_joined("le_comm_progress"));
  return le::comm::progress("le_comm_progress");
}
int le_comm_wait(void) {
  TRY(le::comm::require_joined("le_comm_wait"));
  return le::comm::wait_pending("le_comm_wait");
}

}  // extern "C"
