// engine_checks.h: the argument validation that the CPU and CUDA engines share, so that both
// accept and reject exactly the same calls with exactly the same messages.
//
// It holds the "last error" buffer behind le_last_error, the registry of live le_alloc
// blocks (every tensor argument must lie inside one), the overflow-safe size arithmetic, and
// one validate_<op> function per ABI op with that op's checks in their order. Each returns 0,
// or 1 with the message set, so an op reads `TRY(validate_<op>(...)); <compute>` and a call
// that fails its checks has touched nothing.
//
// What stays in each engine: the CUDA engine's "not initialised" check (it comes before
// these) and its grid-size limits (after them); the CPU engine's thread and precision limits;
// and the data-dependent checks of token ids, positions and targets, which the CPU engine
// runs over host memory and the CUDA engine as a kernel. Those share only their messages,
// fail_bad_id, fail_bad_pos and fail_bad_target below. Where an op has nothing to do (n == 0
// and the like) its validator returns 0 early, skipping the pointer checks, and the op itself
// returns 0 at the same point.
//
// Host-only, plain C++17: engine_cpu.cpp (g++) and engine_cuda.cu (nvcc, and g++ in the
// tests' emulation; through cuda/common.cuh) each include it once. Everything is in an unnamed
// namespace, so nothing here is exported from either library: the CPU library has no export
// map.
#pragma once

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>
#include <type_traits>
#include <cstring>

namespace le {
namespace {

// ============================================================================================
// Errors
// ============================================================================================

thread_local char g_err[1024] = "";
// Failures so far (the CUDA engine's graph recording compares it before and after).
thread_local uint64_t g_failures = 0;

// Sets the message le_last_error returns; always returns 1, so `return fail(...)` fails an op.
__attribute__((format(printf, 1, 2))) inline int fail(const char* fmt, ...) {
  g_failures++;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_err, sizeof g_err, fmt, ap);
  va_end(ap);
  return 1;
}

// le_last_error's body, shared by both engines.
inline uint64_t copy_last_error(char* buf, uint64_t cap) {
  const size_t len = strlen(g_err);
  if (buf != nullptr && cap > 0) {
    const size_t n = len < cap - 1 ? len : (size_t)(cap - 1);
    memcpy(buf, g_err, n);
    buf[n] = '\0';
  }
  return len;
}

#define TRY(expr)       \
  do {                  \
    if (expr) return 1; \
  } while (0)

#define REQUIRE_POS(fn, name, v)                                                               \
  do {                                                                                         \
    if ((v) <= 0) return ::le::fail("%s: %s must be > 0 (got %lld)", fn, name, (long long)(v)); \
  } while (0)
#define REQUIRE_NONNEG(fn, name, v)                                                            \
  do {                                                                                         \
    if ((v) < 0) return ::le::fail("%s: %s must be >= 0 (got %lld)", fn, name, (long long)(v)); \
  } while (0)

// Saturating products for byte counts: a saturated value simply fails the span check.
inline uint64_t mul(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}
inline uint64_t add(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

// ============================================================================================
// The registry of live le_alloc blocks
// ============================================================================================

struct Block {
  uint64_t bytes;     // as requested: what spans are checked against, and le_bytes_in_use
  uint64_t mapped;    // the engine's own bookkeeping (CPU: mmap length, 0 for heap blocks)
  bool bf16 = false;  // from le_alloc_bf16: its elements are bf16 (see check_store)
};

std::mutex g_mu;
std::map<uintptr_t, Block> g_blocks;  // start address -> block
uint64_t g_in_use = 0;

// Records a block that le_alloc has just obtained.
inline void register_block(const void* p, Block b) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_blocks[reinterpret_cast<uintptr_t>(p)] = b;
  g_in_use += b.bytes;
}

// Marks the block that starts at p, just registered, as bf16 storage (le_alloc_bf16).
inline void mark_bf16_block(const void* p) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_blocks.find(reinterpret_cast<uintptr_t>(p));
  if (it != g_blocks.end()) it->second.bf16 = true;
}

// Forgets the block that starts at p (for le_free), handing its record to *out; fails when
// p does not start a live block. The caller releases the memory afterwards.
inline int unregister_block(const void* p, Block* out) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_blocks.find(reinterpret_cast<uintptr_t>(p));
  if (it == g_blocks.end()) {
    return fail("le_free: %p was not returned by le_alloc (or was already freed)", p);
  }
  *out = it->second;
  g_in_use -= it->second.bytes;
  g_blocks.erase(it);
  return 0;
}

inline uint64_t bytes_in_use() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_in_use;
}

inline size_t live_blocks() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_blocks.size();
}

// The live block whose start is the nearest at or below address a (g_blocks.end() when none),
// and a's offset in it. The caller holds g_mu; a lies in the block when *off < its bytes.
inline std::map<uintptr_t, Block>::const_iterator block_below(uintptr_t a, uint64_t* off) {
  auto it = g_blocks.upper_bound(a);
  if (it == g_blocks.begin()) return g_blocks.end();
  --it;
  *off = a - it->first;
  return it;
}

// Checks that [p, p + bytes) lies inside one live block. bytes == 0 touches nothing, so only
// the NULL check applies.
// *bf16 (when given, and bytes > 0) gets whether the block is bf16 storage (le_alloc_bf16).
inline int check_span(const char* fn, const char* name, const void* p, uint64_t bytes,
                      bool* bf16 = nullptr) {
  if (p == nullptr) return fail("%s: %s is NULL", fn, name);
  if (bytes == 0) return 0;
  std::lock_guard<std::mutex> lock(g_mu);
  uint64_t off = 0;
  const auto it = block_below(reinterpret_cast<uintptr_t>(p), &off);
  if (it == g_blocks.end()) {
    return fail("%s: %s (%p) is not engine memory; allocate it with le_alloc", fn, name, p);
  }
  if (off >= it->second.bytes) {
    return fail("%s: %s (%p) is not engine memory (it lies past the end of the nearest block); "
                "allocate it with le_alloc",
                fn, name, p);
  }
  const uint64_t left = it->second.bytes - off;
  if (bytes > left) {
    if (bytes == UINT64_MAX) {
      return fail("%s: %s: the sizes passed overflow a 64-bit byte count; check the shape "
                  "arguments",
                  fn, name);
    }
    return fail("%s: %s needs %llu bytes but only %llu remain in its block (%llu bytes, %s "
                "starts at byte %llu); check the shape arguments and the buffer's size",
                fn, name, (unsigned long long)bytes, (unsigned long long)left,
                (unsigned long long)it->second.bytes, name, (unsigned long long)off);
  }
  if (bf16) *bf16 = it->second.bf16;
  return 0;
}

