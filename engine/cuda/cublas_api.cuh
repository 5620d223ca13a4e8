// cublas_api.cuh: the few cuBLAS / cuBLASLt entry points the engine uses, declared here and
// resolved with dlopen at le_init.
//
// Why not #include <cublas_v2.h> and link -lcublas: the library must compile on machines that
// have nvcc but no cuBLAS (CI, this project's build machines), and it must load on machines
// whose cuBLAS lives outside the linker's default path. So the types, enums and signatures
// below are written from NVIDIA's public cuBLAS documentation (the "cuBLAS Datatypes
// Reference" and "cuBLAS Helper Function Reference" chapters), only for what the engine
// calls, and for cuBLASLt from its API reference (the matmul descriptor, layout, preference,
// heuristic and cublasLtMatmul). The numeric enum values are part of cuBLAS's stable ABI;
// cudaDataType comes from the CUDA runtime's library_types.h, which nvcc always has.
//
// Symbol names: since cuBLAS v2 the handle-based functions are exported with a `_v2` suffix
// (cublas_v2.h maps cublasCreate to cublasCreate_v2 with a macro); cublasGemmEx,
// cublasSetMathMode and cublasGetStatusString have no suffix.
#pragma once

#include <dlfcn.h>
#include <glob.h>
#include <library_types.h>  // cudaDataType_t: CUDA_R_32F = 0, CUDA_R_16BF = 14
#include <link.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace cublas {

typedef struct Context* Handle;  // cublasHandle_t: an opaque pointer
typedef int Status;              // cublasStatus_t

constexpr Status kSuccess = 0;  // CUBLAS_STATUS_SUCCESS

// cublasOperation_t
constexpr int kOpN = 0;  // CUBLAS_OP_N
constexpr int kOpT = 1;  // CUBLAS_OP_T

// cublasMath_t
constexpr int kDefaultMath = 0;  // CUBLAS_DEFAULT_MATH

// cublasComputeType_t
constexpr int kCompute32F = 68;          // CUBLAS_COMPUTE_32F: fp32 products and sums
constexpr int kCompute32FFastTF32 = 77;  // CUBLAS_COMPUTE_32F_FAST_TF32: TF32 tensor cores

// cublasGemmAlgo_t
constexpr int kGemmDefault = -1;  // CUBLAS_GEMM_DEFAULT

typedef Status (*CreateFn)(Handle*);                   // cublasCreate_v2
typedef Status (*DestroyFn)(Handle);                   // cublasDestroy_v2
typedef Status (*SetStreamFn)(Handle, cudaStream_t);   // cublasSetStream_v2
typedef Status (*SetWorkspaceFn)(Handle, void*, size_t);  // cublasSetWorkspace_v2
typedef Status (*SetMathModeFn)(Handle, int);          // cublasSetMathMode
typedef Status (*GetVersionFn)(Handle, int*);          // cublasGetVersion_v2
typedef const char* (*GetStatusStringFn)(Status);      // cublasGetStatusString
// cublasGemmEx: C = alpha op(A) op(B) + beta C, column-major; alpha and beta are host
// pointers to float when the compute type is a 32F one.
typedef Status (*GemmExFn)(Handle, int transa, int transb, int m, int n, int k,
                           const void* alpha, const void* A, cudaDataType_t Atype, int lda,
                           const void* B, cudaDataType_t Btype, int ldb, const void* beta,
                           void* C, cudaDataType_t Ctype, int ldc, int computeType, int algo);
typedef size_t (*LtGetVersionFn)(void);  // cublasLtGetVersion

