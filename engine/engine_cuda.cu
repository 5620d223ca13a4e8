// engine_cuda.cu: the CUDA implementation of lotus_engine.h.
//
// Read lotus_engine.h first: it is the contract, and engine_cpu.cpp is the reference whose
// semantics this file matches op for op (accumulating backwards, strides, masks, fully masked
// rows, xent's dscale, AdamW and its clip, the error messages). As in llm.c, each kernel
// family lives in its own file under cuda/, forward and backward side by side:
//
//   ../engine_checks.h    (shared with the CPU engine) errors, the block registry, each op's
//                         argument checks
//   cuda/common.cuh       engine state, CUDA errors, scratch, index-check kernels, reductions
//   cuda/cublas_api.cuh   our own declarations of the cuBLAS entry points (dlopen'd)
//   cuda/elementwise.cuh  copy_rows, add, scale, GELU
//   cuda/embed.cuh        token + position embedding
//   cuda/layernorm.cuh    LayerNorm, fused residual + LayerNorm; a deferred norm's forward
//   cuda/weights.cuh      bf16 copies of the weights (le_keep_bf16), kept fresh by le_adamw
//   cuda/matmul.cuh       linear layers through cublasGemmEx; the precision modes; the
//                         few-row kernels of our own
//   cuda/skinny.cuh       the split-K kernel for bf16 forwards of 9 to 128 rows
//   cuda/attention.cuh    causal attention with a strided past
//   cuda/attention_tc.cuh the same attention in bf16 on tensor cores
//   cuda/llama.cuh        RMSNorm, rotary position embeddings, SwiGLU
//   cuda/xent.cuh         fused softmax cross-entropy, argmax
//   cuda/adamw.cuh        sumsq, fused AdamW
//   cuda/nccl_api.cuh     data-parallel collectives: NCCL (dlopen'd), started over MPI
//   cuda/graphs.cuh       CUDA graphs of the engine's ops (le_graph_*)
//   cuda/marks.cuh        timing marks on the device's clock (le_mark, le_mark_elapsed)
//
// This file holds the lifecycle and memory functions. Every op checks that the engine is
// initialised (REQUIRE_INIT), then runs its validate_<op> from engine_checks.h, then any
// limits of its own (grid sizes) and the data-dependent checks, and only then queues work.
//
// Build (engine/build.ts): nvcc -O3 -shared -Xcompiler -fPIC -cudart static
// -gencode arch=compute_90,code=[sm_90,compute_90] -ldl, plus -fvisibility=hidden and
// --exclude-libs=ALL so that only the le_* symbols are exported, and -z nodelete so that
// Engine.close() never unloads the static CUDA runtime. No cuBLAS header or library is
// needed to build: cuBLAS is found with dlopen at le_init.
//
// The design, correctness first: simple kernels whose arithmetic mirrors the CPU engine's,
// one explicit stream (every op is queued on it in call order, so ops never need to wait
// for each other), every CUDA and cuBLAS call checked. Reductions that the CPU engine does
// in double (LayerNorm statistics, softmax sums, bias and LayerNorm parameter gradients,
// sumsq) are in double here too, and every reduction has a fixed order, so results are
// deterministic: the same inputs give the same bits. Embedding gradients are bit-identical
// to the CPU engine's.

#include "cuda/common.cuh"
#include "cuda/weights.cuh"
#include "cuda/elementwise.cuh"
#include "cuda/embed.cuh"
#include "cuda/layernorm.cuh"
#include "cuda/matmul.cuh"
#include "cuda/attention.cuh"
#include "cuda/attention_tc.cuh"
#include "cuda/llama.cuh"
#include "cuda/xent.cuh"
#include "cuda/adamw.cuh"
#include "cuda/nccl_api.cuh"
#include "cuda/graphs.cuh"