// Whether p lies in a block from le_alloc_bf16 (false for NULL and for memory of no block).
inline bool in_bf16_block(const void* p) {
  if (p == nullptr) return false;
  std::lock_guard<std::mutex> lock(g_mu);
  uint64_t off = 0;
  const auto it = block_below(reinterpret_cast<uintptr_t>(p), &off);
  return it != g_blocks.end() && off < it->second.bytes && it->second.bf16;
}

// Typed arguments (float*, int32_t*) must also be aligned to their element: a GPU faults on a
// misaligned load (a sticky error that ends the process's CUDA context), and the CPU engine's
// vector loads assume it too. Engine pointers are offsets into le_alloc blocks (256-byte
// aligned), so this catches an offset that is not a whole number of elements. A typed argument
// never lies in a bf16 block, except those check_store admits.
template <class T, class = std::enable_if_t<!std::is_void_v<T>>>
inline int check_span(const char* fn, const char* name, const T* p, uint64_t bytes) {
  bool bf16 = false;
  TRY(check_span(fn, name, static_cast<const void*>(p), bytes, &bf16));
  if (bf16) {
    return fail("%s: %s (%p) lies in a bf16 block (le_alloc_bf16), which this argument cannot "
                "read or write; only le_matmul_fwd's out, the statistics attention's qkv and "
                "kv_past, GELU's inp and le_copy_rows take bf16 blocks: give it an fp32 buffer",
                fn, name, static_cast<const void*>(p));
  }
  if (reinterpret_cast<uintptr_t>(p) % alignof(T) != 0) {
    return fail("%s: %s (%p) is not aligned to %zu bytes, the size of its elements; an offset "
                "into a block must be a whole number of elements",
                fn, name, static_cast<const void*>(p), alignof(T));
  }
  return 0;
}

// An argument that may be fp32 or bf16 storage (lotus_engine.h, le_alloc_bf16): `elements`
// values of the block's type from p, which is aligned to that type. *bf16 says which it is.
inline int check_store(const char* fn, const char* name, const float* p, uint64_t elements,
                       bool* bf16) {
  *bf16 = in_bf16_block(p);
  if (!*bf16) return check_span(fn, name, p, mul(elements, 4));
  TRY(check_span(fn, name, static_cast<const void*>(p), mul(elements, 2)));
  if (reinterpret_cast<uintptr_t>(p) % 2 != 0) {
    return fail("%s: %s (%p) is not aligned to 2 bytes, the size of a bf16 block's elements; "
                "an offset into a block must be a whole number of elements",
                fn, name, static_cast<const void*>(p));
  }
  return 0;
}

// Like check_span, but NULL is allowed (a nullable argument).
inline int check_opt(const char* fn, const char* name, const void* p, uint64_t bytes) {
  return p == nullptr ? 0 : check_span(fn, name, p, bytes);
}
template <class T, class = std::enable_if_t<!std::is_void_v<T>>>
inline int check_opt(const char* fn, const char* name, const T* p, uint64_t bytes) {
  return p == nullptr ? 0 : check_span(fn, name, p, bytes);
}

// Number of whole rows of `row_bytes` between p and the end of its block (0 if unknown).
// Bounds the data-dependent indices (token ids, positions) that the ABI gives no size for.
inline uint64_t rows_in_block(const void* p, uint64_t row_bytes) {
  std::lock_guard<std::mutex> lock(g_mu);
  uint64_t off = 0;
  const auto it = block_below(reinterpret_cast<uintptr_t>(p), &off);
  if (it == g_blocks.end() || off >= it->second.bytes) return 0;
  return (it->second.bytes - off) / row_bytes;
}

// ============================================================================================
// Messages of the data-dependent checks (each engine finds the offending index its own way)
// ============================================================================================

inline int fail_bad_id(const char* fn, int n, int32_t id, uint64_t rows, int C) {
  return fail("%s: ids[%d] = %d is outside the token table (%llu rows of C = %d fit in its "
              "block); check the tokenizer's vocabulary against the model's",
              fn, n, id, (unsigned long long)rows, C);
}

inline int fail_bad_pos(const char* fn, int n, int32_t pos, uint64_t rows, int C) {
  return fail("%s: pos[%d] = %d is outside the position table (%llu rows of C = %d fit in its "
              "block); sequences must be shorter than the model's n_positions",
              fn, n, pos, (unsigned long long)rows, C);
}

inline int fail_bad_target(const char* fn, int n, int32_t target, int V) {
  return fail("%s: targets[%d] = %d is >= V = %d; use -1 (or any negative id) to ignore a "
              "position, and check the tokenizer's vocabulary against the model's",
              fn, n, target, V);
}

// ============================================================================================
// Lifecycle and memory
// ============================================================================================

inline int validate_set_precision(int mode) {
  if (mode < 0 || mode > 2) {
    return fail("le_set_precision: mode must be 0 (fp32), 1 (TF32) or 2 (bf16) (got %d)", mode);
  }
  return 0;
}

// Timing marks (le_mark, le_mark_elapsed): their number, and the check of an index.
constexpr int kMarks = 65536;

inline int validate_mark(const char* fn, int i) {
  if (i < 0 || i >= kMarks) {
    return fail("%s: mark %d does not exist; marks are 0..%d", fn, i, kMarks - 1);
  }
  return 0;
}

inline int validate_alloc_bf16(uint64_t n) {
  if (n > (1ull << 47)) {
    return fail("le_alloc_bf16: cannot allocate %llu bf16 values (more than 2^47); check the "
                "requested size",
                (unsigned long long)n);
  }
  return 0;
}

