/**
 * Asks the NVIDIA driver, through its own library (libcuda.so.1, loaded with `Deno.dlopen`),
 * whether this machine has a usable GPU, and how much device memory is free.
 *
 * The probe costs a few milliseconds and needs neither nvcc nor the CUDA engine's library,
 * so `--backend auto` can decide without compiling anything, and `--backend cuda` on a
 * machine without a GPU fails at once with a clear message instead of after a build.
 *
 * @example
 * ```ts
 * import { probeCuda } from "./cuda_probe.ts";
 * const p = probeCuda();
 * console.log(p.available ? `${p.devices} GPU(s)` : `no GPU: ${p.reason}`);
 * ```
 *
 * @module
 */

/** What {@linkcode probeCuda} found. */
export interface CudaProbe {
  /** True when the driver loads, initialises and reports at least one GPU. */
  available: boolean;
  /** GPUs the driver reports (0 when unavailable). */
  devices: number;
  /** Why the GPU is unusable (empty when available). */
  reason: string;
}

const DRIVER_SYMBOLS = {
  cuInit: { parameters: ["u32"], result: "i32" },
  cuDeviceGetCount: { parameters: ["buffer"], result: "i32" },
  cuGetErrorName: { parameters: ["i32", "buffer"], result: "i32" },
  cuMemGetInfo_v2: { parameters: ["buffer", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

type Driver = Deno.DynamicLibrary<typeof DRIVER_SYMBOLS>;

// The driver library stays loaded for the life of the process: the CUDA runtime inside the
// engine loads the same library, and unloading it after cuInit is not supported.
let driver: Driver | null = null;
let cached: CudaProbe | null = null;

function errorName(d: Driver, code: number): string {
  const out = new BigUint64Array(1);
  if (d.symbols.cuGetErrorName(code, out) !== 0 || out[0] === 0n) return `CUresult ${code}`;
  try {
    const p = Deno.UnsafePointer.create(out[0]);
    return p ? `${Deno.UnsafePointerView.getCString(p)} (${code})` : `CUresult ${code}`;
  } catch {
    return `CUresult ${code}`; // reading C strings needs --allow-ffi without a path
  }
}

/**
 * Where the driver library usually is, for a process whose --allow-ffi names paths (the
 * deno.json tasks grant these): the loader's name first, then the distributions' paths.
 */
const LIBCUDA_PATHS: readonly string[] = [
  "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
  "/usr/lib64/libcuda.so.1",
  "/usr/lib/wsl/lib/libcuda.so.1",
];

/**
 * Whether nothing is at `path`: asked of the file system where Deno may read it, otherwise read
 * from the loader's message `e` of a `Deno.dlopen(path)` that failed (null when there is none).
 */
function absent(path: string, e: unknown): boolean {
  try {
    Deno.statSync(path);
    return false;
  } catch (s) {
    if (s instanceof Deno.errors.NotFound) return true;
  }
  return e instanceof Error &&
    e.message.includes(`${path}: cannot open shared object file: No such file or directory`);
}

function openDriver(): Driver {
  try {
    return Deno.dlopen("libcuda.so.1", DRIVER_SYMBOLS);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotCapable)) throw e;
  }
  // --allow-ffi names paths: the usual ones are tried; what kept each from loading decides the
  // message: a library there that does not load, a path Deno may not load, or nothing there.
  const denied: string[] = [];
  let failed: unknown = null;
  for (const path of LIBCUDA_PATHS) {
    try {
      return Deno.dlopen(path, DRIVER_SYMBOLS);
    } catch (e) {
      if (e instanceof Deno.errors.NotCapable) {
        if (!absent(path, null)) denied.push(path);
      } else if (!absent(path, e)) failed ??= e;
    }
  }
  if (failed !== null) throw failed;
  if (denied.length > 0) {
    throw new Error(
      "Deno may not load the NVIDIA driver library: grant --allow-ffi for libcuda.so.1 " +
        `(the tasks grant ${LIBCUDA_PATHS.join(", ")}; not granted: ${denied.join(", ")})`,
    );
  }
  throw new Error(
    `no driver library found: looked for ${LIBCUDA_PATHS.join(", ")}; one elsewhere needs ` +
      "--allow-ffi for its path",
  );
}

/**
 * Probes the NVIDIA driver once per process (later calls return the cached answer). Never
 * throws: a missing driver or Deno's missing `--allow-ffi` comes back as `available: false`
 * with the reason.
 */
export function probeCuda(): CudaProbe {
  if (cached) return cached;
  const no = (reason: string): CudaProbe => (cached = { available: false, devices: 0, reason });
  try {
    driver ??= openDriver();
  } catch (e) {
    const msg = (e as Error).message.replaceAll("Could not open library: ", "");
    return no(`no NVIDIA driver on this machine (${msg})`);
  }
  const rc = driver.symbols.cuInit(0);
  if (rc !== 0) {
    return no(`the NVIDIA driver failed to initialise (cuInit: ${errorName(driver, rc)})`);
  }
  const n = new Int32Array(1);
  const rc2 = driver.symbols.cuDeviceGetCount(n);
  if (rc2 !== 0) return no(`cuDeviceGetCount failed (${errorName(driver, rc2)})`);
  if (n[0] === 0) return no("the NVIDIA driver reports no GPU");
  return (cached = { available: true, devices: n[0], reason: "" });
}

/**
 * Free and total device memory in bytes, as the driver sees it, for the GPU that the calling
 * thread's current CUDA context uses (the CUDA engine makes its device current on the thread
 * that opened it). `null` when there is no driver or no current context.
 */
export function cudaMemInfo(): { free: number; total: number } | null {
  if (!probeCuda().available || !driver) return null;
  const free = new BigUint64Array(1), total = new BigUint64Array(1);
  if (driver.symbols.cuMemGetInfo_v2(free, total) !== 0) return null;
  return { free: Number(free[0]), total: Number(total[0]) };
}