namespace le {

// Pinned host memory that le_upload copies through, so that an upload needs no host wait: the
// caller's buffer is copied here at once (the ABI lets the caller reuse it on return) and the
// device copy is queued from here. Used front to back; when an upload does not fit in what is
// left, the stream is synchronised (every queued copy from here has then run) and it starts
// again from the front. Uploads larger than the whole buffer wait as before.
struct Staging {
  unsigned char* p = nullptr;
  size_t bytes = 0, used = 0;
};
Staging g_staging;
constexpr size_t kStagingBytes = 8u << 20;

// What le_device_info reports, filled by init.
struct Info {
  char device[256] = "";
  int major = 0, minor = 0, driver = 0, runtime = 0, cublas = 0;
} g_info;

// Undo le_init (only used when le_init switches to another device with nothing allocated).
void teardown() {
  release_lt();
  release_own();
  if (g.handle) g.blas.destroy(g.handle);
  g.handle = nullptr;
  if (g.workspace) cudaFree(g.workspace);
  g.workspace = nullptr;
  for (DevScratch* s :
       {&g_scr_a, &g_scr_b, &g_scr_c, &g_scr_ds, &g_scr_part, &g_scr_bounce, &g_scr_prod,
        &g_scr_att16}) {
    s->release();
  }
  g_produced = ProducedCopy{};
  g_deferred_gelu_fwd = DeferredGeluFwd{};
  g_deferred_norm_fwd = DeferredNormFwd{};
  if (g.dflag) cudaFree(g.dflag);
  g.dflag = nullptr;
  if (g.hflag) cudaFreeHost(g.hflag);
  g.hflag = nullptr;
  if (g_staging.p) cudaFreeHost(g_staging.p);
  g_staging = Staging{};
  forget_checked(nullptr, 0);
  for (WeightCopy& w : g_weights) drop_weight_copy(w);
  for (Graph& gr : g_graphs) drop_graph(gr);
  drop_marks();
  if (g.stream) cudaStreamDestroy(g.stream);
  g.stream = nullptr;
  g.ready = false;
  g.device = -1;
}

// At process exit, before the static CUDA runtime's own exit handler (registered earlier, at
// the first CUDA call, so it runs later): finish queued work and destroy the cuBLAS handle
// while the runtime and libcublas are both still intact. Device memory goes with the process.
void at_exit() {
  if (!g.ready) return;
  if (g.stream) cudaStreamSynchronize(g.stream);
  release_lt();
  if (g.handle) g.blas.destroy(g.handle);
  g.handle = nullptr;
  g.ready = false;
}

// cuBLASLt for every GEMM (matmul.cuh), unless LOTUS_CUBLASLT=0; without it cublasGemmEx
// serves and biases are added by a kernel, which is also what a failed cublasLtCreate leaves.
// LOTUS_GEMM_TUNE: how many of the heuristic's algorithms are timed per GEMM shape (default 8;
// 0 or 1: its first, untimed). Read at every le_init, so a process can open the engine again
// with other settings; the plans and choices made are kept while both stay the same.
// Whether the environment variable `name` is "0": a setting turned off.
inline bool env_off(const char* name) {
  const char* v = getenv(name);
  return v && strcmp(v, "0") == 0;
}

// A setting of 0, 1 or 2 in the environment variable `name`: *mode is `dflt` when it is unset
// or empty; another value fails, saying what each does (`meaning`).
int env_mode(const char* fn, const char* name, int dflt, const char* meaning, int* mode) {
  *mode = dflt;
  const char* v = getenv(name);
  if (!v || !v[0]) return 0;
  if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0 && strcmp(v, "2") != 0) {
    return fail("%s: %s=%s: expected %s", fn, name, v, meaning);
  }
  *mode = v[0] - '0';
  return 0;
}

int configure_lt(const char* fn) {
  const bool off = env_off("LOTUS_CUBLASLT");
  int tune = 8;
  if (const char* t = getenv("LOTUS_GEMM_TUNE"); t && t[0]) {
    char* end = nullptr;
    const long v = strtol(t, &end, 10);
    if (*end || v < 0 || v > 64) {
      return fail("%s: LOTUS_GEMM_TUNE=%s: expected the number of GEMM algorithms to time per "
                  "shape, 0 to 64 (0 or 1: the heuristic's first, untimed; unset: 8)",
                  fn, t);
    }
    tune = v < 1 ? 1 : (int)v;
  }
  if (off == !g.lt && tune == g.tune_candidates) return 0;
  release_lt();
  g.tune_candidates = tune;
  if (!off && g.blas.lt_matmul && g.blas.lt_create(&g.lt) != cublas::kSuccess) g.lt = nullptr;
  return 0;
}

