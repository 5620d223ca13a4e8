/*
 * lotus_engine.h: the C ABI of the LOTUS training engine.
 *
 * Two libraries implement exactly these symbols:
 *   engine_cpu.cpp  (g++ -O3 -fopenmp): fp32 on the CPU (a cache-blocked GEMM); the
 *                   reference the CUDA engine is checked against, and what CI runs;
 *   engine_cuda.cu  (nvcc, cuBLAS resolved with dlopen): the fast one.
 * The TypeScript side (engine/ffi.ts) owns the parameter layout, the activation buffers
 * and the LOTUS schedule, and calls these coarse ops synchronously from one thread.
 *
 * Conventions
 *  - Every function returns 0 on success and non-zero on failure; le_last_error() then copies
 *    a message into the caller's buffer. Nothing aborts the process.
 *  - No function returns a pointer the caller must read through, and addresses are plain
 *    integers to the caller: a binding needs no pointer dereference of its own.
 *  - "Engine memory" is memory from le_alloc: host memory in the CPU engine, device memory in
 *    the CUDA engine. Every tensor argument is engine memory; only le_upload/le_download touch
 *    host memory.
 *  - Tensors are row-major. float is fp32; token ids, positions and targets are int32; masks
 *    are uint8. Shapes are named in the comments (B batch, T time, C channels, NH heads,
 *    HS = C/NH head size, V vocabulary, N = B*T rows).
 *  - Linear weights are stored [Cout, Cin] and applied as y = x W^T + b (the HF GPT-2 Conv1D
 *    layout [Cin, Cout] is transposed at checkpoint load/save).
 *  - Every backward op ACCUMULATES (+=) into every gradient buffer it writes, parameter and
 *    activation gradients alike. The caller zeroes gradients. This one rule makes gradients
 *    that meet (shared prefix K/V across loop passes, the residual stream, injected states,
 *    tied embeddings) correct without special cases.
 *  - Pointers documented as nullable may be NULL to skip that output or input.
 *  - Strides are in elements, not bytes. Strides must be >= 0.
 *  - Every tensor argument must lie, with all the bytes the op touches, inside one block from
 *    le_alloc (a pointer may point into the middle of a block). The CPU engine checks this
 *    and fails with a message instead of touching memory it does not own.
 *  - Arguments are validated before anything is written: a failing call changes nothing.
 *  - Results are deterministic: the same inputs give bit-identical outputs. The CPU engine's
 *    outputs are also independent of the thread count.
 */
#ifndef LOTUS_ENGINE_H
#define LOTUS_ENGINE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LE_ABI_VERSION 14

/* ---- lifecycle and memory ------------------------------------------------------------- */

int le_abi_version(void);                 /* returns LE_ABI_VERSION */
int le_backend(void);                     /* 0: the CPU engine, 1: the CUDA engine */
/* Copies the message of the last failure ("" if none), NUL-terminated and truncated to cap - 1
 * bytes, into buf (when cap > 0); returns the message's full length in bytes. */
uint64_t le_last_error(char* buf, uint64_t cap);
int le_init(int device);                  /* CPU: ignored; CUDA: device ordinal */
int le_set_num_threads(int n);            /* CPU: OpenMP threads (n <= 0: default); CUDA: no-op */
/* 0 = fp32, 1 = fp32 with TF32 matmuls, 2 = bf16 matmuls with fp32 storage. CPU: only 0. */
int le_set_precision(int mode);
void* le_alloc(uint64_t bytes);           /* zero-filled; NULL on failure (see le_last_error) */
int le_free(void* p);                     /* NULL: no-op; a pointer not from le_alloc: error */
uint64_t le_bytes_in_use(void);           /* bytes currently allocated through le_alloc */
int le_upload(void* dst, const void* host_src, uint64_t bytes);
int le_download(void* host_dst, const void* src, uint64_t bytes);
int le_zero(void* dst, uint64_t bytes);
int le_copy(void* dst, const void* src, uint64_t bytes);
int le_sync(void);