// cuBLASLt, which runs the engine's GEMMs (matmul.cuh: algorithms chosen by timing, a bias in
// the epilogue). Values
// from the cuBLASLt API reference (cublasLtEpilogue_t, cublasLtMatmulDescAttributes_t,
// cublasLtMatmulPreferenceAttributes_t); descriptors and handles are opaque pointers.
typedef struct LtContext* LtHandle;        // cublasLtHandle_t
typedef struct LtDescOpaque* LtDesc;       // cublasLtMatmulDesc_t
typedef struct LtLayoutOpaque* LtLayout;   // cublasLtMatrixLayout_t
typedef struct LtPrefOpaque* LtPref;       // cublasLtMatmulPreference_t
struct LtAlgo {                            // cublasLtMatmulAlgo_t
  uint64_t data[8];
};
struct LtHeuristic {  // cublasLtMatmulHeuristicResult_t
  LtAlgo algo;
  size_t workspace_size;
  Status state;
  float waves_count;
  int reserved[4];
};
constexpr int kLtDescTransA = 3;           // CUBLASLT_MATMUL_DESC_TRANSA (int32)
constexpr int kLtDescTransB = 4;           // CUBLASLT_MATMUL_DESC_TRANSB (int32)
constexpr int kLtDescEpilogue = 7;         // CUBLASLT_MATMUL_DESC_EPILOGUE (uint32)
constexpr int kLtDescBiasPointer = 8;      // CUBLASLT_MATMUL_DESC_BIAS_POINTER (void*)
constexpr int kLtDescBiasDataType = 26;    // CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE (int32)
constexpr int kLtEpilogueDefault = 1;      // CUBLASLT_EPILOGUE_DEFAULT
constexpr int kLtEpilogueBias = 4;         // CUBLASLT_EPILOGUE_BIAS
constexpr int kLtPrefMaxWorkspace = 1;     // CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES (uint64)
constexpr int kLtPrefMinAlignA = 5;        // CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES (uint32)
constexpr int kLtPrefMinAlignB = 6;        // ..._B_BYTES
constexpr int kLtPrefMinAlignC = 7;        // ..._C_BYTES
constexpr int kLtPrefMinAlignD = 8;        // ..._D_BYTES
typedef Status (*LtCreateFn)(LtHandle*);
typedef Status (*LtDestroyFn)(LtHandle);
typedef Status (*LtDescCreateFn)(LtDesc*, int computeType, cudaDataType_t scaleType);
typedef Status (*LtDescDestroyFn)(LtDesc);
typedef Status (*LtDescSetFn)(LtDesc, int attr, const void* buf, size_t bytes);
typedef Status (*LtLayoutCreateFn)(LtLayout*, cudaDataType_t, uint64_t rows, uint64_t cols,
                                   int64_t ld);
typedef Status (*LtLayoutDestroyFn)(LtLayout);
typedef Status (*LtPrefCreateFn)(LtPref*);
typedef Status (*LtPrefDestroyFn)(LtPref);
typedef Status (*LtPrefSetFn)(LtPref, int attr, const void* buf, size_t bytes);
typedef Status (*LtHeuristicFn)(LtHandle, LtDesc, LtLayout A, LtLayout B, LtLayout C,
                                LtLayout D, LtPref, int requested, LtHeuristic* results,
                                int* returned);
// cublasLtMatmul: D = alpha op(A) op(B) + beta C, then the epilogue; alpha and beta are host
// floats (the default pointer mode).
typedef Status (*LtMatmulFn)(LtHandle, LtDesc, const void* alpha, const void* A, LtLayout,
                             const void* B, LtLayout, const void* beta, const void* C,
                             LtLayout, void* D, LtLayout, const LtAlgo* algo, void* workspace,
                             size_t workspace_bytes, cudaStream_t stream);

// The resolved library. cuBLASLt is loaded first and explicitly: libcublas needs it, and
// loading it ourselves gives a clear message naming the file when it is missing.
struct Api {
  void* lib = nullptr;
  void* lt = nullptr;
  const char* lib_name = "";
  char path[512] = "";  // the file the loader opened for libcublas
  size_t lt_version = 0;
  CreateFn create = nullptr;
  DestroyFn destroy = nullptr;
  SetStreamFn set_stream = nullptr;
  SetWorkspaceFn set_workspace = nullptr;
  SetMathModeFn set_math_mode = nullptr;
  GetVersionFn get_version = nullptr;
  GetStatusStringFn status_string = nullptr;  // optional
  GemmExFn gemm_ex = nullptr;
  // cuBLASLt's matmul entry points: all resolved, or none (lt_matmul is then null, the GEMMs
  // go through cublasGemmEx and the engine adds biases with its own kernel).
  LtCreateFn lt_create = nullptr;
  LtDestroyFn lt_destroy = nullptr;
  LtDescCreateFn lt_desc_create = nullptr;
  LtDescDestroyFn lt_desc_destroy = nullptr;
  LtDescSetFn lt_desc_set = nullptr;
  LtLayoutCreateFn lt_layout_create = nullptr;
  LtLayoutDestroyFn lt_layout_destroy = nullptr;
  LtPrefCreateFn lt_pref_create = nullptr;
  LtPrefDestroyFn lt_pref_destroy = nullptr;
  LtPrefSetFn lt_pref_set = nullptr;
  LtHeuristicFn lt_heuristic = nullptr;
  LtMatmulFn lt_matmul = nullptr;
};

inline const char* status_name(Status s) {
  switch (s) {
    case 0: return "CUBLAS_STATUS_SUCCESS";
    case 1: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case 3: return "CUBLAS_STATUS_ALLOC_FAILED";
    case 7: return "CUBLAS_STATUS_INVALID_VALUE";
    case 8: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case 11: return "CUBLAS_STATUS_MAPPING_ERROR";
    case 13: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case 14: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case 15: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case 16: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
  }
}