// le_init's check of programmatic dependent launch (common.cuh's LAUNCH): a memset, then
// kernels that add to one word, launched with it back to back with a timing mark's kind of
// event record between them, on the stream, then recorded into a graph and replayed: the
// nodes a recorded step puts before a kernel. true when every call succeeded and the word
// holds 3 each time; otherwise kernels are launched without it (cuBLAS's nodes before ours are
// covered by le_graph_end, which turns it off if a recording fails although its ops did not).
__global__ void pdl_probe_kernel(int* word, int add) {
  pdl_begin();
  if (threadIdx.x == 0) *word += add;
}

bool probe_pdl() {
  (void)cudaGetLastError();  // nothing earlier is taken for the probe's failure
  g.pdl = true;
  int* w = g.dflag + 3;
  cudaEvent_t ev = nullptr;
  bool ok = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) == cudaSuccess;
  const auto run = [&](unsigned record_flags) {
    if (cudaMemsetAsync(w, 0, sizeof(int), g.stream) != cudaSuccess) return false;
    LAUNCH(pdl_probe_kernel, 1, 32, 0)(w, 1);
    if (cudaEventRecordWithFlags(ev, g.stream, record_flags) != cudaSuccess) return false;
    LAUNCH(pdl_probe_kernel, 1, 32, 0)(w, 2);
    return cudaGetLastError() == cudaSuccess && g.pdl;
  };
  const auto word_is_3 = [&] {
    return cudaMemcpyAsync(g.hflag + 3, w, sizeof(int), cudaMemcpyDeviceToHost, g.stream) ==
               cudaSuccess &&
           cudaStreamSynchronize(g.stream) == cudaSuccess && g.hflag[3] == 3;
  };
  ok = ok && run(cudaEventRecordDefault) && word_is_3();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  if (ok && cudaStreamBeginCapture(g.stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess) {
    ok = run(cudaEventRecordExternal);
    ok = cudaStreamEndCapture(g.stream, &graph) == cudaSuccess && ok;
  } else {
    ok = false;
  }
  if (ok) ok = cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
  if (ok) ok = cudaGraphLaunch(exec, g.stream) == cudaSuccess && word_is_3();
  if (exec) cudaGraphExecDestroy(exec);
  if (graph) cudaGraphDestroy(graph);
  if (ev) cudaEventDestroy(ev);
  (void)cudaGetLastError();
  g.pdl = ok;
  g.pdl_dropped = false;
  return ok;
}