inline int validate_alloc(uint64_t bytes) {
  if (bytes > (1ull << 48)) {
    return fail("le_alloc: cannot allocate %llu bytes (more than 2^48); check the requested "
                "size",
                (unsigned long long)bytes);
  }
  return 0;
}

// The four byte-wise ops; their callers return 0 for bytes == 0 before calling these.
inline int validate_upload(const void* dst, const void* host_src, uint64_t bytes) {
  TRY(check_span("le_upload", "dst", dst, bytes));
  if (!host_src) return fail("le_upload: host_src is NULL");
  return 0;
}

inline int validate_download(const void* host_dst, const void* src, uint64_t bytes) {
  TRY(check_span("le_download", "src", src, bytes));
  if (!host_dst) return fail("le_download: host_dst is NULL");
  return 0;
}

inline int validate_zero(const void* dst, uint64_t bytes) {
  return check_span("le_zero", "dst", dst, bytes);
}

inline int validate_copy(const void* dst, const void* src, uint64_t bytes) {
  TRY(check_span("le_copy", "dst", dst, bytes));
  return check_span("le_copy", "src", src, bytes);
}

// Whether le_copy_rows's destination rows are disjoint (else they are processed in order).
inline bool copy_rows_disjoint(int nb, int rows, int cols, int64_t dst_bs, int64_t dst_rs) {
  return (rows == 1 || dst_rs >= cols) &&
         (nb == 1 || dst_bs >= (int64_t)(rows - 1) * dst_rs + cols);
}

// The caller returns 0 when nb, rows or cols is 0.
inline int validate_copy_rows(const float* dst, const float* src, int nb, int rows, int cols,
                              int64_t dst_bs, int64_t dst_rs, int64_t src_bs, int64_t src_rs,
                              int accumulate) {
  const char* fn = "le_copy_rows";
  REQUIRE_NONNEG(fn, "nb", nb);
  REQUIRE_NONNEG(fn, "rows", rows);
  REQUIRE_NONNEG(fn, "cols", cols);
  REQUIRE_NONNEG(fn, "dst_bs", dst_bs);
  REQUIRE_NONNEG(fn, "dst_rs", dst_rs);
  REQUIRE_NONNEG(fn, "src_bs", src_bs);
  REQUIRE_NONNEG(fn, "src_rs", src_rs);
  if (nb == 0 || rows == 0 || cols == 0) return 0;
  const uint64_t dspan = add(add(mul(nb - 1, dst_bs), mul(rows - 1, dst_rs)), cols);
  const uint64_t sspan = add(add(mul(nb - 1, src_bs), mul(rows - 1, src_rs)), cols);
  bool d16, s16;
  TRY(check_store(fn, "dst", dst, dspan, &d16));
  TRY(check_store(fn, "src", src, sspan, &s16));
  if (d16 != s16) {
    return fail("%s: dst is %s and src is %s; rows are copied between buffers of one element "
                "type",
                fn, d16 ? "bf16" : "fp32", s16 ? "bf16" : "fp32");
  }
  if (d16 && accumulate) {
    return fail("%s: accumulate = 1 into a bf16 block; sums are kept in fp32 buffers", fn);
  }
  if (d16 && !copy_rows_disjoint(nb, rows, cols, dst_bs, dst_rs)) {
    return fail("%s: destination rows overlap in a bf16 block; bf16 rows are copied only to "
                "disjoint rows",
                fn);
  }
  return 0;
}

// le_add, le_scale and le_gelu_*: the caller returns 0 when n is 0.
inline int validate_add(const float* out, const float* a, const float* b, int64_t n) {
  const char* fn = "le_add";
  REQUIRE_NONNEG(fn, "n", n);
  if (n == 0) return 0;
  TRY(check_span(fn, "out", out, mul(n, 4)));
  TRY(check_span(fn, "a", a, mul(n, 4)));
  return check_span(fn, "b", b, mul(n, 4));
}

inline int validate_scale(const float* x, int64_t n) {
  const char* fn = "le_scale";
  REQUIRE_NONNEG(fn, "n", n);
  if (n == 0) return 0;
  return check_span(fn, "x", x, mul(n, 4));
}

// ============================================================================================
// Model ops
// ============================================================================================

// Then each engine checks ids and pos against the rows of wte and wpe (fail_bad_id/_pos).
inline int validate_embed_fwd(const float* out, const int32_t* ids, const int32_t* pos,
                              const float* wte, const float* wpe, int N, int C) {
  const char* fn = "le_embed_fwd";
  REQUIRE_POS(fn, "N", N);
  REQUIRE_POS(fn, "C", C);
  TRY(check_span(fn, "out", out, mul(mul(N, C), 4)));
  TRY(check_span(fn, "ids", ids, mul(N, 4)));
  TRY(check_span(fn, "wte", wte, 1));
  if (wpe) {
    TRY(check_span(fn, "pos", pos, mul(N, 4)));
    TRY(check_span(fn, "wpe", wpe, 1));
  }
  return 0;
}

inline int validate_embed_bwd(const float* dwte, const float* dwpe, const float* dout,
                              const int32_t* ids, const int32_t* pos, int N, int C) {
  const char* fn = "le_embed_bwd";
  REQUIRE_POS(fn, "N", N);
  REQUIRE_POS(fn, "C", C);
  TRY(check_span(fn, "dout", dout, mul(mul(N, C), 4)));
  if (dwte) {
    TRY(check_span(fn, "ids", ids, mul(N, 4)));
    TRY(check_span(fn, "dwte", dwte, 1));
  }
  if (dwpe) {
    TRY(check_span(fn, "pos", pos, mul(N, 4)));
    TRY(check_span(fn, "dwpe", dwpe, 1));
  }
  return 0;
}