/* Strided block copy of fp32 rows, for b < nb and r < rows (nb, rows, cols >= 0):
 *   dst[b*dst_bs + r*dst_rs + 0..cols)  =  src[b*src_bs + r*src_rs + 0..cols)   (accumulate=0)
 *   dst[...]                           +=  src[...]                              (accumulate=1)
 * Used to concatenate K/V segments, to inject loop states, and for the matching backward.
 * src and dst must not overlap. Overlapping destination rows (a zero stride) are allowed and
 * are then processed in order (b outer, r inner). */
int le_copy_rows(float* dst, const float* src, int nb, int rows, int cols, int64_t dst_bs,
                 int64_t dst_rs, int64_t src_bs, int64_t src_rs, int accumulate);

/* out[i] = a[i] + b[i]; out may alias a or b. n >= 0 here and in le_scale and le_gelu_*. */
int le_add(float* out, const float* a, const float* b, int64_t n);
/* x[i] *= s */
int le_scale(float* x, float s, int64_t n);

/* ---- model ops (forward writes with =, backward accumulates with +=) ------------------ */

/* out[N,C] = wte[ids[n]] + wpe[pos[n]].  ids[n] < 0: no token row (used for "replace"
 * injection). wpe NULL: no position row (the auxiliary decoder); pos is then not read.
 * The ABI carries no vocabulary size: ids and pos are checked against the rows that fit in
 * the block holding wte / wpe.
 * Backward: dwte[ids[n]] += dout[n] (rows with ids[n] < 0 skipped), dwpe[pos[n]] += dout[n];
 * dwte and dwpe are nullable (skip that gradient). */
int le_embed_fwd(float* out, const int32_t* ids, const int32_t* pos, const float* wte,
                 const float* wpe, int N, int C);
int le_embed_bwd(float* dwte, float* dwpe, const float* dout, const int32_t* ids,
                 const int32_t* pos, int N, int C);

/* out = (inp - mean) * rstd * w + b over the last dim, rstd = 1/sqrt(var + 1e-5) (GPT-2's
 * epsilon; var is the biased variance). Statistics are computed in double.
 * mean, rstd [N] are saved for backward; they are nullable in the forward (inference).
 * Backward: dinp, dw, db are each nullable. */
int le_layernorm_fwd(float* out, float* mean, float* rstd, const float* inp, const float* w,
                     const float* b, int N, int C);
int le_layernorm_bwd(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                     const float* w, const float* mean, const float* rstd, int N, int C);
/* Fused residual + LayerNorm: resid = a + b; out = LayerNorm(resid). resid may alias a or b.
 * Backward is le_layernorm_bwd into dresid, whose gradient the caller passes on to both a
 * and b. */
int le_residual_layernorm_fwd(float* resid, float* out, float* mean, float* rstd, const float* a,
                              const float* b, const float* w, const float* bias, int N, int C);

/* out[N,Cout] = inp[N,Cin] W[Cout,Cin]^T + bias[Cout] (bias nullable). N, Cin, Cout > 0.
 * Products are accumulated in fp32 (as cuBLAS does), in a fixed order. */
int le_matmul_fwd(float* out, const float* inp, const float* w, const float* bias, int N,
                  int Cin, int Cout);
/* dinp += dout W; dw += dout^T inp; dbias += sum_n dout. Each of dinp, dw, dbias nullable;
 * inp may be NULL when dw is, and w when dinp is. dbias is summed in double.
 * accumulate == 0: dinp = dout W instead (dinp is not read; a backward whose input gradient
 * has one writer needs no zero-fill before it). The parameter gradients always accumulate. */
int le_matmul_bwd(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                  const float* w, int N, int Cin, int Cout, int accumulate);

/* GELU, tanh approximation (GPT-2's "gelu_new"). inp may be bf16 storage (le_alloc_bf16). */
int le_gelu_fwd(float* out, const float* inp, int64_t n);
/* dinp += gelu'(inp) dout; accumulate == 0: dinp = gelu'(inp) dout (dinp not read). */
int le_gelu_bwd(float* dinp, const float* inp, const float* dout, int64_t n, int accumulate);