// bf16 attention on tensor cores (attention_tc.cuh) unless LOTUS_TC_ATTENTION=0, which keeps
// the fp32 kernels of attention.cuh in every precision, or unless the tensor cores' register
// layout is not the one the kernels assume (probe_mma); its backward stages bf16 copies of its
// rows unless LOTUS_TC_BF16_ROWS=0 (the same bits either way); its kernels stage each tile
// while the products before it run unless LOTUS_TC_AHEAD=0 (the same bits); LOTUS_TC_WARPS (4
// to 8, unset: 8) bounds its blocks' warps (attention_tc.cuh's tc_warps; 4: 64-row tiles
// whatever the sequence, the same bits). Forwards of up to 8 rows in bf16 run gemv_bf16_kernel
// unless LOTUS_GEMV=0, and of 9 to 128 rows skinny_gemm_kernel as LOTUS_SKINNY says
// (matmul.cuh). Kernels are launched with programmatic dependent launch
// (common.cuh) unless LOTUS_PDL=0 or probe_pdl fails. Models keep qkv and the MLP's first
// projection in bf16 storage in bf16 mode unless LOTUS_BF16_QKV=0 or LOTUS_BF16_FCH=0 (the
// engine only says so: le_device_info's bf16Qkv, bf16Fch). Read at every le_init, as above;
// needs g.dflag.
int configure_kernels(const char* fn) {
  int warps = 8;
  if (const char* w = getenv("LOTUS_TC_WARPS"); w && w[0]) {
    char* end = nullptr;
    const long v = strtol(w, &end, 10);
    if (*end || v < kTcMinWarps || v > 8) {
      return fail("%s: LOTUS_TC_WARPS=%s: expected the most warps of a tensor-core attention "
                  "block, %d to 8 (unset: 8)",
                  fn, w, kTcMinWarps);
    }
    warps = (int)v;
  }
  g.tc_max_warps = warps;
  g.tc_attention = !env_off("LOTUS_TC_ATTENTION");
  g.tc_bf16_rows = !env_off("LOTUS_TC_BF16_ROWS");
  g.tc_ahead = !env_off("LOTUS_TC_AHEAD");
  g.bf16_qkv = !env_off("LOTUS_BF16_QKV");
  g.bf16_fch = !env_off("LOTUS_BF16_FCH");
  // Every tensor-core kernel (attention's and the few-row forwards') assumes mma.sync's
  // documented register layout: a GPU that does not give it (or a probe that cannot run)
  // turns them all off.
  g.mma_probe = probe_mma();
  if (g.mma_probe != 0) g.tc_attention = false;
  g.gemv = !env_off("LOTUS_GEMV");
  // The host emulation's clock cannot rank kernels against each other (matmul.cuh's own_fwd).
#ifdef LE_HOST_EMULATION
  constexpr bool emulated = true;
#else
  constexpr bool emulated = false;
#endif
  TRY(env_mode(fn, "LOTUS_SKINNY", emulated ? 0 : 1,
               "0 (bf16 forwards of 9 to 128 rows by cuBLAS), 1 (by our kernel where timing says "
               "it is faster; the default on a GPU) or 2 (by our kernel wherever it applies)",
               &g.skinny));
  if (g.mma_probe != 0) g.skinny = 0;
  g.defer_gelu_bwd = !env_off("LOTUS_DEFER_GELU_BWD");
  TRY(env_mode(fn, "LOTUS_DEFER_GELU_FWD", emulated ? 2 : 1,
               "0 (GELU's forward always its own kernel), 1 (formed by the few-row kernel after "
               "it where timing says it is faster; the default on a GPU) or 2 (wherever such a "
               "kernel follows)",
               &g.defer_gelu_fwd));
  TRY(env_mode(fn, "LOTUS_DEFER_NORM_FWD", emulated ? 2 : 1,
               "0 (a norm's forward always its own kernel), 1 (formed by the gemv kernel after "
               "it where timing says it is faster; the default on a GPU) or 2 (wherever that "
               "kernel follows)",
               &g.defer_norm_fwd));
  g.pdl = false;
  if (!env_off("LOTUS_PDL")) probe_pdl();
  return 0;
}