// The argument checks of the four norm forwards, in one order: N, C, eps (RMSNorm), resid (the
// residual form, resid = a + r), out, the input (named `in`: "inp", or the residual form's "a"),
// r ("b"), w, LayerNorm's bias (named `bias_name`), mean (LayerNorm) and rstd.
inline int validate_norm_fwd(const char* fn, bool rms, bool residual, const float* resid,
                             const float* out, const float* mean, const float* rstd,
                             const char* in, const float* a, const float* r, const float* w,
                             const char* bias_name, const float* bias, int N, int C, float eps) {
  REQUIRE_POS(fn, "N", N);
  REQUIRE_POS(fn, "C", C);
  if (rms && !(eps > 0.f)) {
    return fail("%s: eps = %g must be > 0 (Llama uses 1e-5 or 1e-6)", fn, eps);
  }
  const uint64_t nc4 = mul(mul(N, C), 4);
  if (residual) TRY(check_span(fn, "resid", resid, nc4));
  TRY(check_span(fn, "out", out, nc4));
  TRY(check_span(fn, in, a, nc4));
  if (residual) TRY(check_span(fn, "b", r, nc4));
  TRY(check_span(fn, "w", w, mul(C, 4)));
  if (!rms) {
    TRY(check_span(fn, bias_name, bias, mul(C, 4)));
    TRY(check_opt(fn, "mean", mean, mul(N, 4)));
  }
  return check_opt(fn, "rstd", rstd, mul(N, 4));
}

inline int validate_layernorm_fwd(const float* out, const float* mean, const float* rstd,
                                  const float* inp, const float* w, const float* b, int N,
                                  int C) {
  return validate_norm_fwd("le_layernorm_fwd", false, false, nullptr, out, mean, rstd, "inp", inp,
                           nullptr, w, "b", b, N, C, 0.f);
}

inline int validate_layernorm_bwd(const float* dinp, const float* dw, const float* db,
                                  const float* dout, const float* inp, const float* w,
                                  const float* mean, const float* rstd, int N, int C) {
  const char* fn = "le_layernorm_bwd";
  REQUIRE_POS(fn, "N", N);
  REQUIRE_POS(fn, "C", C);
  const uint64_t nc4 = mul(mul(N, C), 4);
  TRY(check_opt(fn, "dinp", dinp, nc4));
  TRY(check_opt(fn, "dw", dw, mul(C, 4)));
  TRY(check_opt(fn, "db", db, mul(C, 4)));
  TRY(check_span(fn, "dout", dout, nc4));
  TRY(check_span(fn, "inp", inp, nc4));
  TRY(check_span(fn, "w", w, mul(C, 4)));
  TRY(check_span(fn, "mean", mean, mul(N, 4)));
  return check_span(fn, "rstd", rstd, mul(N, 4));
}

inline int validate_residual_layernorm_fwd(const float* resid, const float* out,
                                           const float* mean, const float* rstd, const float* a,
                                           const float* b, const float* w, const float* bias,
                                           int N, int C) {
  return validate_norm_fwd("le_residual_layernorm_fwd", false, true, resid, out, mean, rstd, "a",
                           a, b, w, "bias", bias, N, C, 0.f);
}

inline int validate_matmul_fwd(const float* out, const float* inp, const float* w,
                               const float* bias, int N, int Cin, int Cout) {
  const char* fn = "le_matmul_fwd";
  REQUIRE_POS(fn, "N", N);
  REQUIRE_POS(fn, "Cin", Cin);
  REQUIRE_POS(fn, "Cout", Cout);
  bool out16;
  TRY(check_store(fn, "out", out, mul(N, Cout), &out16));
  TRY(check_span(fn, "inp", inp, mul(mul(N, Cin), 4)));
  TRY(check_span(fn, "w", w, mul(mul(Cout, Cin), 4)));
  return check_opt(fn, "bias", bias, mul(Cout, 4));
}

// inp is checked only when dw is wanted, w only when dinp is: the others may be NULL.
inline int validate_matmul_bwd(const float* dinp, const float* dw, const float* dbias,
                               const float* dout, const float* inp, const float* w, int N,
                               int Cin, int Cout) {
  const char* fn = "le_matmul_bwd";
  REQUIRE_POS(fn, "N", N);
  REQUIRE_POS(fn, "Cin", Cin);
  REQUIRE_POS(fn, "Cout", Cout);
  TRY(check_opt(fn, "dinp", dinp, mul(mul(N, Cin), 4)));
  TRY(check_opt(fn, "dw", dw, mul(mul(Cout, Cin), 4)));
  TRY(check_opt(fn, "dbias", dbias, mul(Cout, 4)));
  TRY(check_span(fn, "dout", dout, mul(mul(N, Cout), 4)));
  if (dw) TRY(check_span(fn, "inp", inp, mul(mul(N, Cin), 4)));
  if (dinp) TRY(check_span(fn, "w", w, mul(mul(Cout, Cin), 4)));
  return 0;
}

// GELU's inp may be fp32 or bf16 storage (check_store); *in16 says which.
inline int validate_gelu_fwd(const float* out, const float* inp, int64_t n, bool* in16) {
  const char* fn = "le_gelu_fwd";
  *in16 = false;
  REQUIRE_NONNEG(fn, "n", n);
  if (n == 0) return 0;
  TRY(check_span(fn, "out", out, mul(n, 4)));
  return check_store(fn, "inp", inp, n, in16);
}

inline int validate_gelu_bwd(const float* dinp, const float* inp, const float* dout,
                             int64_t n, bool* in16) {
  const char* fn = "le_gelu_bwd";
  *in16 = false;
  REQUIRE_NONNEG(fn, "n", n);
  if (n == 0) return 0;
  TRY(check_span(fn, "dinp", dinp, mul(n, 4)));
  TRY(check_store(fn, "inp", inp, n, in16));
  return check_span(fn, "dout", dout, mul(n, 4));
}

inline int check_drop_p(const char* fn, float p) {
  if (!(p >= 0.0f && p < 1.0f)) {
    return fail("%s: p = %g must be in [0, 1): the probability of dropping an element", fn,
                (double)p);
  }
  return 0;
}

inline int validate_dropout_fwd(const float* x, const uint8_t* mask, int64_t n, float p,
                                const uint64_t* seed_at) {
  const char* fn = "le_dropout_fwd";
  REQUIRE_NONNEG(fn, "n", n);
  TRY(check_drop_p(fn, p));
  if (n == 0) return 0;
  TRY(check_span(fn, "x", x, mul(n, 4)));
  if (seed_at) TRY(check_span(fn, "seed_at", seed_at, 8));
  return check_span(fn, "mask", mask, (uint64_t)n);
}

