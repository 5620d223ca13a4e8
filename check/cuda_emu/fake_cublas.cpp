// fake_cublas.cpp: stand-ins for libcublas.so.13, libcublasLt.so.13 and libcuda.so.1, for the
// host emulation of the CUDA engine (README.md beside this file). Built three times, under
// names of their own (emu.h redirects the engine's dlopen calls to them):
//   -DFAKE_CUBLAS    libemu_cublas.so: the entry points the engine resolves, GemmEx in loops
//   -DFAKE_CUBLASLT  libemu_cublaslt.so: cublasLtGetVersion and the cublasLtMatmul path the
//                    engine takes for every GEMM (the DEFAULT and BIAS epilogues)
//   (neither)        libemu_cuda.so: empty (le_init only checks that the driver loads)
//
// cublasGemmEx follows the cuBLAS documentation: column-major C[m,n] = alpha op(A) op(B) +
// beta C, with op(A) [m,k] read from A[i + p*lda] (N) or A[p + i*lda] (T), and it rejects what
// cuBLAS rejects (a leading dimension smaller than the stored rows, type combinations the
// engine must not use) with CUBLAS_STATUS_INVALID_VALUE. TF32 compute truncates fp32 operands
// to 10 mantissa bits, the pessimistic reading of the tensor cores' conversion; bf16 operands
// (CUDA_R_16BF = 14) are widened exactly. cublasLtMatmul runs the same loops and adds the bias
// after alpha * sum, as the epilogue does, reading it as CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE says
// (by default D's type); a bf16 D (from bf16 operands, never accumulated) is that fp32 value
// rounded to nearest, ties to even; the heuristic's algorithms record the alignments the
// preference promised, and the matmul rejects operands that do not have them. The heuristic
// offers one algorithm, or EMU_LT_ALGOS of them (all the same loops), and EMU_LT_SLOW_ALGO=r
// makes algorithm r 2 ms slower a call, so that the engine's timing of candidates is tested;
// EMU_LT_FAIL=1 refuses every call.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>

