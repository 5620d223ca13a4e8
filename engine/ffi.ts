/**
 * The TypeScript binding of the native engine (engine/lotus_engine.h), loaded with
 * `Deno.dlopen`. Every call is synchronous (CUDA state is per OS thread, and nonblocking FFI
 * calls hop between threads), checks the status code and throws {@linkcode EngineError}
 * with the engine's message. Methods allocate nothing and create no closures, so a call
 * costs little more than the FFI transition itself (see bench/engine_ops_bench.ts).
 *
 * Conventions (see docs/engine.md): tensors are engine memory from {@linkcode Engine.alloc},
 * row-major fp32 (int32 ids/positions/targets, uint8 masks); sizes are element counts, except
 * where an argument is named `bytes`; every backward op accumulates (+=) into its gradients.
 *
 * @example
 * ```ts
 * import { openEngine } from "./ffi.ts";
 * const eng = openEngine({ quiet: true });
 * const x = eng.alloc(4 * 4);
 * eng.upload(x, new Float32Array([1, 2, 3, 4]));
 * eng.scale(x, 2, 4);
 * const y = new Float32Array(4);
 * eng.download(y, x); // [2, 4, 6, 8]
 * eng.free(x);
 * eng.close();
 * ```
 *
 * @module
 */
import { buildEngine } from "./build.ts";
import type { BackendName } from "./types.ts";
import { probeCuda } from "./cuda_probe.ts";

/**
 * An address in engine memory (host memory for the CPU engine, device memory for CUDA), as
 * an integer; null is NULL. Addresses are plain numbers rather than Deno pointer objects, so
 * that arithmetic on them needs no FFI permission beyond loading the engine's own library.
 */
export type Ptr = bigint | null;

/** The C ABI version this binding speaks (LE_ABI_VERSION in lotus_engine.h). */
export const LE_ABI_VERSION = 14;

/** Graph slots of the engine (le_graph_end). */
const GRAPH_SLOTS = 512;

/** Timing marks of the engine (le_mark): indices 0 up to this. */
export const MARKS = 65536;

/** A failed engine call. The message is le_last_error(), which starts with the C op name. */
export class EngineError extends Error {
  /** The C function that failed, for example "le_matmul_fwd". */
  readonly op: string;
  /** `message` is prefixed with `op` unless it already starts with it. */
  constructor(op: string, message: string) {
    super(message.startsWith(`${op}:`) ? message : `${op}: ${message || "failed"}`);
    this.name = "EngineError";
    this.op = op;
  }
}

/**
 * How matmuls compute (le_set_precision): "fp32" (mode 0), "tf32" (mode 1: TF32 tensor
 * cores) or "bf16" (mode 2: bf16 operands, fp32 accumulation). Storage, weights, optimiser
 * state and every other op stay fp32 in all three. The CPU engine supports only "fp32".
 */
export type Precision = "fp32" | "tf32" | "bf16";

/** The le_set_precision mode of each {@linkcode Precision}. */
export const PRECISION_MODES: Record<Precision, 0 | 1 | 2> = { fp32: 0, tf32: 1, bf16: 2 };

/**
 * Every {@linkcode Precision}, in the order of their modes: the keys of
 * {@linkcode PRECISION_MODES}, the one list that option checks, flags and benches take.
 */
export const PRECISIONS: readonly Precision[] = Object.keys(PRECISION_MODES) as Precision[];

/** {@linkcode PRECISIONS} in words for messages: `fp32, tf32 or bf16`. */
export const PRECISIONS_TEXT: string = `${PRECISIONS.slice(0, -1).join(", ")} or ${
  PRECISIONS[PRECISIONS.length - 1]
}`;

/** Options of {@linkcode openEngine}. */
export interface EngineOptions {
  /** "cpu" (default) or "cuda". */
  backend?: Exclude<BackendName, "auto">;
  /**
   * CPU: OpenMP threads, a whole number (default, and 0: all cores, or OMP_NUM_THREADS); a
   * fraction is a RangeError.
   */
  threads?: number;
  /** CUDA: device ordinal (default 0). */
  device?: number;
  /** Matmul precision (default "fp32"; the CPU engine has only "fp32"). */
  precision?: Precision;
  /** A prebuilt library to load instead of building one with buildEngine. */
  libPath?: string;
  /**
   * Build quietly, and print no note: without `log`, the engine's notes (the CUDA engine's,
   * when its tensor-core probe fails) then go nowhere.
   */
  quiet?: boolean;
  /** Where the engine's notes go (default: stderr, unless `quiet`). */
  log?: (line: string) => void;
}