inline int validate_dropout_bwd(const float* dinp, const float* dout, const uint8_t* mask,
                                int64_t n, float p) {
  const char* fn = "le_dropout_bwd";
  REQUIRE_NONNEG(fn, "n", n);
  TRY(check_drop_p(fn, p));
  if (n == 0) return 0;
  TRY(check_span(fn, "dinp", dinp, mul(n, 4)));
  TRY(check_span(fn, "dout", dout, mul(n, 4)));
  return check_span(fn, "mask", mask, (uint64_t)n);
}

// The dropout decision of element i: identical bits in both engines (host and device).
#ifdef __CUDACC__
__host__ __device__
#endif
inline bool drop_keep(uint64_t seed, int64_t i, float p) {
  uint64_t z = seed + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (float)(z >> 40) * (1.0f / 16777216.0f) >= p;
}

// True when the byte ranges [a, a + an) and [b, b + bn) share a byte.
inline bool spans_overlap(const void* a, uint64_t an, const void* b, uint64_t bn) {
  const uintptr_t x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return x < y + bn && y < x + an;
}

// The elements an attention call's past spans from its first: row (b, t) starts at
// b*past_bs + t*past_rs and holds `row` elements (keys, then values). 0 when Tp == 0;
// UINT64_MAX when the shape overflows (which the validators reject before any engine reads).
inline uint64_t past_elements(int B, int Tp, int64_t past_bs, int64_t past_rs, uint64_t row) {
  if (Tp <= 0) return 0;
  return add(add(mul(B - 1, past_bs), mul(Tp - 1, past_rs)), row);
}

// dkv_past apart from dqkv: the backward's blocks add into both at once, one block per key
// tile, so a shared row would be added to by two blocks in parallel on a GPU.
inline int check_dkv_past_apart(const char* fn, const float* dqkv, uint64_t qkv_bytes,
                                const float* dkv_past, int B, int Tp, int64_t past_bs,
                                int64_t past_rs, uint64_t row) {
  if (Tp <= 0 || !dkv_past) return 0;
  const uint64_t past_bytes = mul(past_elements(B, Tp, past_bs, past_rs, row), 4);
  if (spans_overlap(dqkv, qkv_bytes, dkv_past, past_bytes)) {
    return fail("%s: dkv_past overlaps dqkv; give the past's key and value gradients rows of "
                "their own",
                fn);
  }
  return 0;
}

// The shape, and the past (kv_past or dkv_past, named past_name) when Tp > 0.
// With past16 (the statistics forms' kv_past), the past may be bf16 storage (check_store), and
// *past16 says whether it is.
inline int check_attention_shape(const char* fn, int B, int Tq, int Tp, int C, int NH,
                                 int64_t past_bs, int64_t past_rs, const float* past,
                                 const char* past_name, bool* past16 = nullptr) {
  if (past16) *past16 = false;
  REQUIRE_POS(fn, "B", B);
  REQUIRE_POS(fn, "Tq", Tq);
  REQUIRE_NONNEG(fn, "Tp", Tp);
  REQUIRE_POS(fn, "C", C);
  REQUIRE_POS(fn, "NH", NH);
  if (C % NH != 0) {
    return fail("%s: C = %d is not divisible by NH = %d; the head size must be C / NH", fn, C,
                NH);
  }
  // The engines index keys with int: Tq + Tp must fit in one.
  if ((int64_t)Tq + Tp > INT32_MAX) {
    return fail("%s: Tq + Tp = %lld keys exceed %d", fn, (long long)Tq + Tp, INT32_MAX);
  }
  if (Tp > 0) {
    if (past_rs < 2LL * C) {
      return fail("%s: past_rs = %lld is smaller than 2C = %lld, so a past row's keys would "
                  "overlap the next row; use 3C for a qkv buffer or 2C for a [B,T,2C] cache",
                  fn, (long long)past_rs, 2LL * C);
    }
    REQUIRE_NONNEG(fn, "past_bs", past_bs);
    const uint64_t span = past_elements(B, Tp, past_bs, past_rs, 2ull * C);
    if (past16) return check_store(fn, past_name, past, span, past16);
    TRY(check_span(fn, past_name, past, mul(span, 4)));
  }
  return 0;
}

inline int validate_attention_fwd(const float* out, const float* att, const float* qkv,
                                  const float* kv_past, const uint8_t* key_valid, int B, int Tq,
                                  int Tp, int C, int NH, int64_t past_bs, int64_t past_rs) {
  const char* fn = "le_attention_fwd";
  TRY(check_attention_shape(fn, B, Tq, Tp, C, NH, past_bs, past_rs, kv_past, "kv_past"));
  const uint64_t Tk = (uint64_t)Tq + (uint64_t)Tp;
  TRY(check_span(fn, "out", out, mul(mul(mul(B, Tq), C), 4)));
  TRY(check_span(fn, "att", att, mul(mul(mul(mul(B, NH), Tq), Tk), 4)));
  TRY(check_span(fn, "qkv", qkv, mul(mul(mul(B, Tq), 3 * (uint64_t)C), 4)));
  return check_opt(fn, "key_valid", key_valid, mul(B, Tk));
}

inline int validate_attention_bwd(const float* dqkv, const float* dkv_past, const float* dout,
                                  const float* att, const float* qkv, const float* kv_past,
                                  int B, int Tq, int Tp, int C, int NH, int64_t past_bs,
                                  int64_t past_rs) {
  const char* fn = "le_attention_bwd";
  TRY(check_attention_shape(fn, B, Tq, Tp, C, NH, past_bs, past_rs, kv_past, "kv_past"));
  if (Tp > 0 && dkv_past) {
    TRY(check_attention_shape(fn, B, Tq, Tp, C, NH, past_bs, past_rs, dkv_past, "dkv_past"));
  }
  const uint64_t Tk = (uint64_t)Tq + (uint64_t)Tp;
  const uint64_t qkv_bytes = mul(mul(mul(B, Tq), 3 * (uint64_t)C), 4);
  TRY(check_span(fn, "dqkv", dqkv, qkv_bytes));
  TRY(check_dkv_past_apart(fn, dqkv, qkv_bytes, dkv_past, B, Tp, past_bs, past_rs, 2ull * C));
  TRY(check_span(fn, "dout", dout, mul(mul(mul(B, Tq), C), 4)));
  TRY(check_span(fn, "att", att, mul(mul(mul(mul(B, NH), Tq), Tk), 4)));
  return check_span(fn, "qkv", qkv, qkv_bytes);
}

