// fake_cublas.cpp: stand-ins for libcublas.so.13, libcublasLt.so.13 and libcuda.so.1, for the
// host emulation of the CUDA engine (README.md beside this file). Built three times, under
// names of their own (emu.h redirects the engine's dlopen calls to them):
//   -DFAKE_CUBLAS    libemu_cublas.so: the entry points the engine resolves, GemmEx in loops
//   -DFAKE_CUBLASLT  libemu_cublaslt.so: cublasLtGetVersion
//   (neither)        libemu_cuda.so: empty (le_init only checks that the driver loads)
//
// cublasGemmEx follows the cuBLAS documentation: column-major C[m,n] = alpha op(A) op(B) +
// beta C, with op(A) [m,k] read from A[i + p*lda] (N) or A[p + i*lda] (T), and it rejects what
// cuBLAS rejects (a leading dimension smaller than the stored rows, type combinations the
// engine must not use) with CUBLAS_STATUS_INVALID_VALUE. TF32 compute truncates fp32 operands
// to 10 mantissa bits, the pessimistic reading of the tensor cores' conversion; bf16 operands
// (CUDA_R_16BF = 14) are widened exactly.
#include <cstddef>
#include <cstdint>
#include <cstring>

extern "C" {

#if defined(FAKE_CUBLAS)

// The emulation's stream (include/cuda_runtime.h): a GEMM is queued behind the work before it,
// as on the GPU's stream, and recorded like it while the stream is captured into a graph.
struct emu_stream {
  void (*drain)();
  void (*submit)(void (*run)(void*), void* arg, void (*release)(void*));
};

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

// GEMM calls so far (emu_counters in emu.h reads it).
static uint64_t gemm_calls = 0;
uint64_t emu_gemm_calls(void) { return gemm_calls; }

// One GEMM's arguments, alpha and beta read at the call (host pointer mode), as cuBLAS does.
struct Gemm {
  int ta, tb, m, n, k, at, lda, bt, ldb, ldc;
  bool tf32;
  float a, b;
  const void *A, *B;
  float* C;
};

static void run_gemm(void* p) {
  const Gemm& g = *static_cast<const Gemm*>(p);
  for (int j = 0; j < g.n; j++)
    for (int i = 0; i < g.m; i++) {
      float acc = 0.f;
      for (int q = 0; q < g.k; q++) {
        const size_t ia = g.ta == 0 ? i + (size_t)q * g.lda : q + (size_t)i * g.lda;
        const size_t ib = g.tb == 0 ? q + (size_t)j * g.ldb : j + (size_t)q * g.ldb;
        acc += widen(g.A, g.at, ia, g.tf32) * widen(g.B, g.bt, ib, g.tf32);
      }
      float& out = g.C[i + (size_t)j * g.ldc];
      out = g.b == 0.f ? g.a * acc : g.a * acc + g.b * out;
    }
}

static void release_gemm(void* p) { delete static_cast<Gemm*>(p); }

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
                     static_cast<float*>(C)};
  if (void* s = static_cast<Ctx*>(h)->stream) {
    static_cast<emu_stream*>(s)->submit(&run_gemm, g, &release_gemm);
  } else {
    run_gemm(g);
    release_gemm(g);
  }
  return 0;
}

#elif defined(FAKE_CUBLASLT)

size_t cublasLtGetVersion(void) { return 130000; }

#endif

}  // extern "C"