const P = "usize";
const SYMBOLS = {
  le_abi_version: { parameters: [], result: "i32" },
  le_backend: { parameters: [], result: "i32" },
  le_last_error: { parameters: ["buffer", "u64"], result: "u64" },
  le_device_info: { parameters: ["buffer", "u64"], result: "u64", optional: true },
  le_init: { parameters: ["i32"], result: "i32" },
  le_set_num_threads: { parameters: ["i32"], result: "i32" },
  le_set_precision: { parameters: ["i32"], result: "i32" },
  le_alloc: { parameters: ["u64"], result: P },
  // Optional: a library without it keeps every buffer in fp32 (storesBf16 is false).
  le_alloc_bf16: { parameters: ["u64"], result: P, optional: true },
  le_free: { parameters: [P], result: "i32" },
  le_bytes_in_use: { parameters: [], result: "u64" },
  le_upload: { parameters: [P, "buffer", "u64"], result: "i32" },
  le_download: { parameters: ["buffer", P, "u64"], result: "i32" },
  le_zero: { parameters: [P, "u64"], result: "i32" },
  le_copy: { parameters: [P, P, "u64"], result: "i32" },
  le_sync: { parameters: [], result: "i32" },
  le_copy_rows: {
    parameters: [P, P, "i32", "i32", "i32", "i64", "i64", "i64", "i64", "i32"],
    result: "i32",
  },
  le_add: { parameters: [P, P, P, "i64"], result: "i32" },
  le_scale: { parameters: [P, "f32", "i64"], result: "i32" },
  le_embed_fwd: { parameters: [P, P, P, P, P, "i32", "i32"], result: "i32" },
  le_embed_bwd: { parameters: [P, P, P, P, P, "i32", "i32"], result: "i32" },
  le_layernorm_fwd: { parameters: [P, P, P, P, P, P, "i32", "i32"], result: "i32" },
  le_layernorm_bwd: { parameters: [P, P, P, P, P, P, P, P, "i32", "i32"], result: "i32" },
  le_residual_layernorm_fwd: {
    parameters: [P, P, P, P, P, P, P, P, "i32", "i32"],
    result: "i32",
  },
  le_matmul_fwd: { parameters: [P, P, P, P, "i32", "i32", "i32"], result: "i32" },
  le_matmul_bwd: { parameters: [P, P, P, P, P, P, "i32", "i32", "i32", "i32"], result: "i32" },
  le_gelu_fwd: { parameters: [P, P, "i64"], result: "i32" },
  le_gelu_bwd: { parameters: [P, P, P, "i64", "i32"], result: "i32" },
  // Optional: a library without it writes every output in fp32, the same results.
  le_operand_only: { parameters: [P], result: "i32", optional: true },
  le_dropout_fwd: { parameters: [P, P, "i64", "f32", "u64", P], result: "i32" },
  le_dropout_bwd: { parameters: [P, P, P, "i64", "f32"], result: "i32" },
  le_attention_fwd: {
    parameters: [P, P, P, P, P, "i32", "i32", "i32", "i32", "i32", "i64", "i64"],
    result: "i32",
  },
  le_attention_bwd: {
    parameters: [P, P, P, P, P, P, "i32", "i32", "i32", "i32", "i32", "i64", "i64"],
    result: "i32",
  },
  le_attention_stats_fwd: {
    parameters: [P, P, P, P, P, "i32", "i32", "i32", "i32", "i32", "i64", "i64"],
    result: "i32",
  },
  le_attention_stats_bwd: {
    parameters: [P, P, P, P, P, P, P, P, "i32", "i32", "i32", "i32", "i32", "i64", "i64"],
    result: "i32",
  },
  le_xent_fwd_bwd: { parameters: [P, P, P, "i32", "i32", "f32", P], result: "i32" },
  le_argmax: { parameters: [P, P, "i32", "i32"], result: "i32" },
  le_sumsq: { parameters: [P, P, "i64"], result: "i32" },
  le_adamw: {
    parameters: [P, P, P, P, "i64", "f32", "f32", "f32", "f32", "f32", "i32", P, "f32"],
    result: "i32",
  },
  le_keep_bf16: { parameters: [P, "i64"], result: "i32" },
  le_graph_begin: { parameters: [], result: "i32" },
  le_graph_end: { parameters: ["i32"], result: "i32" },
  le_graph_launch: { parameters: ["i32"], result: "i32" },
  le_graph_free: { parameters: ["i32"], result: "i32" },
  // Optional: without them the binding cannot time ops on the device (hasMarks is false).
  le_mark: { parameters: ["i32"], result: "i32", optional: true },
  le_mark_elapsed: { parameters: ["i32", "i32", "buffer"], result: "i32", optional: true },
  // Appended: data-parallel collectives (optional, so that a library without them still
  // loads; Engine.commInit says when they are missing).
  le_comm_init: { parameters: ["f64"], result: "i32", optional: true },
  le_comm_rank: { parameters: [], result: "i32", optional: true },
  le_comm_size: { parameters: [], result: "i32", optional: true },
  le_comm_allreduce_sum: { parameters: [P, "i64"], result: "i32", optional: true },
  le_comm_broadcast: { parameters: [P, "u64", "i32"], result: "i32", optional: true },
  le_comm_barrier: { parameters: [], result: "i32", optional: true },
  le_comm_finalize: { parameters: [], result: "i32", optional: true },
  le_comm_allreduce_start: { parameters: [P, "i64"], result: "i32", optional: true },
  le_comm_progress: { parameters: [], result: "i32", optional: true },
  le_comm_wait: { parameters: [], result: "i32", optional: true },
  le_rmsnorm_fwd: { parameters: [P, P, P, P, "i32", "i32", "f32"], result: "i32" },
  le_rmsnorm_bwd: { parameters: [P, P, P, P, P, P, "i32", "i32"], result: "i32" },
  le_rope: { parameters: [P, P, P, "i32", "i32", "i32", "i64", "i32"], result: "i32" },
  le_swiglu_fwd: { parameters: [P, P, "i32", "i32"], result: "i32" },
  le_swiglu_bwd: { parameters: [P, P, P, "i32", "i32", "i32"], result: "i32" },
  le_attention_gqa_fwd: {
    parameters: [P, P, P, P, P, "i32", "i32", "i32", "i32", "i32", "i32", "i64", "i64"],
    result: "i32",
  },
  le_attention_gqa_bwd: {
    parameters: [P, P, P, P, P, P, "i32", "i32", "i32", "i32", "i32", "i32", "i64", "i64"],
    result: "i32",
  },
  le_attention_gqa_stats_fwd: {
    parameters: [P, P, P, P, P, "i32", "i32", "i32", "i32", "i32", "i32", "i64", "i64"],
    result: "i32",
  },
  le_attention_gqa_stats_bwd: {
    parameters: [P, P, P, P, P, P, P, P, "i32", "i32", "i32", "i32", "i32", "i32", "i64", "i64"],
    result: "i32",
  },
  // Optional: without it the binding runs le_add, then le_rmsnorm_fwd (the same bits).
  le_residual_rmsnorm_fwd: {
    parameters: [P, P, P, P, P, P, "i32", "i32", "f32"],
    result: "i32",
    optional: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

type Symbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

// 64-bit integer arguments are passed as BigInt: Deno then keeps the call on V8's fast path
// (about 10 ns). Passing a number also works but takes the slow path, about 100 ns more per
// call (measured in bench/engine_ops_bench.ts). BigInt() of a small integer costs ~4 ns.
const I = BigInt;

/** An address as the C functions take it: NULL is 0. */
function addr(p: Ptr): bigint {
  return p ?? 0n;
}

/** The engine's last error message (le_last_error copies it into a buffer we own). */
function lastError(s: Symbols): string {
  let buf = new Uint8Array(512);
  const len = Number(s.le_last_error(buf, I(buf.length)));
  if (len >= buf.length) {
    buf = new Uint8Array(len + 1);
    s.le_last_error(buf, I(buf.length));
  }
  return new TextDecoder().decode(buf.subarray(0, Math.min(len, buf.length - 1)));
}

/** Stand-ins installed by close(): a call on a closed engine throws instead of jumping into
 * an unloaded library, at no cost to the open engine's calls. */
function closedSymbols(): Symbols {
  const stubs: Record<string, () => never> = {};
  for (const name of Object.keys(SYMBOLS)) {
    stubs[name] = () => {
      throw new EngineError(name, `${name}: the engine is closed; open a new one with openEngine`);
    };
  }
  return stubs as unknown as Symbols;
}

/**
 * An open engine library. Create it with {@linkcode openEngine}. Argument orders follow the
 * C functions of lotus_engine.h, whose comments give each op's exact semantics.
 *
 * @example
 * ```ts
 * import { openEngine } from "./ffi.ts";
 * const eng = openEngine({ threads: 1, quiet: true });
 * const p = eng.alloc(4 * 4); // bytes: four floats
 * eng.upload(p, Float32Array.of(1, 2, 3, 4));
 * const out = new Float32Array(4);
 * eng.download(out, p);
 * console.assert(out[3] === 4);
 * eng.free(p);
 * eng.close();
 * ```
 */
export class Engine {
  /** "cpu" or "cuda", as reported by the library. */
  readonly backend: Exclude<BackendName, "auto">;
  /** The loaded library file. */
  readonly libPath: string;
  #lib: Deno.DynamicLibrary<typeof SYMBOLS> | null;
  #s: Symbols;

  /** Use {@linkcode openEngine}; this takes an already opened library. */
  constructor(lib: Deno.DynamicLibrary<typeof SYMBOLS>, libPath: string) {
    this.#lib = lib;
    this.#s = lib.symbols;
    this.libPath = libPath;
    const b = lib.symbols.le_backend();
    if (b !== 0 && b !== 1) {
      throw new EngineError("le_backend", `le_backend: unknown backend ${b} in ${libPath}`);
    }
    this.backend = b === 0 ? "cpu" : "cuda";
  }

  #graphSlots = new Set<number>();
  #ms = new Float32Array(1); // le_mark_elapsed's result
  #precision: 0 | 1 | 2 = 0;

  #fail(op: string): never {
    throw new EngineError(op, lastError(this.#s));
  }

  /**
   * What the engine runs on, as le_device_info reports it: for the CUDA engine the device,
   * compute capability, driver and runtime versions and the cuBLAS file and version it
   * loaded; for the CPU engine its thread count. `{}` when the library predates the call.
   */
  deviceInfo(): Record<string, string | number | boolean> {
    const fn = this.#s.le_device_info;
    if (!fn) return {};
    let buf = new Uint8Array(1024);
    const len = Number(fn(buf, I(buf.length)));
    if (len >= buf.length) {
      buf = new Uint8Array(len + 1);
      fn(buf, I(buf.length));
    }
    return JSON.parse(new TextDecoder().decode(buf.subarray(0, len)));
  }

  /** Unloads the library. Free engine memory first: it cannot be freed afterwards. Later
   * calls throw EngineError. */
  close(): void {
    if (this.#lib === null) return;
    this.#lib.close();
    this.#lib = null;
    this.#s = closedSymbols();
  }

  /** {@linkcode Engine.close}, for `using eng = openEngine(...)`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * CPU: OpenMP threads for later ops (n <= 0: the default). CUDA: no-op.
   *
   * @throws {RangeError} when `n` is not a whole number.
   */
  setNumThreads(n: number): void {
    if (!Number.isInteger(n)) {
      throw new RangeError(`threads = ${n}: must be a whole number (0: all cores)`);
    }
    if (this.#s.le_set_num_threads(n) !== 0) this.#fail("le_set_num_threads");
  }

  /** 0 = fp32, 1 = TF32 matmuls, 2 = bf16 matmuls (fp32 storage). CPU: only 0. */
  setPrecision(mode: 0 | 1 | 2): void {
    if (this.#s.le_set_precision(mode) !== 0) this.#fail("le_set_precision");
    this.#precision = mode;
  }

  /** The precision mode of the matmuls ({@linkcode Engine.setPrecision}; 0 until set). */
  get precision(): 0 | 1 | 2 {
    return this.#precision;
  }

  /** Zero-filled engine memory of `bytes` bytes. Throws EngineError when it cannot. */
  alloc(bytes: number): Ptr {
    const p = BigInt(this.#s.le_alloc(I(bytes)));
    if (p === 0n) this.#fail("le_alloc");
    return p;
  }

  /** Whether the library has bf16 storage ({@linkcode Engine.allocBf16}). */
  get storesBf16(): boolean {
    return !!this.#s.le_alloc_bf16;
  }

  /**
   * A zero-filled block of `n` bf16 values (2n bytes): storage that only some arguments accept
   * (the contract: le_alloc_bf16 in lotus_engine.h). Throws EngineError when it cannot, or
   * when the library lacks it ({@linkcode Engine.storesBf16}).
   */
  allocBf16(n: number): Ptr {
    const f = this.#s.le_alloc_bf16;
    if (!f) {
      throw new EngineError(
        "le_alloc_bf16",
        `le_alloc_bf16: ${this.libPath} has no bf16 storage; rebuild it with ` +
          `deno task build-engine --force`,
      );
    }
    const p = BigInt(f(I(n)));
    if (p === 0n) this.#fail("le_alloc_bf16");
    return p;
  }

  /**
   * Whether a stack of heads of `headSize` run on this engine keeps each layer's qkv in bf16
   * storage: the CUDA engine in bf16 mode with its tensor-core attention for that head size
   * (le_device_info's tcMaxHead), which rounds qkv to bf16 as it stages it (the same operands
   * from half the bytes), unless `LOTUS_BF16_QKV=0` (le_device_info's bf16Qkv).
   */
  keepsQkvBf16(headSize: number): boolean {
    if (!this.storesBf16 || this.#precision !== 2) return false;
    const d = this.deviceInfo();
    return d.bf16Qkv === true && headSize <= Number(d.tcMaxHead ?? 0);
  }

  /**
   * Whether a GPT-2 stack run on this engine keeps each layer's MLP first projection (GELU's
   * input) in bf16 storage: the CUDA engine in bf16 mode, unless `LOTUS_BF16_FCH=0`
   * (le_device_info's bf16Fch). GELU then reads the sums rounded to bf16, as bf16 autocast's
   * linear layer writes them: not the bits of an fp32 input, but within bf16's rounding of
   * them, at half the memory and bytes moved.
   */
  keepsFchBf16(): boolean {
    return this.storesBf16 && this.#precision === 2 && this.deviceInfo().bf16Fch === true;
  }

  /** Frees memory from alloc (null: no-op). */
  free(p: Ptr): void {
    if (this.#s.le_free(addr(p)) !== 0) this.#fail("le_free");
  }

  /** Bytes currently allocated through alloc. */
  bytesInUse(): number {
    return Number(this.#s.le_bytes_in_use());
  }

  /** Copies src.byteLength bytes from host memory to engine memory at dst. Any view works,
   * including a subarray with a non-zero byteOffset (FFI "buffer" arguments honour it). */
  upload(dst: Ptr, src: ArrayBufferView): void {
    if (this.#s.le_upload(addr(dst), src, I(src.byteLength)) !== 0) this.#fail("le_upload");
  }

  /** Copies dst.byteLength bytes from engine memory at src into dst. */
  download(dst: ArrayBufferView, src: Ptr): void {
    if (this.#s.le_download(dst, addr(src), I(dst.byteLength)) !== 0) this.#fail("le_download");
  }

  /** Zeroes `bytes` bytes of engine memory. */
  zero(dst: Ptr, bytes: number): void {
    if (this.#s.le_zero(addr(dst), I(bytes)) !== 0) this.#fail("le_zero");
  }

  /** Copies `bytes` bytes between engine buffers (they may overlap). */
  copy(dst: Ptr, src: Ptr, bytes: number): void {
    if (this.#s.le_copy(addr(dst), addr(src), I(bytes)) !== 0) this.#fail("le_copy");
  }

  /** Waits for queued work (CUDA); a no-op on the CPU. */
  sync(): void {
    if (this.#s.le_sync() !== 0) this.#fail("le_sync");
  }

  /**
   * `p` moved by `bytes` BYTES (not elements). Pure pointer arithmetic, no FFI call; works
   * for any address, including device addresses that TypeScript never dereferences.
   */
  offset(p: Ptr, bytes: number): Ptr {
    const q = (p ?? 0n) + BigInt(bytes);
    return q === 0n ? null : q;
  }

  /**
   * Strided copy of rows (le_copy_rows); strides in elements. fp32 rows, or bf16 storage
   * between two bf16 blocks ({@linkcode Engine.allocBf16}: not accumulated, disjoint rows).
   */
  copyRows(
    dst: Ptr,
    src: Ptr,
    nb: number,
    rows: number,
    cols: number,
    dstBs: number,
    dstRs: number,
    srcBs: number,
    srcRs: number,
    accumulate: boolean,
  ): void {
    if (
      this.#s.le_copy_rows(
        addr(dst),
        addr(src),
        nb,
        rows,
        cols,
        I(dstBs),
        I(dstRs),
        I(srcBs),
        I(srcRs),
        accumulate ? 1 : 0,
      ) !== 0
    ) this.#fail("le_copy_rows");
  }

  /** out = a + b over n floats (out may alias a or b). */
  add(out: Ptr, a: Ptr, b: Ptr, n: number): void {
    if (this.#s.le_add(addr(out), addr(a), addr(b), I(n)) !== 0) this.#fail("le_add");
  }

  /** x *= s over n floats. */
  scale(x: Ptr, s: number, n: number): void {
    if (this.#s.le_scale(addr(x), s, I(n)) !== 0) this.#fail("le_scale");
  }

  /** out[N,C] = wte[ids] + wpe[pos] (ids < 0: no token row; wpe null: no position row). */
  embedFwd(out: Ptr, ids: Ptr, pos: Ptr, wte: Ptr, wpe: Ptr, N: number, C: number): void {
    if (this.#s.le_embed_fwd(addr(out), addr(ids), addr(pos), addr(wte), addr(wpe), N, C) !== 0) {
      this.#fail("le_embed_fwd");
    }
  }

  /** dwte[ids] += dout, dwpe[pos] += dout (either gradient nullable). */
  embedBwd(dwte: Ptr, dwpe: Ptr, dout: Ptr, ids: Ptr, pos: Ptr, N: number, C: number): void {
    if (
      this.#s.le_embed_bwd(addr(dwte), addr(dwpe), addr(dout), addr(ids), addr(pos), N, C) !== 0
    ) {
      this.#fail("le_embed_bwd");
    }
  }

  /** LayerNorm over C (eps 1e-5); saves mean and rstd [N]. */
  layernormFwd(
    out: Ptr,
    mean: Ptr,
    rstd: Ptr,
    inp: Ptr,
    w: Ptr,
    b: Ptr,
    N: number,
    C: number,
  ): void {
    if (
      this.#s.le_layernorm_fwd(
        addr(out),
        addr(mean),
        addr(rstd),
        addr(inp),
        addr(w),
        addr(b),
        N,
        C,
      ) !== 0
    ) {
      this.#fail("le_layernorm_fwd");
    }
  }

  /** LayerNorm backward: dinp, dw, db += ... (each nullable). */
  layernormBwd(
    dinp: Ptr,
    dw: Ptr,
    db: Ptr,
    dout: Ptr,
    inp: Ptr,
    w: Ptr,
    mean: Ptr,
    rstd: Ptr,
    N: number,
    C: number,
  ): void {
    if (
      this.#s.le_layernorm_bwd(
        addr(dinp),
        addr(dw),
        addr(db),
        addr(dout),
        addr(inp),
        addr(w),
        addr(mean),
        addr(rstd),
        N,
        C,
      ) !== 0
    ) {
      this.#fail("le_layernorm_bwd");
    }
  }

  /** resid = a + b; out = LayerNorm(resid). */
  residualLayernormFwd(
    resid: Ptr,
    out: Ptr,
    mean: Ptr,
    rstd: Ptr,
    a: Ptr,
    b: Ptr,
    w: Ptr,
    bias: Ptr,
    N: number,
    C: number,
  ): void {
    if (
      this.#s.le_residual_layernorm_fwd(
        addr(resid),
        addr(out),
        addr(mean),
        addr(rstd),
        addr(a),
        addr(b),
        addr(w),
        addr(bias),
        N,
        C,
      ) !== 0
    ) {
      this.#fail("le_residual_layernorm_fwd");
    }
  }

  /** out[N,Cout] = inp[N,Cin] W[Cout,Cin]^T + bias (bias nullable). */
  matmulFwd(out: Ptr, inp: Ptr, w: Ptr, bias: Ptr, N: number, Cin: number, Cout: number): void {
    if (this.#s.le_matmul_fwd(addr(out), addr(inp), addr(w), addr(bias), N, Cin, Cout) !== 0) {
      this.#fail("le_matmul_fwd");
    }
  }

  /**
   * dinp += dout W; dw += dout^T inp; dbias += sum dout (each nullable). With `accumulate`
   * false, dinp = dout W: dinp is not read, so it needs no zero-fill first (the parameter
   * gradients still accumulate).
   */
  matmulBwd(
    dinp: Ptr,
    dw: Ptr,
    dbias: Ptr,
    dout: Ptr,
    inp: Ptr,
    w: Ptr,
    N: number,
    Cin: number,
    Cout: number,
    accumulate = true,
  ): void {
    if (
      this.#s.le_matmul_bwd(
        addr(dinp),
        addr(dw),
        addr(dbias),
        addr(dout),
        addr(inp),
        addr(w),
        N,
        Cin,
        Cout,
        accumulate ? 1 : 0,
      ) !== 0
    ) {
      this.#fail("le_matmul_bwd");
    }
  }

  /**
   * A hint for the next op, which writes `out`: a matmul reads it right after, as its input,
   * and nothing reads its fp32 values later. In bf16 mode the CUDA engine then writes only the
   * bf16 copy the matmul reads (the same results), and any other op right after the producer
   * fails. The producers: geluFwd, layernormFwd, residualLayernormFwd (their `out`),
   * rmsnormFwd, residualRmsnormFwd, swigluFwd. Also geluBwd overwriting `out` (accumulate false) when the matmul
   * backward right after reads it as its dout: where {@linkcode Engine.defersGeluBwd}, that
   * matmul forms it instead, and the bf16 copy made by the op before geluBwd still reaches it.
   * A no-op on the CPU engine and in fp32 and TF32 modes.
   */
  operandOnly(out: Ptr): void {
    const f = this.#s.le_operand_only;
    if (f && f(addr(out)) !== 0) this.#fail("le_operand_only");
  }

  #defersGeluBwd: boolean | undefined;

  /**
   * Whether a hinted geluBwd ({@linkcode Engine.operandOnly}) is left to the matmul backward
   * right after it, in bf16 mode: the CUDA engine unless `LOTUS_DEFER_GELU_BWD=0`, as
   * le_device_info reports it. A library without it runs the two ops apart, and then any op
   * but the matmul between a hinted producer and its matmul fails.
   */
  get defersGeluBwd(): boolean {
    this.#defersGeluBwd ??= this.deviceInfo().deferGeluBwd === true;
    return this.#defersGeluBwd;
  }

  /**
   * GELU (tanh approximation) over n values: `out` fp32, `inp` fp32 or bf16 storage
   * ({@linkcode Engine.allocBf16}), as for {@linkcode Engine.geluBwd}'s `inp`.
   */
  geluFwd(out: Ptr, inp: Ptr, n: number): void {
    if (this.#s.le_gelu_fwd(addr(out), addr(inp), I(n)) !== 0) this.#fail("le_gelu_fwd");
  }

  /** dinp += gelu'(inp) dout; with `accumulate` false, dinp = gelu'(inp) dout (not read). */
  geluBwd(dinp: Ptr, inp: Ptr, dout: Ptr, n: number, accumulate = true): void {
    if (this.#s.le_gelu_bwd(addr(dinp), addr(inp), addr(dout), I(n), accumulate ? 1 : 0) !== 0) {
      this.#fail("le_gelu_bwd");
    }
  }

  /**
   * Dropout in place over n floats with drop probability p: kept elements scaled by
   * 1 / (1 - p), the decisions written to `mask` (uint8). The decision of element i depends
   * only on (seed, i), identically in both engines. With `seedAt`, the seed is the uint64 in
   * engine memory there, read when the op runs (what a recorded graph replays with).
   */
  dropoutFwd(x: Ptr, mask: Ptr, n: number, p: number, seed: bigint, seedAt: Ptr = null): void {
    if (this.#s.le_dropout_fwd(addr(x), addr(mask), I(n), p, seed, addr(seedAt)) !== 0) {
      this.#fail("le_dropout_fwd");
    }
  }

  /** dinp = mask ? dout / (1 - p) : 0 over n floats (written; dinp may be dout). */
  dropoutBwd(dinp: Ptr, dout: Ptr, mask: Ptr, n: number, p: number): void {
    if (this.#s.le_dropout_bwd(addr(dinp), addr(dout), addr(mask), I(n), p) !== 0) {
      this.#fail("le_dropout_bwd");
    }
  }

  /** Causal attention of Tq queries against [Tp past keys ‖ own keys]; see lotus_engine.h. */
  attentionFwd(
    out: Ptr,
    att: Ptr,
    qkv: Ptr,
    kvPast: Ptr,
    keyValid: Ptr,
    B: number,
    Tq: number,
    Tp: number,
    C: number,
    NH: number,
    pastBs: number,
    pastRs: number,
  ): void {
    if (
      this.#s.le_attention_fwd(
        addr(out),
        addr(att),
        addr(qkv),
        addr(kvPast),
        addr(keyValid),
        B,
        Tq,
        Tp,
        C,
        NH,
        I(pastBs),
        I(pastRs),
      ) !==
        0
    ) this.#fail("le_attention_fwd");
  }

  /** Attention backward: dqkv += ..., dkvPast += ... (same strides as kvPast; nullable). */
  attentionBwd(
    dqkv: Ptr,
    dkvPast: Ptr,
    dout: Ptr,
    att: Ptr,
    qkv: Ptr,
    kvPast: Ptr,
    B: number,
    Tq: number,
    Tp: number,
    C: number,
    NH: number,
    pastBs: number,
    pastRs: number,
  ): void {
    if (
      this.#s.le_attention_bwd(
        addr(dqkv),
        addr(dkvPast),
        addr(dout),
        addr(att),
        addr(qkv),
        addr(kvPast),
        B,
        Tq,
        Tp,
        C,
        NH,
        I(pastBs),
        I(pastRs),
      ) !== 0
    ) this.#fail("le_attention_bwd");
  }

  /**
   * Attention that saves per-row softmax statistics `stats` [B, NH, Tq, 2] (max, 1/sum;
   * nullable: nothing saved) instead of the probabilities; see lotus_engine.h.
   */
  attentionStatsFwd(
    out: Ptr,
    stats: Ptr,
    qkv: Ptr,
    kvPast: Ptr,
    keyValid: Ptr,
    B: number,
    Tq: number,
    Tp: number,
    C: number,
    NH: number,
    pastBs: number,
    pastRs: number,
  ): void {
    if (
      this.#s.le_attention_stats_fwd(
        addr(out),
        addr(stats),
        addr(qkv),
        addr(kvPast),
        addr(keyValid),
        B,
        Tq,
        Tp,
        C,
        NH,
        I(pastBs),
        I(pastRs),
      ) !== 0
    ) this.#fail("le_attention_stats_fwd");
  }

  /**
   * Backward of {@linkcode Engine.attentionStatsFwd}, recomputing the probabilities from
   * `stats`, qkv, the past and `keyValid` (the forward's, unchanged): dqkv += ..., dkvPast +=
   * ... (same strides as kvPast; nullable). `out` is the forward's output, unchanged: the
   * CUDA engine forms each row's sum p . dp as dout . out from it.
   */
  attentionStatsBwd(
    dqkv: Ptr,
    dkvPast: Ptr,
    dout: Ptr,
    out: Ptr,
    stats: Ptr,
    keyValid: Ptr,
    qkv: Ptr,
    kvPast: Ptr,
    B: number,
    Tq: number,
    Tp: number,
    C: number,
    NH: number,
    pastBs: number,
    pastRs: number,
  ): void {
    if (
      this.#s.le_attention_stats_bwd(
        addr(dqkv),
        addr(dkvPast),
        addr(dout),
        addr(out),
        addr(stats),
        addr(keyValid),
        addr(qkv),
        addr(kvPast),
        B,
        Tq,
        Tp,
        C,
        NH,
        I(pastBs),
        I(pastRs),
      ) !== 0
    ) this.#fail("le_attention_stats_bwd");
  }

  /** RMSNorm: out = inp * rstd * w, rstd = 1/sqrt(mean(inp^2) + eps); rstd [N] nullable. */
  rmsnormFwd(out: Ptr, rstd: Ptr, inp: Ptr, w: Ptr, N: number, C: number, eps: number): void {
    if (this.#s.le_rmsnorm_fwd(addr(out), addr(rstd), addr(inp), addr(w), N, C, eps) !== 0) {
      this.#fail("le_rmsnorm_fwd");
    }
  }

  /**
   * Residual + RMSNorm: resid = a + b; out = RMSNorm(resid), rstd [N] nullable; resid may
   * alias a or b. The same bits as {@linkcode Engine.add} then {@linkcode Engine.rmsnormFwd},
   * which is what runs on a library without the fused op.
   */
  residualRmsnormFwd(
    resid: Ptr,
    out: Ptr,
    rstd: Ptr,
    a: Ptr,
    b: Ptr,
    w: Ptr,
    N: number,
    C: number,
    eps: number,
  ): void {
    const f = this.#s.le_residual_rmsnorm_fwd;
    if (!f) {
      this.add(resid, a, b, N * C);
      this.rmsnormFwd(out, rstd, resid, w, N, C, eps);
    } else if (f(addr(resid), addr(out), addr(rstd), addr(a), addr(b), addr(w), N, C, eps) !== 0) {
      this.#fail("le_residual_rmsnorm_fwd");
    }
  }

  /** RMSNorm backward: dinp += ..., dw += ... (each nullable). */
  rmsnormBwd(
    dinp: Ptr,
    dw: Ptr,
    dout: Ptr,
    inp: Ptr,
    w: Ptr,
    rstd: Ptr,
    N: number,
    C: number,
  ): void {
    if (
      this.#s.le_rmsnorm_bwd(
        addr(dinp),
        addr(dw),
        addr(dout),
        addr(inp),
        addr(w),
        addr(rstd),
        N,
        C,
      ) !==
        0
    ) this.#fail("le_rmsnorm_bwd");
  }

  /**
   * Rotary position embedding in place on the first `nh` heads of `HS` elements of N rows of
   * stride `rs`, by angles pos[n] * invFreq[i]; `inverse` rotates back (the backward, applied
   * to a gradient).
   */
  rope(
    x: Ptr,
    pos: Ptr,
    invFreq: Ptr,
    N: number,
    nh: number,
    HS: number,
    rs: number,
    inverse: boolean,
  ): void {
    if (
      this.#s.le_rope(addr(x), addr(pos), addr(invFreq), N, nh, HS, I(rs), inverse ? 1 : 0) !== 0
    ) this.#fail("le_rope");
  }

  /** SwiGLU: out [N, I] = silu(inp[:, :I]) * inp[:, I:]. */
  swigluFwd(out: Ptr, inp: Ptr, N: number, In: number): void {
    if (this.#s.le_swiglu_fwd(addr(out), addr(inp), N, In) !== 0) this.#fail("le_swiglu_fwd");
  }

  /** SwiGLU backward: dinp [N, 2I] += ... (with `accumulate` false, = ..., dinp not read). */
  swigluBwd(dinp: Ptr, inp: Ptr, dout: Ptr, N: number, In: number, accumulate = true): void {
    const acc = accumulate ? 1 : 0;
    if (this.#s.le_swiglu_bwd(addr(dinp), addr(inp), addr(dout), N, In, acc) !== 0) {
      this.#fail("le_swiglu_bwd");
    }
  }

  /**
   * Grouped-query attention: {@linkcode Engine.attentionFwd} with NKV key/value heads; qkv rows
   * are [q (C) | k (Ckv) | v (Ckv)], Ckv = NKV * C / NH; see lotus_engine.h.
   */
  attentionGqaFwd(
    out: Ptr,
    att: Ptr,
    qkv: Ptr,
    kvPast: Ptr,
    keyValid: Ptr,
    B: number,
    Tq: number,
    Tp: number,
    C: number,
    NH: number,
    NKV: number,
    pastBs: number,
    pastRs: number,
  ): void {
    if (
      this.#s.le_attention_gqa_fwd(
        addr(out),
        addr(att),
        addr(qkv),
        addr(kvPast),
        addr(keyValid),
        B,
        Tq,
        Tp,
        C,
        NH,
        NKV,
        I(pastBs),
        I(pastRs),
      ) !== 0
    ) this.#fail("le_attention_gqa_fwd");
  }

  /** Grouped-query attention backward: dqkv += ..., dkvPast += ... (nullable). */
  attentionGqaBwd(
    dqkv: Ptr,
    dkvPast: Ptr,
    dout: Ptr,
    att: Ptr,
    qkv: Ptr,
    kvPast: Ptr,
    B: number,
    Tq: number,
    Tp: number,
    C: number,
    NH: number,
    NKV: number,
    pastBs: number,
    pastRs: number,
  ): void {
    if (
      this.#s.le_attention_gqa_bwd(
        addr(dqkv),
        addr(dkvPast),
        addr(dout),
        addr(att),
        addr(qkv),
        addr(kvPast),
        B,
        Tq,
        Tp,
        C,
        NH,
        NKV,
        I(pastBs),
        I(pastRs),
      ) !== 0
    ) this.#fail("le_attention_gqa_bwd");
  }

  /**
   * Grouped-query attention with per-row softmax statistics: {@linkcode Engine.attentionStatsFwd}
   * with NKV key/value heads and {@linkcode Engine.attentionGqaFwd}'s qkv layout.
   */
  attentionGqaStatsFwd(
    out: Ptr,
    stats: Ptr,
    qkv: Ptr,
    kvPast: Ptr,
    keyValid: Ptr,
    B: number,
    Tq: number,
    Tp: number,
    C: number,
    NH: number,
    NKV: number,
    pastBs: number,
    pastRs: number,
  ): void {
    if (
      this.#s.le_attention_gqa_stats_fwd(
        addr(out),
        addr(stats),
        addr(qkv),
        addr(kvPast),
        addr(keyValid),
        B,
        Tq,
        Tp,
        C,
        NH,
        NKV,
        I(pastBs),
        I(pastRs),
      ) !== 0
    ) this.#fail("le_attention_gqa_stats_fwd");
  }

  /**
   * Backward of {@linkcode Engine.attentionGqaStatsFwd}, recomputing the probabilities from
   * `stats` (the forward's qkv, past and `keyValid`, unchanged): dqkv += ..., dkvPast += ...
   * (nullable). `out` is the forward's output, unchanged (see attentionStatsBwd).
   */
  attentionGqaStatsBwd(
    dqkv: Ptr,
    dkvPast: Ptr,
    dout: Ptr,
    out: Ptr,
    stats: Ptr,
    keyValid: Ptr,
    qkv: Ptr,
    kvPast: Ptr,
    B: number,
    Tq: number,
    Tp: number,
    C: number,
    NH: number,
    NKV: number,
    pastBs: number,
    pastRs: number,
  ): void {
    if (
      this.#s.le_attention_gqa_stats_bwd(
        addr(dqkv),
        addr(dkvPast),
        addr(dout),
        addr(out),
        addr(stats),
        addr(keyValid),
        addr(qkv),
        addr(kvPast),
        B,
        Tq,
        Tp,
        C,
        NH,
        NKV,
        I(pastBs),
        I(pastRs),
      ) !== 0
    ) this.#fail("le_attention_gqa_stats_bwd");
  }

  /**
   * Softmax cross-entropy; targets < 0 ignored; dscale != 0 overwrites logits with the
   * gradient dscale (softmax - onehot), where the scale is, with `dscaleAt`, the float in
   * engine memory there, read when the op runs (what a recorded graph replays with).
   */
  xentFwdBwd(
    logits: Ptr,
    losses: Ptr,
    targets: Ptr,
    N: number,
    V: number,
    dscale: number,
    dscaleAt: Ptr = null,
  ): void {
    const at = addr(dscaleAt);
    if (
      this.#s.le_xent_fwd_bwd(addr(logits), addr(losses), addr(targets), N, V, dscale, at) !== 0
    ) {
      this.#fail("le_xent_fwd_bwd");
    }
  }

  /** out[n] = argmax of logits row n (lowest index on ties). */
  argmax(out: Ptr, logits: Ptr, N: number, V: number): void {
    if (this.#s.le_argmax(addr(out), addr(logits), N, V) !== 0) this.#fail("le_argmax");
  }

  /** out[0] = sum g^2 (double accumulation). */
  sumsq(out: Ptr, g: Ptr, n: number): void {
    if (this.#s.le_sumsq(addr(out), addr(g), I(n)) !== 0) this.#fail("le_sumsq");
  }

  /** One PyTorch-style AdamW step, with the global-norm clip when gnormSq is given and
   * maxNorm > 0. */
  adamw(
    p: Ptr,
    g: Ptr,
    m: Ptr,
    v: Ptr,
    n: number,
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    weightDecay: number,
    t: number,
    gnormSq: Ptr,
    maxNorm: number,
  ): void {
    if (
      this.#s.le_adamw(
        addr(p),
        addr(g),
        addr(m),
        addr(v),
        I(n),
        lr,
        beta1,
        beta2,
        eps,
        weightDecay,
        t,
        addr(gnormSq),
        maxNorm,
      ) !==
        0
    ) this.#fail("le_adamw");
  }

  /**
   * Declares that `n` floats from `p` hold weights that matmuls read as their `w`. In bf16 mode
   * the CUDA engine then keeps a bf16 copy of them, updated by {@linkcode Engine.adamw} in the
   * same pass and rebuilt after any other write, instead of rounding every weight again at every
   * matmul; results are bit-identical. The CPU engine checks the span and keeps nothing.
   * `n = 0` forgets the range that starts at `p`. The contract: le_keep_bf16 in lotus_engine.h.
   */
  keepBf16(p: Ptr, n: number): void {
    if (this.#s.le_keep_bf16(addr(p), I(n)) !== 0) this.#fail("le_keep_bf16");
  }

  /**
   * Start recording ops into a graph (CUDA engine only): until {@linkcode Engine.graphEnd} the
   * engine records the ops it is called with instead of running them. Whatever would wait for
   * the device, touch host memory or allocate fails meanwhile; run the ops once before
   * recording them. The contract: le_graph_begin in lotus_engine.h.
   */
  graphBegin(): void {
    if (this.#s.le_graph_begin() !== 0) this.#fail("le_graph_begin");
  }

  /** Stop recording and keep the graph in `slot` (0..511); a negative slot discards it. */
  graphEnd(slot: number): void {
    if (this.#s.le_graph_end(slot) !== 0) this.#fail("le_graph_end");
  }

  /**
   * Run the graph in `slot` on what its buffers hold now. The index arrays it reads are checked
   * first against the bounds they were recorded for; one out of range throws, and nothing runs.
   * Returns false, running nothing, when the graph is out of date (device scratch or a weight
   * copy it reads was freed since its recording: record it again).
   */
  graphLaunch(slot: number): boolean {
    const r = this.#s.le_graph_launch(slot);
    if (r === 2) return false;
    if (r !== 0) this.#fail("le_graph_launch");
    return true;
  }

  /** Free the graph in `slot` (a negative slot: every graph), and the slot. */
  graphFree(slot: number): void {
    if (this.#s.le_graph_free(slot) !== 0) this.#fail("le_graph_free");
    if (slot < 0) this.#graphSlots.clear();
    else this.#graphSlots.delete(slot);
  }

  /** Whether the library has timing marks ({@linkcode Engine.mark}). */
  get hasMarks(): boolean {
    return !!this.#s.le_mark && !!this.#s.le_mark_elapsed;
  }

  /**
   * Record timing mark `i` (0 ≤ i < {@linkcode MARKS}) once the work issued before it has run,
   * on the device's clock: an event on the CUDA engine's stream (recorded into a graph while
   * one is being recorded, and again at each replay), the clock on the CPU engine. It queues no
   * work and waits for nothing. The contract: le_mark in lotus_engine.h.
   */
  mark(i: number): void {
    const f = this.#s.le_mark;
    if (!f) return this.#noMarks("le_mark");
    if (f(i) !== 0) this.#fail("le_mark");
  }

  /** Milliseconds from mark `a` to mark `b`, as last reached; waits until `b` is reached. */
  markElapsed(a: number, b: number): number {
    const f = this.#s.le_mark_elapsed;
    if (!f) return this.#noMarks("le_mark_elapsed");
    if (f(a, b, this.#ms) !== 0) this.#fail("le_mark_elapsed");
    return this.#ms[0];
  }

  #noMarks(fn: string): never {
    throw new EngineError(
      fn,
      `${fn}: ${this.libPath} has no timing marks; rebuild it with ` +
        `deno task build-engine --force`,
    );
  }

  /** A graph slot no other user of this engine holds, until {@linkcode Engine.graphFree}. */
  graphSlot(): number {
    for (let i = 0; i < GRAPH_SLOTS; i++) {
      if (!this.#graphSlots.has(i)) {
        this.#graphSlots.add(i);
        return i;
      }
    }
    throw new EngineError(
      "le_graph_end",
      `le_graph_end: all ${GRAPH_SLOTS} graph slots are in use; free one with graphFree`,
    );
  }

  /**
   * Join the MPI job this process was started in (mpirun): loads libmpi, runs MPI_Init once
   * per process (the CUDA engine also creates its NCCL communicator) and returns this rank
   * and the job's size. `timeoutS` > 0: a collective that waits longer than that for the
   * other ranks ends this process with a message and exit status 75 (0: no limit).
   * Idempotent; see lotus_engine.h for the whole contract.
   */
  commInit(timeoutS: number): { rank: number; size: number } {
    const s = this.#s;
    if (!s.le_comm_init || !s.le_comm_rank || !s.le_comm_size) {
      throw new EngineError(
        "le_comm_init",
        `le_comm_init: ${this.libPath} has no collectives; rebuild it with ` +
          `deno task build-engine --force`,
      );
    }
    if (s.le_comm_init(timeoutS) !== 0) this.#fail("le_comm_init");
    return { rank: s.le_comm_rank(), size: s.le_comm_size() };
  }

  /** Replace `n` floats at `buf` with their sum over all ranks (the same bits on each). */
  allReduceSum(buf: Ptr, n: number): void {
    if (this.#s.le_comm_allreduce_sum!(addr(buf), I(n)) !== 0) {
      this.#fail("le_comm_allreduce_sum");
    }
  }

  /**
   * Whether the engine can start an all-reduce and return before it completes
   * ({@linkcode Engine.allReduceStart}); an older library cannot.
   */
  get canOverlap(): boolean {
    const s = this.#s;
    return !!s.le_comm_allreduce_start && !!s.le_comm_progress && !!s.le_comm_wait;
  }

  /**
   * Start replacing `n` floats at `buf` with their sum over all ranks, after the work issued
   * so far, and return without waiting for the other ranks. `buf` must not be read or
   * written until {@linkcode Engine.commWait}. Every rank starts the same ones in the same
   * order.
   */
  allReduceStart(buf: Ptr, n: number): void {
    if (this.#s.le_comm_allreduce_start!(addr(buf), I(n)) !== 0) {
      this.#fail("le_comm_allreduce_start");
    }
  }

  /** Let the started all-reduces advance (call between ops); never blocks. */
  commProgress(): void {
    if (this.#s.le_comm_progress!() !== 0) this.#fail("le_comm_progress");
  }

  /** Wait for every started all-reduce: then their buffers hold the sums. */
  commWait(): void {
    if (this.#s.le_comm_wait!() !== 0) this.#fail("le_comm_wait");
  }

  /** Copy `bytes` bytes at `buf` from rank `root` to every other rank. */
  broadcast(buf: Ptr, bytes: number, root = 0): void {
    if (this.#s.le_comm_broadcast!(addr(buf), I(bytes), root) !== 0) {
      this.#fail("le_comm_broadcast");
    }
  }

  /** Return once every rank has called it. */
  barrier(): void {
    if (this.#s.le_comm_barrier!() !== 0) this.#fail("le_comm_barrier");
  }

  /** Leave the MPI job (MPI_Finalize): once per process, after its last collective. */
  commFinalize(): void {
    if (this.#s.le_comm_finalize && this.#s.le_comm_finalize() !== 0) {
      this.#fail("le_comm_finalize");
    }
  }
}

/**
 * OpenMP threads that wait at a barrier spin briefly (GOMP_SPINCOUNT=1000, a few
 * microseconds) and then sleep, unless the user chose a policy (OMP_WAIT_POLICY or
 * GOMP_SPINCOUNT set). libgomp reads the variables once, when the engine library loads it. Its
 * own default spins far longer, and on a machine whose cores other jobs share, a spinning
 * thread holds the core that the thread it waits for needs. `bash bench/threads_bench.sh`
 * measures the policies: on two cores, training with both threads keeps 94% of libgomp's
 * speed on an idle machine, and runs 3.6x faster than it when another job takes a core
 * (docs/engine.md).
 */
function shortOpenMpSpinByDefault(): void {
  try {
    if (
      Deno.env.get("OMP_WAIT_POLICY") === undefined && Deno.env.get("GOMP_SPINCOUNT") === undefined
    ) {
      Deno.env.set("GOMP_SPINCOUNT", "1000");
    }
  } catch { /* no --allow-env: libgomp keeps its default */ }
}

/**
 * le_init probes the GPU's tensor-core register layout; when it is not the one the engine's
 * tensor-core kernels assume, or the probe cannot run, the engine runs without them (bf16
 * attention on the fp32 kernels, few-row forwards on cuBLAS), and says so here: to `opts.log`,
 * else to stderr unless `opts.quiet`.
 *
 * @example
 * ```ts
 * import { warnIfMmaProbeFailed } from "./ffi.ts";
 * const lines: string[] = [];
 * warnIfMmaProbeFailed({ deviceInfo: () => ({ mmaProbe: 3 }) }, { log: (l) => lines.push(l) });
 * console.assert(lines.length === 1 && lines[0].includes("3 of 128 elements wrong"));
 * ```
 */
export function warnIfMmaProbeFailed(
  eng: Pick<Engine, "deviceInfo">,
  opts: Pick<EngineOptions, "log" | "quiet"> = {},
): void {
  const log = opts.log ?? (opts.quiet ? null : (line: string) => console.error(line));
  const wrong = eng.deviceInfo().mmaProbe;
  if (log !== null && typeof wrong === "number" && wrong !== 0) {
    log(
      `CUDA engine: le_init's tensor-core probe ${
        wrong > 0 ? `found ${wrong} of 128 elements wrong` : "could not run"
      }, so the engine's own tensor-core kernels are off: bf16 attention runs on the fp32 ` +
        `kernels and few-row forwards on cuBLAS (correct, slower); deno task test:gpu checks ` +
        `the engine on this GPU`,
    );
  }
}

/**
 * Builds the engine if needed (see buildEngine), loads it, initialises it and checks that
 * it speaks this binding's ABI version.
 *
 * For the CUDA backend the NVIDIA driver is asked first ({@linkcode probeCuda}) whether there
 * is a GPU at all, so a machine without one fails at once, before any compilation, with an
 * {@linkcode EngineError} that says so (op "cuInit"). A prebuilt `libPath` skips the probe:
 * le_init then reports the same condition.
 *
 * @example
 * ```ts
 * import { openEngine } from "./ffi.ts";
 * const eng = openEngine({ threads: 2, quiet: true });
 * console.log(eng.backend, eng.libPath);
 * eng.close();
 * ```
 */
export function openEngine(opts: EngineOptions = {}): Engine {
  const backend = opts.backend ?? "cpu";
  if (backend === "cuda" && opts.libPath === undefined) {
    const p = probeCuda();
    if (!p.available) {
      throw new EngineError(
        "cuInit",
        `cuInit: cannot use the CUDA engine: ${p.reason}; use --backend cpu, or --backend ` +
          `auto to fall back to the CPU`,
      );
    }
  }
  const libPath = opts.libPath ?? buildEngine({ backend, quiet: opts.quiet });
  if (backend === "cpu") shortOpenMpSpinByDefault();
  let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  try {
    lib = Deno.dlopen(libPath, SYMBOLS);
  } catch (e) {
    // A missing --allow-ffi: Deno's own words (the CLI names the flag by them), and the
    // directory to grant, in full, since a permission's path is resolved from the directory
    // deno runs in, which for another project is not this checkout.
    if (e instanceof Deno.errors.NotCapable) {
      const dir = libPath.slice(0, libPath.lastIndexOf("/"));
      throw new Deno.errors.NotCapable(`${e.message}; grant --allow-ffi=${dir}`, { cause: e });
    }
    throw new EngineError(
      "dlopen",
      `dlopen: cannot load ${libPath}: ${(e as Error).message}; rebuild it with ` +
        `deno task build-engine --backend ${backend} --force`,
    );
  }
  try {
    const abi = lib.symbols.le_abi_version();
    if (abi !== LE_ABI_VERSION) {
      throw new EngineError(
        "le_abi_version",
        `le_abi_version: ${libPath} speaks ABI ${abi}, this binding ABI ${LE_ABI_VERSION}; ` +
          `rebuild with deno task build-engine --force`,
      );
    }
    const eng = new Engine(lib, libPath);
    if (eng.backend !== backend) {
      throw new EngineError(
        "le_backend",
        `le_backend: ${libPath} is the ${eng.backend} engine, not ${backend}`,
      );
    }
    if (lib.symbols.le_init(opts.device ?? 0) !== 0) {
      throw new EngineError("le_init", lastError(lib.symbols));
    }
    if (backend === "cuda") warnIfMmaProbeFailed(eng, opts);
    if (opts.threads !== undefined) eng.setNumThreads(opts.threads);
    // Always set: the library's state outlives Engine.close(), so an earlier engine's mode
    // must not leak into this one.
    const precision = opts.precision ?? "fp32";
    const mode = Object.hasOwn(PRECISION_MODES, precision) ? PRECISION_MODES[precision] : undefined;
    if (mode === undefined) {
      throw new EngineError(
        "le_set_precision",
        `le_set_precision: unknown precision "${opts.precision}": use ${PRECISIONS_TEXT}`,
      );
    }
    eng.setPrecision(mode);
    return eng;
  } catch (e) {
    lib.close();
    throw e;
  }
}