// The statistics forms read qkv and the past as fp32 or as bf16 storage, both the same.
inline int check_qkv_store(const char* fn, const float* qkv, uint64_t elements, int Tp,
                           bool past16) {
  bool qkv16;
  TRY(check_store(fn, "qkv", qkv, elements, &qkv16));
  if (Tp > 0 && qkv16 != past16) {
    return fail("%s: qkv is %s and kv_past is %s; keep a chunk's qkv and its past in one "
                "element type",
                fn, qkv16 ? "bf16" : "fp32", past16 ? "bf16" : "fp32");
  }
  return 0;
}

// The statistics variants: stats [B,NH,Tq,2] instead of att (nullable in the forward).
inline int validate_attention_stats_fwd(const float* out, const float* stats, const float* qkv,
                                        const float* kv_past, const uint8_t* key_valid, int B,
                                        int Tq, int Tp, int C, int NH, int64_t past_bs,
                                        int64_t past_rs) {
  const char* fn = "le_attention_stats_fwd";
  bool p16;
  TRY(check_attention_shape(fn, B, Tq, Tp, C, NH, past_bs, past_rs, kv_past, "kv_past", &p16));
  const uint64_t Tk = (uint64_t)Tq + (uint64_t)Tp;
  TRY(check_span(fn, "out", out, mul(mul(mul(B, Tq), C), 4)));
  TRY(check_opt(fn, "stats", stats, mul(mul(mul(B, NH), Tq), 8)));
  TRY(check_qkv_store(fn, qkv, mul(mul(B, Tq), 3 * (uint64_t)C), Tp, p16));
  return check_opt(fn, "key_valid", key_valid, mul(B, Tk));
}

inline int validate_attention_stats_bwd(const float* dqkv, const float* dkv_past,
                                        const float* dout, const float* out, const float* stats,
                                        const uint8_t* key_valid, const float* qkv,
                                        const float* kv_past, int B, int Tq, int Tp, int C,
                                        int NH, int64_t past_bs, int64_t past_rs) {
  const char* fn = "le_attention_stats_bwd";
  bool p16;
  TRY(check_attention_shape(fn, B, Tq, Tp, C, NH, past_bs, past_rs, kv_past, "kv_past", &p16));
  if (Tp > 0 && dkv_past) {
    TRY(check_attention_shape(fn, B, Tq, Tp, C, NH, past_bs, past_rs, dkv_past, "dkv_past"));
  }
  const uint64_t Tk = (uint64_t)Tq + (uint64_t)Tp;
  const uint64_t qkv_bytes = mul(mul(mul(B, Tq), 3 * (uint64_t)C), 4);
  TRY(check_span(fn, "dqkv", dqkv, qkv_bytes));
  TRY(check_dkv_past_apart(fn, dqkv, qkv_bytes, dkv_past, B, Tp, past_bs, past_rs, 2ull * C));
  TRY(check_span(fn, "dout", dout, mul(mul(mul(B, Tq), C), 4)));
  TRY(check_span(fn, "out", out, mul(mul(mul(B, Tq), C), 4)));
  TRY(check_span(fn, "stats", stats, mul(mul(mul(B, NH), Tq), 8)));
  TRY(check_opt(fn, "key_valid", key_valid, mul(B, Tk)));
  return check_qkv_store(fn, qkv, mul(mul(B, Tq), 3 * (uint64_t)C), Tp, p16);
}

// Then each engine checks targets against V (fail_bad_target).
inline int validate_xent_fwd_bwd(const float* logits, const float* losses,
                                 const int32_t* targets, int N, int V, const float* dscale_at) {
  const char* fn = "le_xent_fwd_bwd";
  REQUIRE_POS(fn, "N", N);
  REQUIRE_POS(fn, "V", V);
  TRY(check_span(fn, "logits", logits, mul(mul(N, V), 4)));
  TRY(check_span(fn, "losses", losses, mul(N, 4)));
  TRY(check_span(fn, "targets", targets, mul(N, 4)));
  if (dscale_at) TRY(check_span(fn, "dscale_at", dscale_at, 4));
  // Rows are written while later rows' targets are still to be read.
  if (spans_overlap(targets, mul(N, 4), logits, mul(mul(N, V), 4)) ||
      spans_overlap(targets, mul(N, 4), losses, mul(N, 4))) {
    return fail("%s: targets overlaps logits or losses; give the targets their own buffer", fn);
  }
  return 0;
}

inline int validate_argmax(const int32_t* out, const float* logits, int N, int V) {
  const char* fn = "le_argmax";
  REQUIRE_POS(fn, "N", N);
  REQUIRE_POS(fn, "V", V);
  TRY(check_span(fn, "out", out, mul(N, 4)));
  return check_span(fn, "logits", logits, mul(mul(N, V), 4));
}

// ============================================================================================
// Optimiser
// ============================================================================================

inline int validate_sumsq(const float* out, const float* g, int64_t n) {
  const char* fn = "le_sumsq";
  REQUIRE_NONNEG(fn, "n", n);
  TRY(check_span(fn, "out", out, 4));
  return check_span(fn, "g", g, mul(n, 4));
}