/* A hint for the op that comes next, if it writes `out` and a matmul reads `out` right after
 * it, as its input, and nothing reads out's fp32 values later (they are scratch, overwritten
 * before any other read): le_gelu_fwd, le_layernorm_fwd and le_residual_layernorm_fwd (their
 * `out`), le_rmsnorm_fwd, le_residual_rmsnorm_fwd, le_swiglu_fwd. In bf16 mode the CUDA engine then writes only the
 * bf16 copy that the matmul reads (common.cuh's produced operands) and leaves out's fp32
 * values as they were; the matmul's results are the same bits. Any other op right after the
 * producer fails, naming both, as does a matmul that cannot use the copy. The CPU engine, and
 * the CUDA engine in fp32 and TF32 modes, write `out` as usual. Optional: a library built
 * before it lacks the symbol, and the binding then does without it.
 * Also le_gelu_bwd with accumulate == 0 (its `dinp`), when le_matmul_bwd right after reads
 * dinp as its dout: in bf16 mode the CUDA engine (le_device_info's "deferGeluBwd") then
 * launches nothing for the GELU backward, and that matmul backward forms the values, the
 * same bits, in the pass that sums its bias gradient; dinp is not written. Any other op right
 * after it fails, as does a matmul backward with another dout. Launching nothing, it leaves
 * the bf16 copy that the op before it made to that matmul. */
int le_operand_only(const float* out);

/* Dropout with drop probability p in [0, 1), in place: element i is kept when
 * u_i >= p, where u_i is the top 24 bits of splitmix64's finaliser of
 * seed + (i + 1) * 0x9E3779B97F4A7C15, over 2^24 (the same bits in both engines); kept
 * elements are scaled by 1 / (1 - p), dropped ones set to 0, and mask[i] = kept (uint8).
 * seed_at: NULL, or engine memory holding the seed, read when the op runs instead of seed (a
 * recorded graph then draws new masks at each replay from what was uploaded there). */
int le_dropout_fwd(float* x, uint8_t* mask, int64_t n, float p, uint64_t seed,
                   const uint64_t* seed_at);
/* dinp[i] = mask[i] ? dout[i] / (1 - p) : 0 (written, not accumulated; dinp may be dout). */
int le_dropout_bwd(float* dinp, const float* dout, const uint8_t* mask, int64_t n, float p);

/* Causal multi-head attention of a chunk of Tq queries against [past keys ‖ own keys].
 *  qkv      [B,Tq,3C] contiguous: q at column 0, k at C, v at 2C (the QKV matmul output).
 *  kv_past  nullable when Tp == 0: row (b,t) of past keys starts at kv_past + b*past_bs +
 *           t*past_rs, and its values start C elements later. This addresses both the
 *           prefix pass's qkv buffer (kv_past = qkv_pre + C, past_rs = 3C, past_bs = P*3C)
 *           and a K/V cache laid out [B,Tmax,2C] (past_rs = 2C, past_bs = Tmax*2C).
 *           past_rs must be >= 2C (rows must not overlap); past_bs may be 0 to share one
 *           past across the batch.
 *  B, Tq, C, NH > 0; Tp >= 0; C % NH == 0.
 *  key_valid nullable (all valid): uint8 [B, Tp+Tq]; 0 masks that key for every query.
 *  Query i sees past keys 0..Tp-1 and own keys 0..i. Scale 1/sqrt(HS).
 *  out      [B,Tq,C]: heads concatenated. A query with no visible valid key gets out = 0.
 *  att      [B,NH,Tq,Tp+Tq]: softmax probabilities, saved for backward (0 where masked). */
int le_attention_fwd(float* out, float* att, const float* qkv, const float* kv_past,
                     const uint8_t* key_valid, int B, int Tq, int Tp, int C, int NH,
                     int64_t past_bs, int64_t past_rs);
