/**
 * Choosing an engine by name: "cpu", "cuda", or "auto" (CUDA when this machine has a usable
 * GPU, otherwise the CPU, saying why). The trainer's and inference's `--backend` go through
 * {@linkcode selectEngine}.
 *
 * @example
 * ```ts
 * import { selectEngine } from "./backend.ts";
 * const eng = selectEngine("auto", { quiet: true, log: (s) => console.error(s) });
 * console.log(eng.backend); // "cpu" on a machine without a GPU, after saying so
 * eng.close();
 * ```
 *
 * @module
 */
import { type Engine, EngineError, openEngine, type Precision } from "./ffi.ts";
import type { BackendName } from "./types.ts";
import { probeCuda } from "./cuda_probe.ts";

/** Options of {@linkcode selectEngine}. */
export interface SelectEngineOptions {
  /** CPU threads (0 or unset: all cores). */
  threads?: number;
  /** Matmul precision on CUDA (default "fp32"). The CPU engine has only "fp32": asking it for
   * another is an error, except under "auto", which falls back to fp32 and says so. */
  precision?: Precision;
  /** The precision the CUDA engine gets when `precision` is not given (default "fp32"); the
   * CPU engine then runs fp32 without a word. Training asks for "bf16". */
  cudaPrecision?: Precision;
  /**
   * Where "auto" reports a fallback to the CPU (default: stderr), and where the engine's notes
   * go (default: stderr, unless `quiet`).
   */
  log?: (line: string) => void;
  /** Build the library without printing the compiler command, and the engine's notes. */
  quiet?: boolean;
  /** A prebuilt CUDA engine library to load instead of building one ("cuda" only). */
  cudaLibPath?: string;
}

/**
 * Open the engine a backend name asks for. "cpu" and "cuda" open that engine or throw
 * {@linkcode EngineError} (a CUDA request on a machine without a GPU fails at once, before
 * anything is compiled). "auto" asks the NVIDIA driver for a GPU: with one it opens the
 * CUDA engine; without one, or when the CUDA engine cannot be built or initialised, it
 * reports why through `log` and opens the CPU engine.
 *
 * @throws {EngineError} for an unknown backend name, or when the engine asked for cannot be
 * built, loaded or initialised (under "auto", only when the CPU engine cannot).
 *
 * @example
 * ```ts
 * import { selectEngine } from "./backend.ts";
 * const eng = selectEngine("cpu", { threads: 1, quiet: true }); // builds the library once
 * console.assert(eng.backend === "cpu");
 * eng.close();
 * ```
 */
export function selectEngine(backend: BackendName, opts: SelectEngineOptions = {}): Engine {
  // 0 resets the CPU engine to all cores (its setting outlives Engine.close()).
  const threads = opts.threads ?? 0;
  const precision = opts.precision ?? "fp32";
  const cudaPrecision = opts.precision ?? opts.cudaPrecision ?? "fp32";
  if (backend === "cpu" || backend === "cuda") {
    const p = backend === "cuda" ? cudaPrecision : precision;
    const libPath = backend === "cuda" ? opts.cudaLibPath : undefined;
    return openEngine({
      backend,
      threads,
      precision: p,
      quiet: opts.quiet,
      libPath,
      log: opts.log,
    });
  }
  if (backend !== "auto") {
    throw new EngineError("backend", `unknown backend "${backend}": use cpu, cuda or auto`);
  }
  const log = opts.log ?? ((s: string) => console.error(s));
  const cpuPrecision = precision === "fp32"
    ? ""
    : ` in fp32 (${precision} matmuls need the CUDA engine)`;
  const probe = probeCuda();
  if (!probe.available) {
    log(`backend auto: ${probe.reason}; using the CPU${cpuPrecision}`);
    return openEngine({ backend: "cpu", threads, quiet: opts.quiet });
  }
  try {
    // Built quietly (a failure falls back to the CPU); its notes go where `log` says.
    return openEngine({
      backend: "cuda",
      precision: cudaPrecision,
      quiet: true,
      log: opts.log ?? (opts.quiet ? () => {} : undefined),
    });
  } catch (e) {
    const why = (e as Error).message.split("\n")[0];
    log(
      `backend auto: the driver reports ${probe.devices} GPU(s), but the CUDA engine cannot ` +
        `be used (${why}); using the CPU${cpuPrecision}`,
    );
    return openEngine({ backend: "cpu", threads, quiet: opts.quiet });
  }
}
