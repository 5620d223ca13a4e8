/**
 * Builds the host emulation of the CUDA engine (check/cuda_emu/README.md): the unchanged
 * engine/engine_cuda.cu compiled as C++ with g++, its kernels run on CPU fibers, plus
 * stand-in cuBLAS and driver libraries, to which emu.h redirects the engine's dlopen calls.
 * Cached under build/ by a hash of every input.
 *
 * @module
 */
import { Sha256 } from "../base/sha256.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const EMU = `${ROOT}/check/cuda_emu`;
const ENGINE = `${ROOT}/engine`;

function run(cmd: string, args: string[]): void {
  const out = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).outputSync();
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed:\n${new TextDecoder().decode(out.stderr).slice(0, 4000)}`,
    );
  }
}

function files(dir: string, re: RegExp): string[] {
  return [...Deno.readDirSync(dir)].filter((e) => e.isFile && re.test(e.name))
    .map((e) => `${dir}/${e.name}`).sort();
}

/** True when g++ can build the emulation (C++20 and ucontext). */
export function canEmulate(): boolean {
  if (Deno.build.os !== "linux") return false;
  try {
    return new Deno.Command("g++", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/**
 * Path of the emulated CUDA engine library, built if needed. With `sanitize`, the engine and
 * the stand-in libraries are built with AddressSanitizer and UBSan (`-fsanitize=address,undefined`,
 * every UBSan finding fatal), under a cache name of their own: a kernel's access past the end
 * (or before the start) of a device buffer, or a vector access off its alignment, then stops
 * the process with a report. A process that loads it must have libasan preloaded
 * ({@linkcode asanRuntime}). Without `sanitize`, the environment's LOTUS_EMU_SANITIZE=1 asks
 * for it.
 */
export function buildCudaEmu(opts: { sanitize?: boolean } = {}): string {
  // LOTUS_EMU_SANITIZE=1 asks it of every caller (npx deno task test:emu-sanitize).
  opts = { sanitize: opts.sanitize ?? Deno.env.get("LOTUS_EMU_SANITIZE") === "1" };
  const inputs = [
    `${EMU}/emu.h`,
    `${EMU}/fake_cublas.cpp`,
    ...files(`${EMU}/include`, /\.h$/),
    `${ENGINE}/engine_cuda.cu`,
    `${ENGINE}/lotus_engine.h`,
    `${ENGINE}/engine_checks.h`,
    `${ENGINE}/comm_mpi.h`,
    ...files(`${ENGINE}/cuda`, /\.(cuh|map)$/),
  ];
  const sanitize = opts.sanitize ? SANITIZE_FLAGS : [];
  const h = new Sha256().update("emu_counters emu_launch_sites").update(sanitize.join(" "));
  for (const f of inputs) h.update(f.slice(ROOT.length)).update(Deno.readFileSync(f));
  const dir = `${ROOT}/build/cuda_emu${opts.sanitize ? "_asan" : ""}-${h.hex().slice(0, 16)}`;
  const lib = `${dir}/liblotus_engine_cuda_emu.so`;
  try {
    Deno.statSync(lib);
    return lib;
  } catch { /* build it */ }
  const tmp = `${dir}.tmp-${Deno.pid}`;
  Deno.mkdirSync(tmp, { recursive: true });
  const cc = ["-std=c++20", ...(opts.sanitize ? sanitize : ["-O2"]), "-fPIC", "-shared"];
  const fake = `${EMU}/fake_cublas.cpp`;
  run("g++", [...cc, "-DFAKE_CUBLAS", "-o", `${tmp}/libemu_cublas.so`, fake]);
  run("g++", [...cc, "-DFAKE_CUBLASLT", "-o", `${tmp}/libemu_cublaslt.so`, fake]);
  run("g++", [...cc, "-o", `${tmp}/libemu_cuda.so`, fake]);
  // The engine's exports, plus emu_counters (emuCounters) and emu_launch_sites.
  Deno.writeTextFileSync(
    `${tmp}/exports.map`,
    "{\n  global: le_*; emu_counters; emu_launch_sites;\n  local: *;\n};\n",
  );
  run("g++", [
    ...cc,
    "-x",
    "c++",
    "-include",
    `${EMU}/emu.h`,
    "-I",
    `${EMU}/include`,
    // where the engine's dlopen calls lead (see emu.h)
    `-DEMU_LIB_DIR="${dir}"`,
    "-fvisibility=hidden",
    `-Wl,--version-script=${tmp}/exports.map`,
    "-o",
    `${tmp}/liblotus_engine_cuda_emu.so`,
    `${ENGINE}/engine_cuda.cu`,
    "-ldl",
  ]);
  try {
    Deno.renameSync(tmp, dir);
  } catch {
    Deno.removeSync(tmp, { recursive: true }); // another process built it first
  }
  return lib;
}

/** The compiler flags of {@linkcode buildCudaEmu}'s sanitized build. */
const SANITIZE_FLAGS = [
  "-O1",
  "-g",
  "-fno-omit-frame-pointer",
  "-fsanitize=address,undefined",
  "-fno-sanitize-recover=undefined",
];

/**
 * The AddressSanitizer runtime that a process loading {@linkcode buildCudaEmu}'s sanitized
 * library must preload (LD_PRELOAD), as g++ names it; null when g++ has none.
 */
export function asanRuntime(): string | null {
  try {
    const out = new Deno.Command("g++", { args: ["-print-file-name=libasan.so"], stdout: "piped" })
      .outputSync();
    const path = new TextDecoder().decode(out.stdout).trim();
    return path.startsWith("/") ? path : null; // g++ echoes the bare name when it has none
  } catch {
    return null;
  }
}

/**
 * For a script that loads {@linkcode buildCudaEmu}'s sanitized library: when this process has
 * not preloaded the ASan runtime, runs the script at `script` (a file URL or path) again with
 * the same arguments and the runtime preloaded (leak checks off: Deno's own allocations at exit
 * are not the engine's), and exits with its status; returns when the runtime is loaded already.
 * Exits 2, saying so, when g++ has no ASan runtime.
 */
export async function ensureAsanPreloaded(script: string, log: (s: string) => void): Promise<void> {
  const preload = Deno.env.get("LD_PRELOAD") ?? "";
  if (preload.includes("libasan")) return;
  const asan = asanRuntime();
  if (!asan) {
    log("--sanitize: g++ has no AddressSanitizer runtime (libasan.so); install it with g++");
    Deno.exit(2);
  }
  const path = script.startsWith("file:") ? decodeURIComponent(new URL(script).pathname) : script;
  // The runtime first (ASan requires it), then what was preloaded already; the options given
  // are kept, leak checks off added.
  const opts = (name: string, add: string) =>
    [Deno.env.get(name), add].filter((v) => v).join(name === "LD_PRELOAD" ? " " : ":");
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", path, ...Deno.args],
    env: {
      LD_PRELOAD: [asan, preload].filter((v) => v).join(" "),
      ASAN_OPTIONS: opts("ASAN_OPTIONS", "detect_leaks=0"),
      UBSAN_OPTIONS: opts("UBSAN_OPTIONS", "print_stacktrace=1"),
    },
    stdin: "null",
  }).spawn();
  Deno.exit((await child.status).code);
}

/**
 * Path of the emulation's self-test program (check/cuda_emu/selftest.cpp), built if needed:
 * deliberately faulty kernels beside their correct versions, compiled with the emulation as
 * the engine is. It prints `<case> <0|1> <detail>` lines; 1 means the emulation reported a
 * fault (or the case's own check saw the GPU's behaviour).
 */
export function buildEmuSelftest(): string {
  const inputs = [
    `${EMU}/emu.h`,
    `${EMU}/selftest.cpp`,
    `${ENGINE}/cuda/cublas_api.cuh`,
    ...files(`${EMU}/include`, /\.h$/),
  ];
  const h = new Sha256();
  for (const f of inputs) h.update(f.slice(ROOT.length)).update(Deno.readFileSync(f));
  const dir = `${ROOT}/build/cuda_emu_selftest-${h.hex().slice(0, 16)}`;
  const exe = `${dir}/selftest`;
  try {
    Deno.statSync(exe);
    return exe;
  } catch { /* build it */ }
  const tmp = `${dir}.tmp-${Deno.pid}`;
  Deno.mkdirSync(tmp, { recursive: true });
  run("g++", [
    "-std=c++20",
    "-O1",
    "-x",
    "c++",
    "-include",
    `${EMU}/emu.h`,
    "-I",
    `${EMU}/include`,
    `-DEMU_LIB_DIR="${tmp}"`,
    "-o",
    `${tmp}/selftest`,
    `${EMU}/selftest.cpp`,
    "-ldl",
  ]);
  try {
    Deno.renameSync(tmp, dir);
  } catch {
    Deno.removeSync(tmp, { recursive: true });
  }
  return exe;
}

/** What the emulated engine has asked of its stream since the library was loaded. */
export interface EmuCounters {
  /** Kernel launches (the engine's LAUNCH sites). */
  launches: number;
  /** cudaMemsetAsync and cudaMemcpyAsync operations. */
  memops: number;
  /** Host waits: cudaStreamSynchronize, cudaDeviceSynchronize and cudaFree calls. */
  syncs: number;
  /** cublasGemmEx calls (each at least one kernel on a GPU). */
  gemms: number;
  /** cudaGraphLaunch calls; the work they replay is not counted in the fields above. */
  graphLaunches: number;
  /** Thread blocks of the kernel launches (their grids' sizes, summed). */
  blocks: number;
}

/**
 * The counters of the emulated engine at `lib` (a path from {@linkcode buildCudaEmu}), which
 * this process must already have opened (openEngine): the same library is opened again, so
 * its counters are the engine's. Subtract two readings to count what a piece of work does.
 */
export function emuCounters(lib: string): EmuCounters {
  const h = Deno.dlopen(lib, { emu_counters: { parameters: ["buffer"], result: "void" } });
  try {
    const out = new BigUint64Array(6);
    h.symbols.emu_counters(out);
    return {
      launches: Number(out[0]),
      memops: Number(out[1]),
      syncs: Number(out[2]),
      gemms: Number(out[3]),
      graphLaunches: Number(out[4]),
      blocks: Number(out[5]),
    };
  } finally {
    h.close();
  }
}

/** What the emulated engine has run since it was loaded ({@linkcode emuLaunches}). */
export interface EmuLaunches {
  /** The LAUNCH sites whose kernel ran, as `file:line` from the project root, as
   * {@linkcode launchSites} gives them. */
  sites: Set<string>;
  /** The kernel instances that ran, by their offset in the library ({@linkcode kernelInstances}). */
  kernels: Set<number>;
}

/**
 * The LAUNCH sites, and the kernel instances, whose work the emulated engine at `lib` has run
 * since it was loaded (this process must have it open, as for {@linkcode emuCounters}). Work
 * only queued, or recorded into a graph never replayed, does not count.
 */
export function emuLaunches(lib: string): EmuLaunches {
  const h = Deno.dlopen(lib, {
    emu_launch_sites: { parameters: ["buffer", "u64"], result: "u64" },
  });
  try {
    let buf = new Uint8Array(1 << 15);
    const need = Number(h.symbols.emu_launch_sites(buf, BigInt(buf.length)));
    if (need > buf.length) {
      buf = new Uint8Array(need);
      h.symbols.emu_launch_sites(buf, BigInt(buf.length));
    }
    const out: EmuLaunches = { sites: new Set(), kernels: new Set() };
    for (const l of new TextDecoder().decode(buf.subarray(0, need - 1)).split("\n")) {
      if (!l) continue;
      const [site, off] = l.split("\t");
      // The compiler's path of the file, from the project root, e.g. engine/cuda/matmul.cuh:158.
      const at = site.lastIndexOf("/engine/");
      out.sites.add(at >= 0 ? site.slice(at + 1) : site);
      out.kernels.add(parseInt(off, 16));
    }
    return out;
  } finally {
    h.close();
  }
}

/**
 * Every kernel instance compiled into the emulated engine at `lib`, by its offset in the
 * library, with its name as `nm -C` gives it (template arguments included, parameters dropped):
 * the functions of namespace le named `*_kernel`, each template instance apart. A kernel that
 * this pattern misses still shows: the kernel tour fails on an instance run that it lacks.
 */
export function kernelInstances(lib: string): Map<number, string> {
  const out = new Deno.Command("nm", { args: ["-C", "--defined-only", lib], stdout: "piped" })
    .outputSync();
  if (!out.success) throw new Error(`nm -C ${lib} failed`);
  const kernels = new Map<number, string>();
  for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
    const m = /^([0-9a-f]+) [tTwW] (?:void )?(le::\w+_kernel(?:<[^()]*>)?)\(([^()]|\([^()]*\))*\)$/
      .exec(line);
    if (m) kernels.set(parseInt(m[1], 16), m[2]);
  }
  return kernels;
}

/**
 * Every LAUNCH site in the CUDA engine's source (engine/engine_cuda.cu and engine/cuda/), as
 * `file:line` from the project root (the line of its `LAUNCH(`), with the kernel as the site
 * spells it (outer parentheses and white space dropped, e.g. `gemv_bf16_kernel<float,true>`).
 */
export function launchSites(): Map<string, string> {
  const sites = new Map<string, string>();
  const srcs = [`${ENGINE}/engine_cuda.cu`, ...files(`${ENGINE}/cuda`, /\.cuh$/)];
  for (const f of srcs) {
    const text = Deno.readTextFileSync(f);
    // LAUNCH(kernel, ...) where kernel may be parenthesised and hold template arguments
    for (
      const m of text.matchAll(/\bLAUNCH\(\s*((?:\([^()]*(?:\([^()]*\)[^()]*)*\))|[^,]+?)\s*,/g)
    ) {
      if (m[1] === "kernel") continue; // the macro's own definition
      const line = text.slice(0, m.index).split("\n").length;
      let k = m[1].replace(/\s+/g, "");
      while (k.startsWith("(") && k.endsWith(")")) k = k.slice(1, -1);
      sites.set(`${f.slice(ROOT.length + 1)}:${line}`, k);
    }
  }
  return sites;
}