/* dqkv [B,Tq,3C] += ...; dkv_past (same strides as kv_past, nullable) += ..., apart from
 * dqkv (the backward adds into both at once; an overlap is refused, in every form).
 * key_valid is not needed: att is 0 where a key was masked, and masked keys get no gradient.
 * A fully masked query row (att row all 0) gets and gives no gradient. */
int le_attention_bwd(float* dqkv, float* dkv_past, const float* dout, const float* att,
                     const float* qkv, const float* kv_past, int B, int Tq, int Tp, int C,
                     int NH, int64_t past_bs, int64_t past_rs);

/* Fused softmax + cross-entropy over logits [N,V]. Rows whose target < 0 are ignored; a
 * target >= V is an error (reported before anything is written).
 * losses[N] = -log softmax(logits[n])[target[n]] (0 for ignored rows).
 * If dscale != 0, logits is overwritten with its gradient: s * (softmax - onehot) for
 * valid rows, 0 for ignored rows (s = weight / number of valid targets for a mean), where s is
 * dscale, or, when dscale_at is not NULL, the float in engine memory at dscale_at, read when
 * the op runs (dscale then only says that the gradient is written): a recorded graph then
 * scales each replay by what was uploaded there. */
int le_xent_fwd_bwd(float* logits, float* losses, const int32_t* targets, int N, int V,
                    float dscale, const float* dscale_at);

/* out[n] = argmax_v logits[n,v] (lowest index on ties; NaN never wins unless the whole row
 * is NaN, which gives V-1). */
int le_argmax(int32_t* out, const float* logits, int N, int V);

/* ---- optimiser ------------------------------------------------------------------------ */

/* out[0] = sum_i g[i]^2 (accumulated in double, written as float, with =). n >= 0. */
int le_sumsq(float* out, const float* g, int64_t n);
/* One AdamW step (decoupled weight decay, bias-corrected, step t >= 1) on n parameters.
 * If gnorm_sq is not NULL and max_norm > 0, gradients are first scaled by
 * min(1, max_norm / (sqrt(*gnorm_sq) + 1e-6)), the global-norm clip. g is not modified.
 * The update is PyTorch's torch.optim.AdamW:
 *   p *= 1 - lr*weight_decay;  m += (1-beta1)*(g - m);  v = beta2*v + (1-beta2)*g^2;
 *   p -= lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps).
 * gnorm_sq is engine memory (usually le_sumsq's output, summed over parameter groups). */
int le_adamw(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
             float beta2, float eps, float weight_decay, int t, const float* gnorm_sq,
             float max_norm);

/* ---- appended ------------------------------------------------------------------------ */

/* A one-line JSON object describing what the engine runs on, copied like le_last_error
 * (NUL-terminated, truncated to cap - 1 bytes; returns the full length). CPU:
 * {"backend":"cpu","threads":N}. CUDA, after le_init: {"backend":"cuda","device":NAME,
 * "cublas":PATH,"cc":"9.0","driver":13000,"runtime":13000,"cublasVersion":130000,
 * "cublasLtVersion":130000,"cublasLt":true,"tcAttention":true,"mmaProbe":0,
 * "gemmTuneCandidates":8,"gemmTuneShapes":0,"gemmTuneChanged":0,"gemmTuneHeuristicUs":0.0,
 * "gemmTuneChosenUs":0.0}, where cublasLt says whether the GEMMs run through cublasLtMatmul
 * (biases in its epilogue; LOTUS_CUBLASLT=0 or a library without it: cublasGemmEx),
 * tcAttention whether bf16 attention runs on tensor cores and mmaProbe how many of 128
 * elements le_init's check of the tensor cores' register layout got wrong (-1: not run, with
 * LOTUS_TC_ATTENTION=0; any but 0 turns tcAttention off); tcMaxHead is the largest head size
 * it serves (0 when off), bf16Qkv whether a model keeps its qkv in bf16 storage there (unless
 * LOTUS_BF16_QKV=0), bf16Fch whether a model in bf16 mode keeps its MLP's first projection in
 * bf16 storage (unless LOTUS_BF16_FCH=0), and bf16OutLt and bf16OutRounded how many matmuls
 * into bf16 storage cuBLASLt wrote and how many a rounding pass did. The gemmTune fields: how
 * many of the heuristic's algorithms are timed per GEMM shape (LOTUS_GEMM_TUNE; 1: none timed), the
 * shapes timed so far, those where another than the heuristic's first won, and one call of
 * every timed shape summed, with the heuristic's first and with the one kept, in
 * microseconds. Before le_init:
 * {"backend":"cuda","ready":false}. */