// The caller returns 0 when n is 0 (gnorm_sq is then neither checked nor read).
inline int validate_adamw(const float* p, const float* g, const float* m, const float* v,
                          int64_t n, float beta1, float beta2, int t, const float* gnorm_sq,
                          float max_norm) {
  const char* fn = "le_adamw";
  REQUIRE_NONNEG(fn, "n", n);
  if (t < 1) return fail("%s: step t must be >= 1 (got %d); the first step is t = 1", fn, t);
  if (!(beta1 >= 0.f && beta1 < 1.f) || !(beta2 >= 0.f && beta2 < 1.f)) {
    return fail("%s: beta1 and beta2 must be in [0, 1) (got %g, %g)", fn, beta1, beta2);
  }
  if (n == 0) return 0;
  const uint64_t nb = mul(n, 4);
  TRY(check_span(fn, "p", p, nb));
  TRY(check_span(fn, "g", g, nb));
  TRY(check_span(fn, "m", m, nb));
  TRY(check_span(fn, "v", v, nb));
  if (gnorm_sq && max_norm > 0.f) TRY(check_span(fn, "gnorm_sq", gnorm_sq, 4));
  return 0;
}

inline int validate_keep_bf16(const float* p, int64_t n) {
  const char* fn = "le_keep_bf16";
  REQUIRE_NONNEG(fn, "n", n);
  if (n == 0) return p == nullptr ? fail("%s: p is NULL", fn) : 0;
  return check_span(fn, "p", p, mul(n, 4));
}

// ============================================================================================
// Llama-family ops: RMSNorm, rotary embeddings, SwiGLU, grouped-query attention
// ============================================================================================

inline int validate_rmsnorm_fwd(const float* out, const float* rstd, const float* inp,
                                const float* w, int N, int C, float eps) {
  return validate_norm_fwd("le_rmsnorm_fwd", true, false, nullptr, out, nullptr, rstd, "inp", inp,
                           nullptr, w, nullptr, nullptr, N, C, eps);
}

inline int validate_residual_rmsnorm_fwd(const float* resid, const float* out, const float* rstd,
                                         const float* a, const float* b, const float* w, int N,
                                         int C, float eps) {
  return validate_norm_fwd("le_residual_rmsnorm_fwd", true, true, resid, out, nullptr, rstd, "a",
                           a, b, w, nullptr, nullptr, N, C, eps);
}

inline int validate_rmsnorm_bwd(const float* dinp, const float* dw, const float* dout,
                                const float* inp, const float* w, const float* rstd, int N,
                                int C) {
  const char* fn = "le_rmsnorm_bwd";
  REQUIRE_POS(fn, "N", N);
  REQUIRE_POS(fn, "C", C);
  const uint64_t nc4 = mul(mul(N, C), 4);
  TRY(check_opt(fn, "dinp", dinp, nc4));
  TRY(check_opt(fn, "dw", dw, mul(C, 4)));
  TRY(check_span(fn, "dout", dout, nc4));
  TRY(check_span(fn, "inp", inp, nc4));
  TRY(check_span(fn, "w", w, mul(C, 4)));
  return check_span(fn, "rstd", rstd, mul(N, 4));
}

// Positions are checked by each engine (>= 0), with fail_bad_rope_pos.
inline int validate_rope(const float* x, const int32_t* pos, const float* inv_freq, int N, int nh,
                         int HS, int64_t rs) {
  const char* fn = "le_rope";
  REQUIRE_POS(fn, "N", N);
  REQUIRE_POS(fn, "nh", nh);
  REQUIRE_POS(fn, "HS", HS);
  if (HS % 2 != 0) return fail("%s: HS = %d must be even (pairs i, i + HS/2 rotate)", fn, HS);
  if (rs < (int64_t)nh * HS) {
    return fail("%s: row stride rs = %lld is smaller than nh*HS = %lld", fn, (long long)rs,
                (long long)nh * HS);
  }
  TRY(check_span(fn, "x", x, mul(add(mul(N - 1, rs), mul(nh, HS)), 4)));
  TRY(check_span(fn, "pos", pos, mul(N, 4)));
  return check_span(fn, "inv_freq", inv_freq, mul(HS / 2, 4));
}

inline int fail_bad_rope_pos(const char* fn, int n, int32_t pos) {
  return fail("%s: pos[%d] = %d is negative; positions must be >= 0", fn, n, pos);
}

inline int validate_swiglu_fwd(const float* out, const float* inp, int N, int I) {
  const char* fn = "le_swiglu_fwd";
  REQUIRE_POS(fn, "N", N);
  REQUIRE_POS(fn, "I", I);
  TRY(check_span(fn, "out", out, mul(mul(N, I), 4)));
  return check_span(fn, "inp", inp, mul(mul(N, 2ull * I), 4));
}

inline int validate_swiglu_bwd(const float* dinp, const float* inp, const float* dout, int N,
                               int I) {
  const char* fn = "le_swiglu_bwd";
  REQUIRE_POS(fn, "N", N);
  REQUIRE_POS(fn, "I", I);
  TRY(check_span(fn, "dinp", dinp, mul(mul(N, 2ull * I), 4)));
  TRY(check_span(fn, "inp", inp, mul(mul(N, 2ull * I), 4)));
  return check_span(fn, "dout", dout, mul(mul(N, I), 4));
}

inline int check_gqa_shape(const char* fn, int B, int Tq, int Tp, int C, int NH, int NKV,
                           int64_t past_bs, int64_t past_rs, const float* past,
                           const char* past_name, bool* past16 = nullptr) {
  if (past16) *past16 = false;
  REQUIRE_POS(fn, "B", B);
  REQUIRE_POS(fn, "Tq", Tq);
  REQUIRE_NONNEG(fn, "Tp", Tp);
  REQUIRE_POS(fn, "C", C);
  REQUIRE_POS(fn, "NH", NH);
  REQUIRE_POS(fn, "NKV", NKV);
  if (C % NH != 0) {
    return fail("%s: C = %d is not divisible by NH = %d; the head size must be C / NH", fn, C,
                NH);
  }
  if (NH % NKV != 0) {
    return fail("%s: NH = %d is not divisible by NKV = %d; each key/value head serves NH / NKV "
                "query heads",
                fn, NH, NKV);
  }
  if ((int64_t)Tq + Tp > INT32_MAX) {
    return fail("%s: Tq + Tp = %lld keys exceed %d", fn, (long long)Tq + Tp, INT32_MAX);
  }
  const int64_t ckv = (int64_t)(C / NH) * NKV;
  if (Tp > 0) {
    if (past_rs < 2 * ckv) {
      return fail("%s: past_rs = %lld is smaller than 2*Ckv = %lld, so a past row's keys would "
                  "overlap the next row; use C + 2*Ckv for a qkv buffer or 2*Ckv for a cache",
                  fn, (long long)past_rs, (long long)(2 * ckv));
    }
    REQUIRE_NONNEG(fn, "past_bs", past_bs);
    const uint64_t span = past_elements(B, Tp, past_bs, past_rs, 2ull * ckv);
    if (past16) return check_store(fn, past_name, past, span, past16);
    TRY(check_span(fn, past_name, past, mul(span, 4)));
  }
  return 0;
}