int init(int device) {
  const char* fn = "le_init";
  // Without a driver the runtime only says "driver version is insufficient"; name the
  // missing library instead. The handle stays open: the runtime loads the same library.
  if (!dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL)) {
    const char* why = dlerror();
    return fail("le_init: no NVIDIA driver on this machine (%s). The CUDA engine needs an "
                "NVIDIA GPU of compute capability 9.0 or newer and a driver for CUDA 13 (r580 "
                "or newer); use --backend cpu, or --backend auto to fall back to the CPU",
                why ? why : "libcuda.so.1 cannot be loaded");
  }
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return fail("le_init: no usable NVIDIA GPU: cudaGetDeviceCount failed: %s (%s). The CUDA "
                "engine needs an NVIDIA GPU of compute capability 9.0 or newer and a driver "
                "for CUDA 13 (r580 or newer); on this machine use --backend cpu, or --backend "
                "auto to fall back to the CPU",
                cudaGetErrorString(e), cudaGetErrorName(e));
  }
  if (count == 0) {
    return fail("le_init: the NVIDIA driver reports no GPU; use --backend cpu, or --backend "
                "auto to fall back to the CPU");
  }
  if (device < 0 || device >= count) {
    return fail("le_init: device %d does not exist: this machine has %d GPU%s (0..%d)", device,
                count, count == 1 ? "" : "s", count - 1);
  }
  cudaDeviceProp prop;
  CUDA_TRY(fn, cudaGetDeviceProperties(&prop, device));
  if (prop.major < 9) {
    return fail("le_init: GPU %d (%s) has compute capability %d.%d; this library is built for "
                "9.0 (Hopper) and newer. Add a -gencode for sm_%d%d to engine/build.ts "
                "to run there",
                device, prop.name, prop.major, prop.minor, prop.major, prop.minor);
  }
  CUDA_TRY(fn, cudaSetDevice(device));
  snprintf(g_info.device, sizeof g_info.device, "%s", prop.name);
  g_info.major = prop.major;
  g_info.minor = prop.minor;
  g.sms = prop.multiProcessorCount;
  if (cudaDriverGetVersion(&g_info.driver) != cudaSuccess) g_info.driver = 0;
  if (cudaRuntimeGetVersion(&g_info.runtime) != cudaSuccess) g_info.runtime = 0;
  (void)cudaGetLastError();
  CUDA_TRY(fn, cudaStreamCreateWithFlags(&g.stream, cudaStreamNonBlocking));
  char err[4096];
  if (cublas::load(&g.blas, err, sizeof err)) {
    cudaStreamDestroy(g.stream);
    g.stream = nullptr;
    return fail("le_init: %s", err);
  }
  cublas::Status s = g.blas.create(&g.handle);
  if (s != cublas::kSuccess) {
    cudaStreamDestroy(g.stream);
    g.stream = nullptr;
    return fail("le_init: cublasCreate failed: %s", cublas::status_name(s));
  }
  if (g.blas.get_version(g.handle, &g_info.cublas) != cublas::kSuccess) g_info.cublas = 0;
  const char* step = "cublasSetStream";
  s = g.blas.set_stream(g.handle, g.stream);
  if (s == cublas::kSuccess) {
    if (cudaMalloc(&g.workspace, kWorkspaceBytes) != cudaSuccess) {
      (void)cudaGetLastError();
      teardown();
      return fail("le_init: cannot allocate the %zu MiB cuBLAS workspace; is the GPU full?",
                  kWorkspaceBytes >> 20);
    }
    step = "cublasSetWorkspace";
    s = g.blas.set_workspace(g.handle, g.workspace, kWorkspaceBytes);
  }
  if (s == cublas::kSuccess) {
    step = "cublasSetMathMode";
    s = g.blas.set_math_mode(g.handle, cublas::kDefaultMath);
  }
  if (s != cublas::kSuccess) {
    teardown();
    return fail("le_init: %s failed: %s", step, cublas::status_name(s));
  }
  if (configure_lt(fn) != 0) {
    teardown();
    return 1;
  }
  e = cudaMalloc(&g.dflag, 4 * sizeof(int));
  if (e == cudaSuccess) e = cudaMallocHost(&g.hflag, 4 * sizeof(int));
  if (e != cudaSuccess) {
    teardown();
    return cuda_fail(fn, "cudaMalloc of 16 bytes", e);
  }
  if (configure_kernels(fn) != 0) {
    teardown();
    return 1;
  }
  const char* sync = getenv("LOTUS_CUDA_SYNC");
  g.sync_each_op = sync && sync[0] && strcmp(sync, "0") != 0;
  g.device = device;
  g.ready = true;
  static bool registered = false;
  if (!registered) registered = atexit(at_exit) == 0;
  return 0;
}

}  // namespace le

// ---- lifecycle ----------------------------------------------------------------------------

LE_API int le_abi_version(void) { return LE_ABI_VERSION; }
LE_API int le_backend(void) { return 1; }
LE_API uint64_t le_last_error(char* buf, uint64_t cap) { return le::copy_last_error(buf, cap); }