uint64_t le_device_info(char* buf, uint64_t cap);

/* Attention that keeps per-row softmax statistics instead of the probabilities: the same
 * semantics and arguments as le_attention_fwd / le_attention_bwd, with att replaced by
 *  stats    [B,NH,Tq,2] float: row (b,h,i) holds the max m of its scaled visible scores and
 *           1/sum_j exp(s_j - m) (m = -inf and 0 for a query with no visible valid key).
 *           Nullable in the forward (inference: nothing is saved).
 * The backward recomputes p_ij = exp(q_i.k_j * scale - m_i) / sum_i from qkv, the past and
 * key_valid, which must be the forward's (same buffers, unchanged since). B*NH*Tq*2 floats
 * replace B*NH*Tq*(Tp+Tq). It also takes the forward's output
 *  out      [B,Tq,C] float, unchanged since: D_i = sum_j p_ij dp_ij, which the gradient needs,
 *           equals dout_i . out_i, and an engine may form it either way (equal but for
 *           rounding). The CPU engine sums p_ij dp_ij (in double; out is only checked); the
 *           CUDA engine's tensor-core kernels (bf16 mode) take dout_i . out_i, which spares
 *           them a pass over the keys.
 * The CPU engine's out and gradients are bit-identical to le_attention_fwd / _bwd's. */
int le_attention_stats_fwd(float* out, float* stats, const float* qkv, const float* kv_past,
                           const uint8_t* key_valid, int B, int Tq, int Tp, int C, int NH,
                           int64_t past_bs, int64_t past_rs);
int le_attention_stats_bwd(float* dqkv, float* dkv_past, const float* dout, const float* out,
                           const float* stats, const uint8_t* key_valid, const float* qkv,
                           const float* kv_past, int B, int Tq, int Tp, int C, int NH,
                           int64_t past_bs, int64_t past_rs);

/* ---- data-parallel collectives (appended) ---------------------------------------------- */
/* Several processes started by mpirun train one model: each joins the job, the initial
 * parameters are broadcast from rank 0, and after each backward the gradient is summed over
 * the ranks. MPI is loaded with dlopen at le_comm_init (Open MPI's libmpi.so.40, or the file
 * LOTUS_LIBMPI names), so no library needs MPI to build or to run one process. The CPU engine
 * reduces through MPI; the CUDA engine through NCCL (libnccl.so.2, or LOTUS_NCCL, dlopen'd),
 * on the device of le_init, its communicator's unique id broadcast from rank 0 over MPI.
 *
 * le_comm_init joins the job (MPI_Init unless the process already did) and is idempotent. Its
 * timeout_s > 0 arms a watchdog: a collective that waits longer than that for the other ranks
 * prints a message naming the rank and the collective and ends the process with exit status
 * 75, so that mpirun ends the job instead of hanging (<= 0: no limit; a later call changes
 * it). Every collective must be called by every rank, in the same order. */
int le_comm_init(double timeout_s);
int le_comm_rank(void);   /* this process's rank; -1 before le_comm_init */
int le_comm_size(void);   /* ranks in the job; 0 before le_comm_init */
/* buf [n] fp32 engine memory: replaced by its sum over all ranks, with the same bits on every
 * rank. */
int le_comm_allreduce_sum(float* buf, int64_t n);
/* bytes of engine memory from rank root to every other rank. */
int le_comm_broadcast(void* buf, uint64_t bytes, int root);
/* Returns once every rank has called it (CUDA: after this rank's queued work is done). */
int le_comm_barrier(void);
/* Leaves the job (CUDA: the NCCL communicator is destroyed first; then MPI_Finalize). Every
 * rank calls it once, last; no collective may follow in this process. No-op if never joined. */