// One place to look for cuBLAS: libcublasLt and libcublas of the same version, each a bare
// soname (the dynamic loader's search) or a full path.
struct Candidate {
  std::string lt, lib;
};

typedef const char* (*EnvFn)(const char*);

// Sorted matches of a glob pattern, newest-looking first (cuda-13.1 before cuda-12.4).
inline std::vector<std::string> glob_dirs(const std::string& pattern) {
  std::vector<std::string> out;
  glob_t g;
  if (glob(pattern.c_str(), GLOB_ONLYDIR | GLOB_NOSORT, nullptr, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; i++) out.push_back(g.gl_pathv[i]);
  }
  globfree(&g);
  std::sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) {
    return a > b;
  });
  return out;
}

// Where the engine looks for cuBLAS, in order (root prefixes every absolute directory, for
// the tests; "" in the engine):
//   1. LOTUS_CUBLAS=/path/libcublas.so.N: that file, with libcublasLt.so.N beside it, and
//      nothing else (an explicit choice never falls back silently);
//   2. the bare sonames libcublas.so.13, then .so.12 (LD_LIBRARY_PATH, the loader's cache);
//   3. the CUDA toolkit: $CUDA_HOME and $CUDA_PATH, /usr/local/cuda, /usr/local/cuda-*,
//      /opt/cuda, each in lib64 and targets/x86_64-linux/lib;
//   4. NVIDIA's Python packages (nvidia/cublas/lib, nvidia/cu13/lib) in the site-packages of
//      $VIRTUAL_ENV, $CONDA_PREFIX, ~/.local, /usr/local/lib, /usr/lib, /opt/conda.
// Directories are listed only when they exist; each gives .so.13 then .so.12.
inline std::vector<Candidate> candidates(EnvFn env, const std::string& root = "") {
  std::vector<Candidate> out;
  const char* explicit_path = env("LOTUS_CUBLAS");
  if (explicit_path && explicit_path[0]) {
    std::string lib = explicit_path;
    const size_t slash = lib.rfind('/');
    const std::string dir = slash == std::string::npos ? "" : lib.substr(0, slash + 1);
    const std::string base = slash == std::string::npos ? lib : lib.substr(slash + 1);
    const size_t so = base.find(".so");
    const std::string suffix = so == std::string::npos ? "" : base.substr(so);
    out.push_back({dir + "libcublasLt" + suffix, lib});
    return out;
  }
  const char* versions[] = {".so.13", ".so.12"};
  for (const char* v : versions) {
    out.push_back({std::string("libcublasLt") + v, std::string("libcublas") + v});
  }
  std::vector<std::string> dirs;
  auto toolkit = [&](const std::string& top) {
    dirs.push_back(top + "/lib64");
    dirs.push_back(top + "/targets/x86_64-linux/lib");
  };
  for (const char* var : {"CUDA_HOME", "CUDA_PATH"}) {
    const char* v = env(var);
    if (v && v[0]) toolkit(v);
  }
  toolkit(root + "/usr/local/cuda");
  for (const std::string& d : glob_dirs(root + "/usr/local/cuda-*")) toolkit(d);
  toolkit(root + "/opt/cuda");
  std::vector<std::string> sites;
  auto site = [&](const std::string& prefix) {
    for (const char* kind : {"site-packages", "dist-packages"}) {
      for (const std::string& d : glob_dirs(prefix + "/lib/python3*/" + kind)) sites.push_back(d);
    }
  };
  for (const char* var : {"VIRTUAL_ENV", "CONDA_PREFIX"}) {
    const char* v = env(var);
    if (v && v[0]) site(v);
  }
  if (const char* home = env("HOME")) site(std::string(home) + "/.local");
  site(root + "/usr/local");
  site(root + "/usr");
  site(root + "/opt/conda");
  for (const std::string& d : glob_dirs(root + "/usr/lib/python3/dist-packages")) sites.push_back(d);
  for (const std::string& s : sites) {
    dirs.push_back(s + "/nvidia/cublas/lib");
    dirs.push_back(s + "/nvidia/cu13/lib");
  }
  std::vector<std::string> seen;
  for (const std::string& d : dirs) {
    if (std::find(seen.begin(), seen.end(), d) != seen.end()) continue;
    seen.push_back(d);
    for (const char* v : versions) {
      const std::string lib = d + "/libcublas" + v;
      if (access(lib.c_str(), F_OK) != 0) continue;
      out.push_back({d + "/libcublasLt" + v, lib});
    }
  }
  return out;
}

inline const char* real_getenv(const char* name) { return std::getenv(name); }