LE_API uint64_t le_device_info(char* buf, uint64_t cap) {
  using namespace le;
  std::string s;
  if (!g.ready) {
    s = "{\"backend\":\"cuda\",\"ready\":false}";
  } else {
    auto quoted = [](const char* v) {
      std::string q = "\"";
      for (const char* p = v; *p; p++) {
        if (*p == '"' || *p == '\\') q += '\\';
        if ((unsigned char)*p >= 0x20) q += *p;
      }
      return q + "\"";
    };
    char nums[1536];
    snprintf(nums, sizeof nums,
             ",\"cc\":\"%d.%d\",\"driver\":%d,\"runtime\":%d,\"cublasVersion\":%d,"
             "\"cublasLtVersion\":%zu,\"cublasLt\":%s,\"tcAttention\":%s,\"tcMaxHead\":%d,"
             "\"bf16Qkv\":%s,\"bf16Fch\":%s,\"bf16OutLt\":%lld,\"bf16OutRounded\":%lld,\"gemv\":%s,"
             "\"deferGeluBwd\":%s,\"deferGeluFwd\":%d,\"pdl\":%s,\"pdlDropped\":%s,\"mmaProbe\":%d,"
             "\"gemmTuneCandidates\":%d,"
             "\"gemmTuneShapes\":%d,\"gemmTuneChanged\":%d,\"gemmTuneHeuristicUs\":%.1f,"
             "\"gemmTuneChosenUs\":%.1f,\"skinny\":%d,\"skinnyShapes\":%d,"
             "\"skinnyChosen\":%d,\"skinnyCublasUs\":%.1f,\"skinnyKernelUs\":%.1f,"
             "\"geluFwdShapes\":%d,\"geluFwdFused\":%d,\"deferNormFwd\":%d,"
             "\"normFwdShapes\":%d,\"normFwdFused\":%d}",
             g_info.major, g_info.minor, g_info.driver, g_info.runtime, g_info.cublas,
             g.blas.lt_version, g.lt ? "true" : "false", g.tc_attention ? "true" : "false",
             g.tc_attention ? 128 : 0, g.bf16_qkv && g.tc_attention ? "true" : "false",
             g.bf16_fch ? "true" : "false",
             (long long)g_bf16_out.lt, (long long)g_bf16_out.rounded, g.gemv ? "true" : "false",
             g.defer_gelu_bwd ? "true" : "false", g.defer_gelu_fwd,
             g.pdl ? "true" : "false", g.pdl_dropped ? "true" : "false", g.mma_probe,
             g.tune_candidates, g_tune.shapes,
             g_tune.changed, g_tune.heuristic_us, g_tune.chosen_us, g.skinny, g_own.sk_shapes,
             g_own.sk_chosen, g_own.sk_cublas_us, g_own.sk_kernel_us, g_own.gelu_shapes,
             g_own.gelu_fused, g.defer_norm_fwd, g_own.norm_shapes, g_own.norm_fused);
    s = "{\"backend\":\"cuda\",\"device\":" + quoted(g_info.device) +
        ",\"cublas\":" + quoted(g.blas.path) + nums;
  }
  if (buf != nullptr && cap > 0) {
    const size_t n = s.size() < cap - 1 ? s.size() : (size_t)(cap - 1);
    memcpy(buf, s.data(), n);
    buf[n] = '\0';
  }
  return s.size();
}

// Idempotent: Engine.close() leaves the library loaded (-z nodelete), so a later openEngine
// calls le_init again on the same state.
LE_API int le_init(int device) {
  using namespace le;
  REQUIRE_NOT_CAPTURING("le_init");
  if (g.ready) {
    if (device == g.device) {
      TRY(configure_lt("le_init"));
      TRY(configure_kernels("le_init"));
      return 0;
    }
    const size_t blocks = live_blocks();
    if (blocks != 0) {
      return fail("le_init: the engine already runs on device %d with %zu blocks allocated; "
                  "free them before switching to device %d",
                  g.device, blocks, device);
    }
  }
  if (g.ready) teardown();
  return init(device);
}

// The GPU schedules its own threads.
LE_API int le_set_num_threads(int n) {
  (void)n;
  return 0;
}

// The hint is for the next engine call (common.cuh's fp32_dest); it queues nothing, so it
// may come while a graph is being captured.
LE_API int le_operand_only(const float* out) {
  using namespace le;
  if (!g.ready) {
    return fail("le_operand_only: the CUDA engine is not initialised; call le_init first "
                "(openEngine does)");
  }
  g_operand_only = {out, g_op_serial + 1};
  return 0;
}

LE_API int le_set_precision(int mode) {
  REQUIRE_NOT_CAPTURING("le_set_precision");
  TRY(le::validate_set_precision(mode));
  le::g_op_serial++;  // a produced bf16 copy is not read across (common.cuh)
  TRY(le::check_operand_consumed("le_set_precision"));
  le::g.precision = mode;
  return 0;
}

// ---- memory -------------------------------------------------------------------------------