int le_comm_finalize(void);

/* ---- overlapped gradient all-reduce (appended) ----------------------------------------- */
/* For reducing a gradient piece by piece while the backward still runs. le_comm_allreduce_start
 * begins the in-place sum over the ranks of buf [n] fp32 engine memory, as
 * le_comm_allreduce_sum would compute it, after the work already issued that writes buf, and
 * returns without waiting for the other ranks. Until le_comm_wait returns, nothing may read or
 * write buf. Several may be in flight; every rank must start the same ones in the same order.
 * CPU: MPI_Iallreduce on host memory (a library without it: the blocking all-reduce, at once).
 * CUDA: ncclAllReduce on a second stream that first waits (an event) for the work issued so
 * far on the engine's stream; the engine's stream goes on with the backward meanwhile.
 * le_comm_progress lets the started sums advance (Open MPI advances a nonblocking collective
 * only inside MPI calls: call it between ops); it never blocks (CUDA: no-op).
 * le_comm_wait waits, under the watchdog, for every started sum: afterwards the buffers hold
 * the sums (CUDA: the engine's stream is ordered after them, and the host has waited for
 * them). Every other collective, and le_comm_finalize, waits for the started sums first. */
int le_comm_allreduce_start(float* buf, int64_t n);
int le_comm_progress(void);
int le_comm_wait(void);

/* ---- Llama-family ops ----------------------------------------------------------------- */

/* RMSNorm over the last dim: out = inp * rstd * w, rstd = 1/sqrt(mean(inp^2) + eps) (the mean
 * of squares in double), eps > 0 (the model's rms_norm_eps). rstd [N] is saved for backward;
 * nullable in the forward. Backward: dinp += ..., dw += sum_n dout * inp * rstd; dinp and dw
 * are each nullable. */
int le_rmsnorm_fwd(float* out, float* rstd, const float* inp, const float* w, int N, int C,
                   float eps);
int le_rmsnorm_bwd(float* dinp, float* dw, const float* dout, const float* inp, const float* w,
                   const float* rstd, int N, int C);
/* Fused residual + RMSNorm: resid = a + b; out = RMSNorm(resid), the same bits as le_add then
 * le_rmsnorm_fwd, in one pass. resid may alias a or b. Backward is le_rmsnorm_bwd into
 * dresid, whose gradient the caller passes on to both a and b. Optional: a library built
 * before it lacks the symbol, and the binding then runs le_add and le_rmsnorm_fwd. */
int le_residual_rmsnorm_fwd(float* resid, float* out, float* rstd, const float* a, const float* b,
                            const float* w, int N, int C, float eps);

/* Rotary position embedding, IN PLACE, on the first nh heads of HS (even) elements of each of
 * N rows (row n starts at x + n*rs, rs >= nh*HS). For i < HS/2, with the angle
 * a = (float)pos[n] * inv_freq[i] (an fp32 product), c = cos(a), s = sin(a):
 *   x1 = x[i], x2 = x[i + HS/2];  x[i] = x1 c - x2 s;  x[i + HS/2] = x2 c + x1 s
 * (the Hugging Face Llama's rotate-half convention). inverse != 0 rotates by -a, which is the
 * backward: applied in place to a gradient it gives the gradient before the rotation (written,
 * not accumulated). pos [N] int32, each >= 0; inv_freq [HS/2] fp32 (frequency scaling, such as
 * Llama 3's, is the caller's). A qkv buffer rotates its queries and keys in one call
 * (nh = NH + NKV: the key heads follow the query heads). */
int le_rope(float* x, const int32_t* pos, const float* inv_freq, int N, int nh, int HS,
            int64_t rs, int inverse);

/* SwiGLU: inp [N, 2I] holds the gate projection in columns 0..I and the up projection in
 * I..2I; out [N, I] = silu(gate) * up, silu(g) = g / (1 + exp(-g)). N, I > 0.
 * Backward: dinp [N, 2I] += the gradients of gate and up (accumulate == 0: dinp = them,
 * dinp not read). */