// Loads libcublasLt and libcublas from the first candidate that loads, and resolves every
// entry point. Returns 0, or 1 with a message in err naming every path tried.
inline int load(Api* api, char* err, size_t errn) {
  std::string tried;
  const std::vector<Candidate> cands = candidates(&real_getenv);
  for (const Candidate& c : cands) {
    void* lt = dlopen(c.lt.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (!lt) {
      const char* e = dlerror();
      tried += "\n  " + c.lt + ": " + (e ? e : "cannot be loaded");
      continue;
    }
    void* lib = dlopen(c.lib.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* e = dlerror();
      tried += "\n  " + c.lib + ": " + (e ? e : "cannot be loaded");
      dlclose(lt);
      continue;
    }
    api->lib = lib;
    api->lt = lt;
    api->lib_name = c.lib.find("so.12") != std::string::npos ? "libcublas.so.12"
                                                               : "libcublas.so.13";
    struct link_map* lm = nullptr;
    if (dlinfo(lib, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name && lm->l_name[0]) {
      snprintf(api->path, sizeof api->path, "%s", lm->l_name);
    } else {
      snprintf(api->path, sizeof api->path, "%s", c.lib.c_str());
    }
    break;
  }
  if (!api->lib) {
    const char* explicit_path = std::getenv("LOTUS_CUBLAS");
    snprintf(err, errn,
             "cannot load cuBLAS; tried:%s\n%s", tried.c_str(),
             explicit_path && explicit_path[0]
                 ? "LOTUS_CUBLAS names the library to load: point it at an existing "
                   "libcublas.so.13 (or .so.12) with its libcublasLt beside it"
                 : "install the CUDA 13 toolkit's cuBLAS (or pip's nvidia-cublas), or set "
                   "LOTUS_CUBLAS=/path/to/libcublas.so.13, or put its directory on "
                   "LD_LIBRARY_PATH");
    return 1;
  }
  struct Sym {
    void** slot;
    void* lib;
    const char* name;
    bool required;
  };
  LtGetVersionFn lt_version = nullptr;
  Sym syms[] = {
      {(void**)&api->create, api->lib, "cublasCreate_v2", true},
      {(void**)&api->destroy, api->lib, "cublasDestroy_v2", true},
      {(void**)&api->set_stream, api->lib, "cublasSetStream_v2", true},
      {(void**)&api->set_workspace, api->lib, "cublasSetWorkspace_v2", true},
      {(void**)&api->set_math_mode, api->lib, "cublasSetMathMode", true},
      {(void**)&api->get_version, api->lib, "cublasGetVersion_v2", true},
      {(void**)&api->gemm_ex, api->lib, "cublasGemmEx", true},
      {(void**)&api->status_string, api->lib, "cublasGetStatusString", false},
      {(void**)&lt_version, api->lt, "cublasLtGetVersion", true},
  };
  for (auto& s : syms) {
    *s.slot = dlsym(s.lib, s.name);
    if (!*s.slot && s.required) {
      snprintf(err, errn, "%s has no symbol %s; the engine needs cuBLAS 12 or 13",
               s.lib == api->lib ? api->lib_name : "cuBLASLt", s.name);
      dlclose(api->lib);
      dlclose(api->lt);
      *api = Api{};
      return 1;
    }
  }
  api->lt_version = lt_version();
  Sym lt_syms[] = {
      {(void**)&api->lt_create, api->lt, "cublasLtCreate", false},
      {(void**)&api->lt_destroy, api->lt, "cublasLtDestroy", false},
      {(void**)&api->lt_desc_create, api->lt, "cublasLtMatmulDescCreate", false},
      {(void**)&api->lt_desc_destroy, api->lt, "cublasLtMatmulDescDestroy", false},
      {(void**)&api->lt_desc_set, api->lt, "cublasLtMatmulDescSetAttribute", false},
      {(void**)&api->lt_layout_create, api->lt, "cublasLtMatrixLayoutCreate", false},
      {(void**)&api->lt_layout_destroy, api->lt, "cublasLtMatrixLayoutDestroy", false},
      {(void**)&api->lt_pref_create, api->lt, "cublasLtMatmulPreferenceCreate", false},
      {(void**)&api->lt_pref_destroy, api->lt, "cublasLtMatmulPreferenceDestroy", false},
      {(void**)&api->lt_pref_set, api->lt, "cublasLtMatmulPreferenceSetAttribute", false},
      {(void**)&api->lt_heuristic, api->lt, "cublasLtMatmulAlgoGetHeuristic", false},
      {(void**)&api->lt_matmul, api->lt, "cublasLtMatmul", false},
  };
  bool all = true;
  for (auto& s : lt_syms) all = (*s.slot = dlsym(s.lib, s.name)) != nullptr && all;
  if (!all) {
    for (auto& s : lt_syms) *s.slot = nullptr;
  }
  return 0;
}

}  // namespace cublas