LE_API void* le_alloc(uint64_t bytes) {
  using namespace le;
  g_op_serial++;  // a new block may start where a freed output was (common.cuh)
  if (check_operand_consumed("le_alloc")) return nullptr;
  if (!g.ready) {
    fail("le_alloc: the CUDA engine is not initialised; call le_init first (openEngine does)");
    return nullptr;
  }
  if (g.capturing) {
    fail("le_alloc: not allowed while a graph is being captured (le_graph_begin); allocate "
         "before le_graph_begin");
    return nullptr;
  }
  if (validate_alloc(bytes)) return nullptr;
  const uint64_t rounded = bytes < 256 ? 256 : (bytes + 255) / 256 * 256;
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, rounded);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    (void)cudaGetLastError();
    fail("le_alloc: cannot allocate %llu bytes (%.2f GiB) of device memory: %s (%.2f GiB of "
         "%.2f GiB free); reduce the batch size or the model, or free buffers first",
         (unsigned long long)bytes, bytes / 1073741824.0, cudaGetErrorString(e),
         free_b / 1073741824.0, total_b / 1073741824.0);
    return nullptr;
  }
  e = cudaMemsetAsync(p, 0, rounded, g.stream);
  if (e != cudaSuccess) {
    cudaFree(p);
    cuda_fail("le_alloc", "cudaMemsetAsync", e);
    return nullptr;
  }
  register_block(p, Block{bytes, 0});
  return p;
}

LE_API void* le_alloc_bf16(uint64_t n) {
  using namespace le;
  if (validate_alloc_bf16(n)) return nullptr;
  void* p = le_alloc(2 * n);
  if (p) mark_bf16_block(p);
  return p;
}

LE_API int le_free(void* p) {
  using namespace le;
  if (!p) return 0;
  g_op_serial++;
  TRY(check_operand_consumed("le_free"));
  REQUIRE_NOT_CAPTURING("le_free");
  // Kernels queued earlier may still use the block. cudaFree may wait for them, but the
  // runtime does not promise it: the stream is waited for first.
  CUDA_TRY("le_free", cudaStreamSynchronize(g.stream));
  Block b{};
  TRY(unregister_block(p, &b));
  freed(p, b.bytes ? b.bytes : 1);
  CUDA_TRY("le_free", cudaFree(p));
  return 0;
}

LE_API uint64_t le_bytes_in_use(void) { return le::bytes_in_use(); }

LE_API int le_upload(void* dst, const void* host_src, uint64_t bytes) {
  using namespace le;
  if (bytes == 0) return 0;
  REQUIRE_INIT("le_upload");
  REQUIRE_NOT_CAPTURING("le_upload");
  TRY(validate_upload(dst, host_src, bytes));
  wrote(dst, bytes);
  remember_uploaded(dst, host_src, bytes);  // an index array's range, known without a wait
  if (!g_staging.p && cudaMallocHost(&g_staging.p, kStagingBytes) == cudaSuccess) {
    g_staging.bytes = kStagingBytes;
  }
  (void)cudaGetLastError();  // without staging memory, uploads wait as below
  if (bytes <= g_staging.bytes) {
    if (g_staging.used + bytes > g_staging.bytes) {
      CUDA_TRY("le_upload", cudaStreamSynchronize(g.stream));  // the staged copies have run
      g_staging.used = 0;
    }
    unsigned char* stage = g_staging.p + g_staging.used;
    g_staging.used += (bytes + 255) / 256 * 256;
    memcpy(stage, host_src, bytes);
    CUDA_TRY("le_upload", cudaMemcpyAsync(dst, stage, bytes, cudaMemcpyHostToDevice, g.stream));
    return op_done("le_upload");
  }
  CUDA_TRY("le_upload",
           cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, g.stream));
  // Synchronous, as the ABI promises: the caller may reuse host_src at once.
  CUDA_TRY("le_upload", cudaStreamSynchronize(g.stream));
  return 0;
}

LE_API int le_download(void* host_dst, const void* src, uint64_t bytes) {
  using namespace le;
  if (bytes == 0) return 0;
  REQUIRE_INIT("le_download");
  REQUIRE_NOT_CAPTURING("le_download");
  TRY(validate_download(host_dst, src, bytes));
  CUDA_TRY("le_download",
           cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, g.stream));
  CUDA_TRY("le_download", cudaStreamSynchronize(g.stream));
  return 0;
}

LE_API int le_zero(void* dst, uint64_t bytes) {
  using namespace le;
  if (bytes == 0) return 0;
  REQUIRE_INIT("le_zero");
  TRY(validate_zero(dst, bytes));
  wrote(dst, bytes);
  CUDA_TRY("le_zero", cudaMemsetAsync(dst, 0, bytes, g.stream));
  return op_done("le_zero");
}