int le_swiglu_fwd(float* out, const float* inp, int N, int I);
int le_swiglu_bwd(float* dinp, const float* inp, const float* dout, int N, int I,
                  int accumulate);

/* Grouped-query attention: le_attention_fwd / le_attention_bwd with NKV key/value heads
 * (NH % NKV == 0; query head h reads key/value head h / (NH / NKV)). With HS = C/NH and
 * Ckv = NKV*HS, qkv is [B, Tq, C + 2Ckv]: queries at column 0, keys at C, values at C + Ckv.
 * A past key row is as in le_attention_fwd, its values Ckv elements later; past_rs >= 2Ckv
 * (C + 2Ckv for a qkv buffer, 2Ckv for a [B, Tmax, 2Ckv] cache). att is [B, NH, Tq, Tp+Tq].
 * With NKV == NH the results are exactly le_attention_fwd's and le_attention_bwd's. */
int le_attention_gqa_fwd(float* out, float* att, const float* qkv, const float* kv_past,
                         const uint8_t* key_valid, int B, int Tq, int Tp, int C, int NH, int NKV,
                         int64_t past_bs, int64_t past_rs);
int le_attention_gqa_bwd(float* dqkv, float* dkv_past, const float* dout, const float* att,
                         const float* qkv, const float* kv_past, int B, int Tq, int Tp, int C,
                         int NH, int NKV, int64_t past_bs, int64_t past_rs);

/* Grouped-query attention with per-row softmax statistics: le_attention_stats_fwd /
 * le_attention_stats_bwd with le_attention_gqa_fwd's NKV and qkv layout (stats [B,NH,Tq,2] per
 * query head). With NKV == NH the results are exactly le_attention_stats_fwd's and _bwd's; the
 * CPU engine's out and gradients are bit-identical to le_attention_gqa_fwd / _bwd's. */
int le_attention_gqa_stats_fwd(float* out, float* stats, const float* qkv, const float* kv_past,
                               const uint8_t* key_valid, int B, int Tq, int Tp, int C, int NH,
                               int NKV, int64_t past_bs, int64_t past_rs);
int le_attention_gqa_stats_bwd(float* dqkv, float* dkv_past, const float* dout,
                               const float* out, const float* stats, const uint8_t* key_valid,
                               const float* qkv, const float* kv_past, int B, int Tq, int Tp,
                               int C, int NH, int NKV, int64_t past_bs, int64_t past_rs);

/* Declares that [p, p + n) floats (inside one le_alloc block) hold weights that the matmuls
 * read as their w operand. In bf16 mode (le_set_precision(2)) the CUDA engine then keeps a bf16
 * copy of the range, so a matmul reads its weight without rounding it again at every call:
 * the copy is made at the first matmul that reads the range, le_adamw updates it in the same
 * kernel as the fp32 weights, and any other write into the range (le_upload, le_zero, le_copy,
 * le_copy_rows, le_add, le_scale, le_comm_broadcast, le_comm_allreduce_*) has it rebuilt at the
 * next matmul. No other op may write into a declared range. Results are bit-identical to
 * rounding at every call. The copy (2n bytes) is the engine's, not counted by
 * le_bytes_in_use, and goes with the block (le_free). n = 0 forgets the range that starts at
 * p. At most 8 ranges; ranges must not overlap. The CPU engine checks the span and keeps
 * nothing (it multiplies in fp32). */
int le_keep_bf16(const float* p, int64_t n);