inline int validate_attention_gqa_fwd(const float* out, const float* att, const float* qkv,
                                      const float* kv_past, const uint8_t* key_valid, int B,
                                      int Tq, int Tp, int C, int NH, int NKV, int64_t past_bs,
                                      int64_t past_rs) {
  const char* fn = "le_attention_gqa_fwd";
  TRY(check_gqa_shape(fn, B, Tq, Tp, C, NH, NKV, past_bs, past_rs, kv_past, "kv_past"));
  const uint64_t Tk = (uint64_t)Tq + (uint64_t)Tp;
  const uint64_t width = (uint64_t)C + 2ull * (C / NH) * NKV;
  TRY(check_span(fn, "out", out, mul(mul(mul(B, Tq), C), 4)));
  TRY(check_span(fn, "att", att, mul(mul(mul(mul(B, NH), Tq), Tk), 4)));
  TRY(check_span(fn, "qkv", qkv, mul(mul(mul(B, Tq), width), 4)));
  return check_opt(fn, "key_valid", key_valid, mul(B, Tk));
}

inline int validate_attention_gqa_bwd(const float* dqkv, const float* dkv_past,
                                      const float* dout, const float* att, const float* qkv,
                                      const float* kv_past, int B, int Tq, int Tp, int C, int NH,
                                      int NKV, int64_t past_bs, int64_t past_rs) {
  const char* fn = "le_attention_gqa_bwd";
  TRY(check_gqa_shape(fn, B, Tq, Tp, C, NH, NKV, past_bs, past_rs, kv_past, "kv_past"));
  if (Tp > 0 && dkv_past) {
    TRY(check_gqa_shape(fn, B, Tq, Tp, C, NH, NKV, past_bs, past_rs, dkv_past, "dkv_past"));
  }
  const uint64_t Tk = (uint64_t)Tq + (uint64_t)Tp;
  const uint64_t width = (uint64_t)C + 2ull * (C / NH) * NKV;
  const uint64_t qkv_bytes = mul(mul(mul(B, Tq), width), 4);
  TRY(check_span(fn, "dqkv", dqkv, qkv_bytes));
  TRY(check_dkv_past_apart(fn, dqkv, qkv_bytes, dkv_past, B, Tp, past_bs, past_rs,
                           width - (uint64_t)C));
  TRY(check_span(fn, "dout", dout, mul(mul(mul(B, Tq), C), 4)));
  TRY(check_span(fn, "att", att, mul(mul(mul(mul(B, NH), Tq), Tk), 4)));
  return check_span(fn, "qkv", qkv, qkv_bytes);
}

inline int validate_attention_gqa_stats_fwd(const float* out, const float* stats,
                                            const float* qkv, const float* kv_past,
                                            const uint8_t* key_valid, int B, int Tq, int Tp,
                                            int C, int NH, int NKV, int64_t past_bs,
                                            int64_t past_rs) {
  const char* fn = "le_attention_gqa_stats_fwd";
  bool p16;
  TRY(check_gqa_shape(fn, B, Tq, Tp, C, NH, NKV, past_bs, past_rs, kv_past, "kv_past", &p16));
  const uint64_t Tk = (uint64_t)Tq + (uint64_t)Tp;
  const uint64_t width = (uint64_t)C + 2ull * (C / NH) * NKV;
  TRY(check_span(fn, "out", out, mul(mul(mul(B, Tq), C), 4)));
  TRY(check_opt(fn, "stats", stats, mul(mul(mul(B, NH), Tq), 8)));
  TRY(check_qkv_store(fn, qkv, mul(mul(B, Tq), width), Tp, p16));
  return check_opt(fn, "key_valid", key_valid, mul(B, Tk));
}

inline int validate_attention_gqa_stats_bwd(const float* dqkv, const float* dkv_past,
                                            const float* dout, const float* out,
                                            const float* stats,
                                            const uint8_t* key_valid, const float* qkv,
                                            const float* kv_past, int B, int Tq, int Tp, int C,
                                            int NH, int NKV, int64_t past_bs,
                                            int64_t past_rs) {
  const char* fn = "le_attention_gqa_stats_bwd";
  bool p16;
  TRY(check_gqa_shape(fn, B, Tq, Tp, C, NH, NKV, past_bs, past_rs, kv_past, "kv_past", &p16));
  if (Tp > 0 && dkv_past) {
    TRY(check_gqa_shape(fn, B, Tq, Tp, C, NH, NKV, past_bs, past_rs, dkv_past, "dkv_past"));
  }
  const uint64_t Tk = (uint64_t)Tq + (uint64_t)Tp;
  const uint64_t width = (uint64_t)C + 2ull * (C / NH) * NKV;
  const uint64_t qkv_bytes = mul(mul(mul(B, Tq), width), 4);
  TRY(check_span(fn, "dqkv", dqkv, qkv_bytes));
  TRY(check_dkv_past_apart(fn, dqkv, qkv_bytes, dkv_past, B, Tp, past_bs, past_rs,
                           width - (uint64_t)C));
  TRY(check_span(fn, "dout", dout, mul(mul(mul(B, Tq), C), 4)));
  TRY(check_span(fn, "out", out, mul(mul(mul(B, Tq), C), 4)));
  TRY(check_span(fn, "stats", stats, mul(mul(mul(B, NH), Tq), 8)));
  TRY(check_opt(fn, "key_valid", key_valid, mul(B, Tk)));
  return check_qkv_store(fn, qkv, mul(mul(B, Tq), width), Tp, p16);
}

}  // namespace
}  // namespace le