// Overlapping ranges are allowed (memmove semantics): they bounce through scratch, since a
// device-to-device cudaMemcpy of overlapping ranges is undefined.
LE_API int le_copy(void* dst, const void* src, uint64_t bytes) {
  using namespace le;
  if (bytes == 0) return 0;
  REQUIRE_INIT("le_copy");
  TRY(validate_copy(dst, src, bytes));
  if (dst == src) return 0;
  wrote(dst, bytes);
  if (overlaps(dst, bytes, src, bytes)) {
    void* tmp = g_scr_bounce.get("le_copy", bytes);
    if (!tmp) return 1;
    CUDA_TRY("le_copy", cudaMemcpyAsync(tmp, src, bytes, cudaMemcpyDeviceToDevice, g.stream));
    CUDA_TRY("le_copy", cudaMemcpyAsync(dst, tmp, bytes, cudaMemcpyDeviceToDevice, g.stream));
  } else {
    CUDA_TRY("le_copy", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, g.stream));
  }
  return op_done("le_copy");
}

LE_API int le_sync(void) {
  using namespace le;
  REQUIRE_INIT("le_sync");
  REQUIRE_NOT_CAPTURING("le_sync");
  CUDA_TRY("le_sync", cudaStreamSynchronize(g.stream));
  CUDA_TRY("le_sync", cudaGetLastError());
  return 0;
}

// ---- data-parallel collectives (cuda/nccl_api.cuh, ../comm_mpi.h) ------------------------

LE_API int le_comm_init(double timeout_s) {
  REQUIRE_INIT("le_comm_init");
  REQUIRE_NOT_CAPTURING("le_comm_init");
  return nccl::join("le_comm_init", timeout_s);
}
LE_API int le_comm_rank(void) { return le::comm::st().joined ? le::comm::st().rank : -1; }
LE_API int le_comm_size(void) { return le::comm::st().joined ? le::comm::st().size : 0; }

LE_API int le_comm_allreduce_sum(float* buf, int64_t n) {
  using namespace le;
  const char* fn = "le_comm_allreduce_sum";
  REQUIRE_INIT(fn);
  REQUIRE_NOT_CAPTURING(fn);
  REQUIRE_NONNEG(fn, "n", n);
  if (n > 0) TRY(check_span(fn, "buf", buf, mul((uint64_t)n, 4)));
  wrote(buf, (uint64_t)n * 4);
  return nccl::allreduce_sum(fn, buf, n);
}

LE_API int le_comm_broadcast(void* buf, uint64_t bytes, int root) {
  using namespace le;
  const char* fn = "le_comm_broadcast";
  REQUIRE_INIT(fn);
  REQUIRE_NOT_CAPTURING(fn);
  if (bytes > 0) TRY(check_span(fn, "buf", buf, bytes));
  wrote(buf, bytes);
  return nccl::broadcast(fn, buf, bytes, root);
}

LE_API int le_comm_barrier(void) {
  REQUIRE_INIT("le_comm_barrier");
  REQUIRE_NOT_CAPTURING("le_comm_barrier");
  return nccl::barrier("le_comm_barrier");
}

LE_API int le_comm_finalize(void) { return nccl::leave("le_comm_finalize"); }

LE_API int le_comm_allreduce_start(float* buf, int64_t n) {
  using namespace le;
  const char* fn = "le_comm_allreduce_start";
  REQUIRE_INIT(fn);
  REQUIRE_NOT_CAPTURING(fn);
  REQUIRE_NONNEG(fn, "n", n);
  if (n > 0) TRY(check_span(fn, "buf", buf, mul((uint64_t)n, 4)));
  wrote(buf, (uint64_t)n * 4);
  return nccl::allreduce_start(fn, buf, n);
}

// NCCL advances on the device by itself: nothing to do.
LE_API int le_comm_progress(void) {
  REQUIRE_INIT("le_comm_progress");
  REQUIRE_NOT_CAPTURING("le_comm_progress");
  return nccl::require_comm("le_comm_progress");
}

LE_API int le_comm_wait(void) {
  REQUIRE_INIT("le_comm_wait");
  REQUIRE_NOT_CAPTURING("le_comm_wait");
  TRY(nccl::require_comm("le_comm_wait"));
  return nccl::wait_pending("le_comm_wait");
}