/* Graphs: record a sequence of ops once and replay it with one call. Between le_graph_begin and
 * le_graph_end(slot) the CUDA engine records the ops it is called with instead of running them,
 * each with its arguments as given (buffers, shapes, scalars); le_graph_end stores the recording
 * in slot 0..511 (replacing what was there; slot < 0 discards it) and le_graph_launch(slot) runs
 * it, reading what the buffers hold then. Host checks run at the recording. While recording,
 * whatever would wait for the device, touch host memory or allocate fails at once with a message
 * (le_upload, le_download, le_sync, le_alloc, le_free, le_set_precision, le_keep_bf16, the
 * collectives, a scratch buffer that would have to grow, an index array whose range the engine
 * does not know yet), and the recording then ends with an error at le_graph_end: run the ops
 * once before recording them. Before each replay, le_graph_launch checks again every index array
 * the recording read (ids, positions, targets: their contents may have changed since) against
 * the bound it was recorded for, without a wait when the array was uploaded since, and refuses
 * the replay with a message if one is out of range. A graph is out of date once device memory it
 * may read has been freed since its recording (a scratch buffer that grew for a larger op, a
 * dropped bf16 weight copy): le_graph_launch then runs nothing and returns 2 (with a message);
 * record it again. Recording runs nothing and leaves what the
 * engine knows of the buffers (index ranges, bf16 weight copies) as it was; each replay applies
 * what its ops write there. A graph is refused at another precision
 * mode than it was recorded at, and is invalid once a buffer it uses is freed. le_graph_free(slot) frees one graph (slot < 0:
 * all). The CPU engine runs every op when it is called: le_graph_begin, le_graph_end and
 * le_graph_launch fail there with a message, and le_graph_free does nothing. */
int le_graph_begin(void);
int le_graph_end(int slot);
int le_graph_launch(int slot);
int le_graph_free(int slot);

/* Timing marks, for profiling on the device's own clock. le_mark(i) records mark i
 * (0 <= i < 65536) once the work issued before it has run: the CUDA engine records an event on
 * its stream (between le_graph_begin and le_graph_end the recording holds it, and each replay
 * records it again), the CPU engine, whose ops have run when they return, reads its clock. A
 * mark queues no work and leaves what the ops see as it was (a le_operand_only hint still
 * applies to the next op). le_mark_elapsed(a, b, ms) waits until mark b has been reached and
 * writes the milliseconds from mark a to mark b, as last recorded, to *ms; it fails, naming
 * the mark, when one was never reached (never recorded, or recorded only into a graph not yet
 * launched), and while a graph is being recorded. Optional: a library built before them lacks
 * both symbols, and the binding then reports that it cannot time on the device. */
int le_mark(int i);
int le_mark_elapsed(int a, int b, float* ms);

/* bf16 storage. le_alloc_bf16(n) allocates a zero-filled block of n bf16 values (2n bytes, what
 * le_bytes_in_use counts), NULL on failure. Ops index a tensor that lies in such a block by bf16
 * elements: element i of a tensor at p is the 2 bytes at p + 2i, and strides count elements as
 * ever. Only these arguments may lie in one:
 *  - le_matmul_fwd's out: each value is what an fp32 out would hold (the sum plus the bias),
 *    rounded to the nearest bf16, ties to even;
 *  - qkv and kv_past of le_attention_stats_fwd / _bwd and le_attention_gqa_stats_fwd / _bwd,
 *    both bf16 or both fp32 (when Tp > 0): the values are read as stored, and the results are
 *    those of fp32 buffers holding the same values; dqkv, dkv_past, out and dout stay fp32;
 *  - inp of le_gelu_fwd and le_gelu_bwd: read as stored, the results those of an fp32 inp
 *    holding the same values;
 *  - le_copy_rows's dst and src, both bf16, with accumulate 0;
 *  - the byte-wise le_zero, le_copy, le_upload, le_download, le_comm_broadcast and le_free.
 * Any other argument in one fails, naming it. In bf16 mode the CUDA engine's tensor-core
 * attention rounds fp32 qkv to bf16 as it stages it, so a qkv stored in bf16 gives it the same
 * operands from half the memory and half the bytes read, and spares the backward's rounding
 * pass. A GELU input kept in bf16 (the MLP's first projection) is what bf16 autocast keeps:
 * GELU then reads the sums rounded, as the reference's bf16 linear layer writes them.
 * Optional: a library built before it lacks the symbol. */
void* le_alloc_bf16(uint64_t n);

#ifdef __cplusplus
}
#endif
#endif /* LOTUS_ENGINE_H */