extern "C" {

#if defined(FAKE_CUBLAS) || defined(FAKE_CUBLASLT)

// The emulation's stream (include/cuda_runtime.h): a GEMM is queued behind the work before it,
// as on the GPU's stream, and recorded like it while the stream is captured into a graph.
struct emu_stream {
  void (*drain)();
  void (*submit)(void (*run)(void*), void* arg, void (*release)(void*));
};

static float widen(const void* p, int type, size_t i, bool tf32) {
  if (type == 14) {
    const uint32_t u = uint32_t(static_cast<const uint16_t*>(p)[i]) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  float f = static_cast<const float*>(p)[i];
  if (tf32) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u &= 0xffffe000u;
    std::memcpy(&f, &u, 4);
  }
  return f;
}

// One GEMM's arguments, alpha and beta read at the call (host pointer mode), as cuBLAS does.
struct Gemm {
  int ta, tb, m, n, k, at, lda, bt, ldb, ldc;
  bool tf32;
  float a, b;
  const void *A, *B;
  void* C;             // fp32, or bf16 when ctype is 14 (cublasLtMatmul's D)
  const void* bias;    // the BIAS epilogue's vector of m values (cublasLtMatmul), or null
  int sleep_us = 0;    // an algorithm made slow on purpose (EMU_LT_SLOW_ALGO)
  int ctype = 0;       // C's (D's) type: 0 fp32, 14 bf16
  int bias_type = 0;   // the bias's type: 0 fp32, 14 bf16 (cuBLASLt's default: D's type)
};

// fp32 to the nearest bf16, ties to even, as the GPU's epilogue rounds D.
static uint16_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static void run_gemm(void* p) {
  const Gemm& g = *static_cast<const Gemm*>(p);
  if (g.sleep_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(g.sleep_us));
  for (int j = 0; j < g.n; j++)
    for (int i = 0; i < g.m; i++) {
      float acc = 0.f;
      for (int q = 0; q < g.k; q++) {
        const size_t ia = g.ta == 0 ? i + (size_t)q * g.lda : q + (size_t)i * g.lda;
        const size_t ib = g.tb == 0 ? q + (size_t)j * g.ldb : j + (size_t)q * g.ldb;
        acc += widen(g.A, g.at, ia, g.tf32) * widen(g.B, g.bt, ib, g.tf32);
      }
      const size_t o = i + (size_t)j * g.ldc;
      if (g.ctype == 14) {  // beta is 0 (cublasLtMatmul refuses others here)
        float v = g.a * acc;
        if (g.bias) v += widen(g.bias, g.bias_type, i, false);
        static_cast<uint16_t*>(g.C)[o] = bf16_bits(v);
        continue;
      }
      float& out = static_cast<float*>(g.C)[o];
      out = g.b == 0.f ? g.a * acc : g.a * acc + g.b * out;
      if (g.bias) out += widen(g.bias, g.bias_type, i, false);
    }
}

static void release_gemm(void* p) { delete static_cast<Gemm*>(p); }

// GEMM calls so far, of this library (emu_counters in emu.h adds both libraries' counts).
static uint64_t gemm_calls = 0;
uint64_t emu_gemm_calls(void) { return gemm_calls; }

static void submit_gemm(void* stream, Gemm* g) {
  if (stream) {
    static_cast<emu_stream*>(stream)->submit(&run_gemm, g, &release_gemm);
  } else {
    run_gemm(g);
    release_gemm(g);
  }
}

#endif

#if defined(FAKE_CUBLAS)

struct Ctx {
  void* stream = nullptr;
  void* workspace = nullptr;
};


int cublasCreate_v2(void** h) {
  *h = new Ctx();
  return 0;
}
int cublasDestroy_v2(void* h) {
  delete static_cast<Ctx*>(h);
  return 0;
}
int cublasSetStream_v2(void* h, void* s) {
  static_cast<Ctx*>(h)->stream = s;
  static_cast<Ctx*>(h)->workspace = nullptr;  // as cuBLAS does: set the workspace afterwards
  return 0;
}
int cublasSetWorkspace_v2(void* h, void* w, size_t n) {
  if (!w || n == 0 || reinterpret_cast<uintptr_t>(w) % 256) return 7;
  static_cast<Ctx*>(h)->workspace = w;
  return 0;
}
int cublasSetMathMode(void*, int mode) { return mode == 0 || mode == 3 ? 0 : 7; }
int cublasGetVersion_v2(void*, int* v) {
  *v = 130000;
  return 0;
}
const char* cublasGetStatusString(int s) { return s == 0 ? "success" : "invalid value"; }

int cublasGemmEx(void* h, int ta, int tb, int m, int n, int k, const void* alpha, const void* A,
                 int at, int lda, const void* B, int bt, int ldb, const void* beta, void* C,
                 int ct, int ldc, int compute, int algo) {
  if (!h || !static_cast<Ctx*>(h)->workspace) return 1;  // not initialised as the engine does
  gemm_calls++;
  if (m < 0 || n < 0 || k < 0 || (ta != 0 && ta != 1) || (tb != 0 && tb != 1)) return 7;
  if (lda < (ta == 0 ? m : k) || lda < 1 || ldb < (tb == 0 ? k : n) || ldb < 1 || ldc < m) {
    return 7;
  }
  if (ct != 0 || at != bt || (at != 0 && at != 14) || algo != -1) return 7;
  if (compute != 68 && !(compute == 77 && at == 0)) return 7;
  auto* g = new Gemm{ta, tb, m, n, k, at, lda, bt, ldb, ldc, compute == 77,
                     *static_cast<const float*>(alpha), *static_cast<const float*>(beta), A, B,
                     static_cast<float*>(C), nullptr};
  submit_gemm(static_cast<Ctx*>(h)->stream, g);
  return 0;
}

#elif defined(FAKE_CUBLASLT)

size_t cublasLtGetVersion(void) { return 130000; }

struct LtCtx {
  int magic = 0x17;
};
struct LtDesc {
  int compute, ta = 0, tb = 0;
  uint32_t epilogue = 1;  // CUBLASLT_EPILOGUE_DEFAULT
  const void* bias = nullptr;
  int bias_type = -1;  // CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE; -1: D's type
};
struct LtLayout {
  int type;
  uint64_t rows, cols;
  int64_t ld;
};
struct LtPref {
  uint64_t workspace = 0;
  uint32_t align[4] = {256, 256, 256, 256};  // cuBLASLt's default minimum alignments
};
struct LtAlgo {
  uint64_t data[8];
};
struct LtHeuristic {
  LtAlgo algo;
  size_t workspace_size;
  int state;
  float waves_count;
  int reserved[4];
};

int cublasLtCreate(LtCtx** h) {
  *h = new LtCtx();
  return 0;
}
int cublasLtDestroy(LtCtx* h) {
  delete h;
  return 0;
}
int cublasLtMatmulDescCreate(LtDesc** d, int compute, int scale_type) {
  if (scale_type != 0 || (compute != 68 && compute != 77)) return 7;
  *d = new LtDesc{compute};
  return 0;
}
int cublasLtMatmulDescDestroy(LtDesc* d) {
  delete d;
  return 0;
}
// Only the attributes the engine sets, each with its documented size.
int cublasLtMatmulDescSetAttribute(LtDesc* d, int attr, const void* buf, size_t n) {
  if (!d || !buf) return 7;
  if ((attr == 3 || attr == 4) && n == 4) {
    const int32_t v = *static_cast<const int32_t*>(buf);
    if (v != 0 && v != 1) return 7;
    (attr == 3 ? d->ta : d->tb) = v;
    return 0;
  }
  if (attr == 7 && n == 4) {
    const uint32_t v = *static_cast<const uint32_t*>(buf);
    if (v != 1 && v != 4) return 15;  // only DEFAULT and BIAS are emulated
    d->epilogue = v;
    return 0;
  }
  if (attr == 8 && n == sizeof(void*)) {
    d->bias = *static_cast<const void* const*>(buf);
    return 0;
  }
  if (attr == 26 && n == 4) {
    const int32_t v = *static_cast<const int32_t*>(buf);
    if (v != 0 && v != 14) return 7;
    d->bias_type = v;
    return 0;
  }
  return 7;
}
int cublasLtMatrixLayoutCreate(LtLayout** l, int type, uint64_t rows, uint64_t cols,
                               int64_t ld) {
  if ((type != 0 && type != 14) || ld < 1 || (uint64_t)ld < rows) return 7;
  *l = new LtLayout{type, rows, cols, ld};
  return 0;
}
int cublasLtMatrixLayoutDestroy(LtLayout* l) {
  delete l;
  return 0;
}
int cublasLtMatmulPreferenceCreate(LtPref** p) {
  *p = new LtPref();
  return 0;
}
int cublasLtMatmulPreferenceDestroy(LtPref* p) {
  delete p;
  return 0;
}
int cublasLtMatmulPreferenceSetAttribute(LtPref* p, int attr, const void* buf, size_t n) {
  if (!p || !buf) return 7;
  if (attr == 1 && n == 8) {
    p->workspace = *static_cast<const uint64_t*>(buf);
    return 0;
  }
  if (attr >= 5 && attr <= 8 && n == 4) {
    const uint32_t a = *static_cast<const uint32_t*>(buf);
    if (a == 0 || (a & (a - 1))) return 7;
    p->align[attr - 5] = a;
    return 0;
  }
  return 7;
}

// The shapes of D = op(A) op(B): m, n, k from the layouts, or false when they do not agree.
static bool lt_shape(const LtDesc* d, const LtLayout* a, const LtLayout* b, const LtLayout* c,
                     const LtLayout* dd, int* m, int* n, int* k) {
  *m = (int)dd->rows;
  *n = (int)dd->cols;
  *k = (int)(d->ta ? a->rows : a->cols);
  const uint64_t am = d->ta ? a->cols : a->rows;
  const uint64_t bk = d->tb ? b->cols : b->rows, bn = d->tb ? b->rows : b->cols;
  if (c != dd && (c->rows != dd->rows || c->cols != dd->cols || c->ld != dd->ld)) return false;
  // D fp32, or bf16 from bf16 operands summed in fp32 (the combinations the engine uses).
  const bool dtype_ok = dd->type == 0 || (dd->type == 14 && a->type == 14 && d->compute == 68);
  return am == (uint64_t)*m && bk == (uint64_t)*k && bn == (uint64_t)*n && dtype_ok &&
         a->type == b->type && !(d->compute == 77 && a->type != 0);
}

int cublasLtMatmulAlgoGetHeuristic(LtCtx* h, LtDesc* d, LtLayout* a, LtLayout* b, LtLayout* c,
                                   LtLayout* dd, LtPref* p, int requested, LtHeuristic* out,
                                   int* returned) {
  if (!h || !d || !a || !b || !c || !dd || !p || requested < 1 || !out || !returned) return 7;
  int m, n, k;
  if (!lt_shape(d, a, b, c, dd, &m, &n, &k)) return 7;
  // EMU_LT_ALGOS algorithms (default 1), ranked 0, 1, ...: they compute the same loops.
  const char* env = std::getenv("EMU_LT_ALGOS");
  const int algos = env && std::atoi(env) > 0 ? std::atoi(env) : 1;
  *returned = algos < requested ? algos : requested;
  for (int r = 0; r < *returned; r++) {
    out[r] = LtHeuristic{};
    out[r].algo.data[0] = 0x1a;  // this fake's algorithms
    for (int i = 0; i < 4; i++) out[r].algo.data[1 + i] = p->align[i];
    out[r].algo.data[5] = (uint64_t)r;
    out[r].workspace_size = 0;
    out[r].state = 0;
    out[r].waves_count = 1.f;
  }
  return 0;
}

int cublasLtMatmul(LtCtx* h, LtDesc* d, const void* alpha, const void* A, LtLayout* a,
                   const void* B, LtLayout* b, const void* beta, const void* C, LtLayout* c,
                   void* D, LtLayout* dd, const LtAlgo* algo, void* workspace, size_t ws,
                   void* stream) {
  if (!h || !d || !alpha || !beta || !a || !b || !c || !dd || !algo || !D) return 7;
  if (algo->data[0] != 0x1a) return 7;
  int m, n, k;
  if (!lt_shape(d, a, b, c, dd, &m, &n, &k)) return 7;
  if (d->epilogue == 4 && !d->bias) return 7;
  const void* ptrs[4] = {A, B, C, D};
  for (int i = 0; i < 4; i++) {
    if (reinterpret_cast<uintptr_t>(ptrs[i]) % algo->data[1 + i]) return 7;  // misaligned
  }
  const float b0 = *static_cast<const float*>(beta);
  if (b0 != 0.f && C != D) return 15;  // the engine only writes in place
  if (b0 != 0.f && dd->type == 14) return 7;  // the engine never accumulates into bf16
  (void)workspace;
  (void)ws;
  gemm_calls++;
  auto* g = new Gemm{d->ta, d->tb, m, n, k, a->type, (int)a->ld, b->type, (int)b->ld,
                     (int)dd->ld, d->compute == 77, *static_cast<const float*>(alpha), b0, A, B,
                     D, d->epilogue == 4 ? d->bias : nullptr};
  g->ctype = dd->type;
  g->bias_type = d->bias_type >= 0 ? d->bias_type : dd->type;
  // EMU_LT_FAIL=1: every algorithm is refused at the call, as CUBLAS_STATUS_NOT_SUPPORTED.
  if (const char* f = std::getenv("EMU_LT_FAIL"); f && f[0] == '1') {
    delete g;
    return 15;
  }
  // EMU_LT_SLOW_ALGO=r: algorithm r takes EMU_LT_SLOW_US (default 2000) microseconds longer a
  // call (for the timing's tests).
  const char* slow = std::getenv("EMU_LT_SLOW_ALGO");
  if (slow && slow[0] && (uint64_t)std::atoi(slow) == algo->data[5]) {
    const char* us = std::getenv("EMU_LT_SLOW_US");
    g->sleep_us = us && us[0] ? std::atoi(us) : 2000;
  }
  submit_gemm(stream, g);
  return 0;
}

#endif

}  // extern "C"
