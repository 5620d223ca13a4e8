/**
 * Builds the native engine (engine/lotus_engine.h) into a shared library under
 * `build/`, only when needed.
 *
 * The file name carries a hash of everything that decides the library's bits: the backend,
 * the compiler's `--version` output, every flag, the source files' contents and, for a
 * `-march=native` build, the CPU's model name and feature flags. Nothing that names this
 * machine enters it (not the compiler's path, nor the checkout's: flags are hashed with the
 * source directory written as `<src>`), so a CUDA library built on one machine is found by
 * the same name on another with the same nvcc version and sources. A changed source or flag
 * therefore gives a new file name, and a stale library is never loaded. The library is
 * compiled to a temporary file and renamed into place, because overwriting a .so that a
 * running Deno has dlopen'd can crash it.
 *
 * `deno task build-engine` (cli/build_engine.ts) is the command line over it.
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import type { BackendName } from "./types.ts";

/** Options of {@linkcode buildEngine} and {@linkcode planEngineBuild}. */
export interface BuildEngineOptions {
  /** "cpu" (default): g++ and OpenMP. "cuda": nvcc, needs engine/engine_cuda.cu. */
  backend?: Exclude<BackendName, "auto">;
  /** Rebuild even when the library for this hash already exists. */
  force?: boolean;
  /** Print nothing (otherwise a line goes to stderr when a build actually runs). */
  quiet?: boolean;
  /** Where libraries go. Default: `build/` at the repository root. */
  outDir?: string;
  /** Where the sources are. Default: this module's directory. */
  sourceDir?: string;
  /** Compiler executable. Default: $CXX or `g++` (cpu); `nvcc` on PATH or
   * /usr/local/cuda/bin/nvcc (cuda). */
  compiler?: string;
  /** Extra compiler flags, appended after the standard ones (they enter the hash). */
  extraFlags?: string[];
}

/** What {@linkcode buildEngine} would run, and where the library would land. */
export interface EngineBuildPlan {
  /** The backend built. */
  backend: Exclude<BackendName, "auto">;
  /** The compiler executable. */
  compiler: string;
  /** Compiler arguments, without `-o <output>` and the source file. */
  flags: string[];
  /** The main source file (the headers it includes are hashed too: lotus_engine.h,
   * engine_checks.h, comm_mpi.h and, for cuda, everything under cuda/). */
  source: string;
  /** Every file whose contents enter the hash. */
  hashedFiles: string[];
  /** The library's final path. */
  outPath: string;
  /** The full hex hash; its first 16 digits are in the file name. */
  hash: string;
}

/**
 * The signals that stop a command (base/signals.ts's STOP_SIGNALS, which the engine, importing
 * nothing of the project, repeats; a test holds the two equal): a compiler they end is stopped,
 * not failed.
 */
export const BUILD_STOP_SIGNALS: readonly Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];

/** The engine cannot be built: a missing compiler or source, or a compile error. */
export class EngineBuildError extends Error {
  /** The command that failed, as one shell-quoted line (empty when nothing ran). */
  readonly command: string;
  /** The compiler's stderr (empty when nothing ran). */
  readonly stderr: string;
  /** A build error; `command` and `stderr` are empty when nothing ran. */
  constructor(message: string, command = "", stderr = "") {
    super(message);
    this.name = "EngineBuildError";
    this.command = command;
    this.stderr = stderr;
  }
}

const CPU_SOURCE = "engine_cpu.cpp";
const CUDA_SOURCE = "engine_cuda.cu";
const HEADER = "lotus_engine.h";
/** The argument checks and block registry that both engines include. */
const CHECKS = "engine_checks.h";
/** The MPI collectives that both engines include (libmpi is dlopen'd at run time). */
const COMM = "comm_mpi.h";

// -ffp-contract=fast: the micro-kernels rely on a*b+c becoming one FMA (faster, and one
// rounding instead of two); ISO mode (-std=c++17) would otherwise forbid the contraction.
// -Wl,-z,nodelete: Engine.close() dlcloses the library; if that unloaded libgomp while its
// worker threads are parked, the process would crash. With nodelete the library (and so
// libgomp) stays mapped, and reopening the same path reuses it.
const CPU_FLAGS = [
  "-O3",
  "-std=c++17",
  "-fopenmp",
  "-fPIC",
  "-shared",
  "-ffp-contract=fast",
  "-Wl,-z,nodelete",
];
// -fvisibility=hidden plus the version script cuda/exports.map: only the le_* functions are
// exported, not the static CUDA runtime or C++ template instantiations. -z nodelete, as for
// the CPU library: Engine.close() must not unload the static CUDA runtime, whose state (and
// the engine's device, stream and cuBLAS handle) a later openEngine reuses.
// -lineinfo: source lines for compute-sanitizer and profilers, at no cost to the code.
const CUDA_FLAGS = [
  "-O3",
  "-lineinfo",
  "-shared",
  "-Xcompiler",
  "-fPIC",
  "-cudart",
  "static",
  "-gencode",
  "arch=compute_90,code=[sm_90,compute_90]",
  "-ldl",
  "-Xcompiler",
  "-fvisibility=hidden",
  "-Xlinker",
  "-z,nodelete",
];
/** The CUDA engine's kernel families and its linker version script, under sourceDir. */
const CUDA_DIR = "cuda";
const CUDA_EXPORTS = "cuda/exports.map";

function dirOfThisModule(): string {
  const url = new URL(".", import.meta.url);
  if (url.protocol !== "file:") {
    throw new EngineBuildError(
      `the engine can only be built from a local copy of lotus-deno (this module was loaded ` +
        `from ${url.href}); clone the repository, or pass sourceDir and outDir`,
    );
  }
  return decodeURIComponent(url.pathname).replace(/\/$/, "");
}

/** Resolves "." and ".." segments of a path. */
function normalize(path: string): string {
  const abs = path.startsWith("/");
  const out: string[] = [];
  for (const seg of path.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg !== "..") out.push(seg);
    else if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
    else if (!abs) out.push("..");
  }
  return (abs ? "/" : "") + out.join("/") || ".";
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * The debug build's flags: LOTUS_ENGINE_SANITIZE=address,undefined (any list that g++'s
 * -fsanitize takes) compiles the CPU engine with those sanitizers, frame pointers and debug
 * information, under its own hash. A process that loads an AddressSanitizer build must
 * preload the runtime: `LD_PRELOAD=$(g++ -print-file-name=libasan.so)`. docs/engine.md shows
 * the command that runs the engine tests this way.
 */
function sanitizerFlags(): string[] {
  const s = envVar("LOTUS_ENGINE_SANITIZE");
  if (!s) return [];
  if (!/^[a-z,-]+$/.test(s)) {
    throw new EngineBuildError(
      `LOTUS_ENGINE_SANITIZE="${s}": give g++ sanitizer names, e.g. address,undefined`,
    );
  }
  return [`-fsanitize=${s}`, "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"];
}

function envVar(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env: behave as if unset
  }
}

/**
 * `exe` in the first directory of PATH that holds it. As a shell does, an entry this user may
 * not search, or one that is not a directory, is passed over; a missing --allow-read is thrown.
 */
function findOnPath(exe: string): string | undefined {
  for (const dir of (envVar("PATH") ?? "").split(":")) {
    if (!dir) continue;
    try {
      Deno.statSync(`${dir}/${exe}`);
      return `${dir}/${exe}`;
    } catch (e) {
      if (e instanceof Deno.errors.NotCapable) throw e;
    }
  }
  return undefined;
}

/** Shell-quoted command line, for error messages a user can paste into a terminal. */
function commandLine(cmd: string, args: string[]): string {
  const q = (s: string) => /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
  return [cmd, ...args].map(q).join(" ");
}

const versionCache = new Map<string, string>();

/**
 * What identifies a compiler executable without running it: its real path, size and
 * modification time. undefined when it cannot be found or read.
 */
function compilerKey(compiler: string): string | undefined {
  const path = compiler.includes("/") ? compiler : findOnPath(compiler);
  if (!path) return undefined;
  try {
    const real = Deno.realPathSync(path);
    const st = Deno.statSync(real);
    return `${real}\0${st.size}\0${st.mtime?.getTime() ?? 0}`;
  } catch {
    return undefined;
  }
}

/** The file in the build directory that remembers each compiler's `--version` output. */
const COMPILERS_FILE = "compilers.json";

function readCompilerCache(outDir: string): Record<string, string> {
  try {
    const o = JSON.parse(Deno.readTextFileSync(`${outDir}/${COMPILERS_FILE}`));
    return o && typeof o === "object" && !Array.isArray(o) ? o : {};
  } catch {
    return {};
  }
}

/**
 * The compiler's `--version` output, which enters the library's hash. It is remembered in
 * the build directory under the compiler's path, size and date, so that opening an engine
 * that is already built runs no compiler at all (`deno task train` needs --allow-run only
 * when a build is due).
 */
function compilerVersion(compiler: string, hint: string, outDir: string): string {
  const key = compilerKey(compiler);
  const memo = key ?? compiler;
  const cached = versionCache.get(memo);
  if (cached !== undefined) return cached;
  const known = key === undefined ? undefined : readCompilerCache(outDir)[key];
  if (known !== undefined) {
    versionCache.set(memo, known);
    return known;
  }
  let out: Deno.CommandOutput;
  try {
    out = new Deno.Command(compiler, { args: ["--version"], stdout: "piped", stderr: "piped" })
      .outputSync();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new EngineBuildError(`compiler not found: ${compiler}; ${hint}`);
    }
    if (e instanceof Deno.errors.NotCapable) {
      throw new EngineBuildError(
        `could not run ${compiler}: ${e.message}${builtNotMatched(outDir)}`,
        commandLine(compiler, ["--version"]),
      );
    }
    throw e;
  }
  if (!out.success) {
    throw new EngineBuildError(
      `${compiler} --version failed (exit ${out.code}); ${hint}`,
      commandLine(compiler, ["--version"]),
      new TextDecoder().decode(out.stderr),
    );
  }
  const version = new TextDecoder().decode(out.stdout).trim();
  versionCache.set(memo, version);
  if (exists(outDir)) rememberCompilerVersion(compiler, outDir);
  return version;
}

/**
 * Writes the compiler's `--version` output, asked earlier in this process, into the build
 * directory's cache unless it is there already. A build calls it once it has built: the
 * first build in a fresh checkout asks the compiler before the directory exists, and the next
 * process would otherwise ask again.
 */
function rememberCompilerVersion(compiler: string, outDir: string): void {
  const key = compilerKey(compiler);
  const version = versionCache.get(key ?? compiler);
  if (key === undefined || version === undefined) return;
  const known = readCompilerCache(outDir);
  if (known[key] === version) return;
  const tmp = `${outDir}/${COMPILERS_FILE}.tmp-${Deno.pid}`;
  try {
    Deno.writeTextFileSync(tmp, JSON.stringify({ ...known, [key]: version }, null, 2) + "\n");
    Deno.renameSync(tmp, `${outDir}/${COMPILERS_FILE}`);
  } catch { /* a read-only build directory: ask the compiler again next time */ }
}

/**
 * Why a library already built in `outDir` may not have been found, for the error of a compiler
 * Deno may not run: the library's name is the hash of what was read with permissions this
 * process lacks (the CPU's identity by `cat /proc/cpuinfo`, the compiler's place on PATH),
 * so a process without them looks for another file and turns to the compiler. Empty when
 * both are granted.
 */
function builtNotMatched(outDir: string): string {
  const granted = (d: Deno.PermissionDescriptor) => {
    try {
      return Deno.permissions.querySync(d).state === "granted";
    } catch {
      return true; // a descriptor this Deno does not know: nothing to say
    }
  };
  const missing = [
    // Deno reads /proc only under --allow-all, which grants `cat` too.
    ...(granted({ name: "run", command: "cat" })
      ? []
      : ["--allow-run=cat (the CPU's identity, from /proc/cpuinfo)"]),
    ...(granted({ name: "env", variable: "PATH" })
      ? []
      : ["--allow-env=PATH (where the compiler is)"]),
  ];
  if (missing.length === 0) return "";
  return `; an engine already built in ${outDir} is found only with ${missing.join(" and ")}: ` +
    `grant ${missing.length === 1 ? "it" : "them"}, or grant --allow-run for the compiler ` +
    `to build one`;
}

/**
 * The CPU's identity for the hash key of a `-march=native` build: its model name and its
 * feature flags from /proc/cpuinfo. `undefined` when they cannot be read (then the build is
 * portable instead).
 */
function cpuIdentity(): string | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/cpuinfo");
  } catch {
    // Deno grants /proc only with --allow-all; the build runs processes anyway.
    try {
      const out = new Deno.Command("cat", { args: ["/proc/cpuinfo"], stdout: "piped" })
        .outputSync();
      if (!out.success) return undefined;
      text = new TextDecoder().decode(out.stdout);
    } catch {
      return undefined;
    }
  }
  const field = (name: string) =>
    text.split("\n").find((l) => l.startsWith(name))?.split(":").slice(1).join(":").trim();
  const model = field("model name") ?? field("Model") ?? field("CPU part");
  const flags = field("flags") ?? field("Features");
  if (model === undefined || flags === undefined) return undefined;
  return `model=${model}\nflags=${flags}`;
}

/**
 * Works out what {@linkcode buildEngine} would compile and where the library would land,
 * without compiling anything. Throws {@linkcode EngineBuildError} when the compiler or a
 * source is missing.
 *
 * `-march=native` is used only when the CPU can be identified: the library is built on the
 * machine that runs it, but `build/` may be copied to another machine (the GPU machine, a
 * colleague's laptop). Because the CPU's model name and feature flags are part of the hash,
 * a library built for one CPU has a file name that no other CPU computes, so another machine
 * builds its own instead of loading code with instructions it may lack.
 *
 * @example
 * ```ts
 * import { planEngineBuild } from "./build.ts";
 * const plan = planEngineBuild({ backend: "cpu" });
 * console.log(plan.outPath); // .../build/liblotus_engine_cpu-0123456789abcdef.so
 * ```
 */
export function planEngineBuild(opts: BuildEngineOptions = {}): EngineBuildPlan {
  try {
    return planBuild(opts);
  } catch (e) {
    // A missing --allow-read for the checkout: Deno's own words (the CLI names the flag by
    // them), and the directory to grant, in full, as for --allow-ffi (ffi.ts).
    if (e instanceof Deno.errors.NotCapable && /Requires read access/.test(e.message)) {
      const root = normalize(`${opts.sourceDir ?? dirOfThisModule()}/..`);
      throw new Deno.errors.NotCapable(
        `${e.message}; grant --allow-read=${root} (lotus-deno's checkout: the engine's ` +
          `sources and build/)`,
        { cause: e },
      );
    }
    throw e;
  }
}

/** {@linkcode planEngineBuild}, with Deno's refusals as they are. */
function planBuild(opts: BuildEngineOptions): EngineBuildPlan {
  const backend = opts.backend ?? "cpu";
  if (backend !== "cpu" && backend !== "cuda") {
    throw new EngineBuildError(`unknown backend "${backend}": use "cpu" or "cuda"`);
  }
  const sourceDir = opts.sourceDir ?? dirOfThisModule();
  const outDir = opts.outDir ?? normalize(`${sourceDir}/../build`);
  const source = `${sourceDir}/${backend === "cpu" ? CPU_SOURCE : CUDA_SOURCE}`;
  if (!exists(source)) {
    throw new EngineBuildError(
      backend === "cuda"
        ? `the CUDA engine's source ${source} does not exist; is this a complete checkout? ` +
          `Or use --backend cpu`
        : `the CPU engine's source ${source} does not exist; is this a complete checkout?`,
    );
  }
  const header = `${sourceDir}/${HEADER}`;
  if (!exists(header)) {
    throw new EngineBuildError(`the engine's header ${header} does not exist`);
  }
  const checks = `${sourceDir}/${CHECKS}`;
  if (!exists(checks)) {
    throw new EngineBuildError(
      `the engines' shared checks ${checks} do not exist; is this a complete checkout?`,
    );
  }

  let compiler: string;
  let flags: string[];
  let hint: string;
  let cpu: string | undefined;
  if (backend === "cpu") {
    compiler = opts.compiler ?? envVar("CXX") ?? "g++";
    hint = "install a C++17 compiler with OpenMP (Debian/Ubuntu: apt-get install g++) " +
      "or set CXX";
    cpu = cpuIdentity();
    flags = [
      ...CPU_FLAGS,
      ...(cpu ? ["-march=native"] : []),
      ...sanitizerFlags(),
      ...(opts.extraFlags ?? []),
    ];
  } else {
    compiler = opts.compiler ?? findOnPath("nvcc") ??
      (exists("/usr/local/cuda/bin/nvcc") ? "/usr/local/cuda/bin/nvcc" : "nvcc");
    hint = "install the CUDA toolkit (nvcc) and put it on PATH, or pass compiler";
    flags = [
      ...CUDA_FLAGS,
      "-Xlinker",
      `--version-script=${sourceDir}/${CUDA_EXPORTS}`,
      ...(opts.extraFlags ?? []),
    ];
  }
  const version = compilerVersion(compiler, hint, outDir);

  const hashedFiles = [source, header, checks];
  if (exists(`${sourceDir}/${COMM}`)) hashedFiles.push(`${sourceDir}/${COMM}`);
  if (backend === "cuda") hashedFiles.push(...cudaParts(sourceDir));
  const h = sha256.create();
  const utf8 = new TextEncoder();
  const part = (name: string, data: string | Uint8Array) => {
    h.update(utf8.encode(`${name}\0${typeof data === "string" ? data.length : data.byteLength}\0`));
    h.update(typeof data === "string" ? utf8.encode(data) : data);
  };
  part("backend", backend);
  part("version", version);
  part("flags", JSON.stringify(flags.map((f) => f.replaceAll(sourceDir, "<src>"))));
  part("cpu", cpu ?? "");
  for (const f of hashedFiles) part(f.slice(sourceDir.length + 1), Deno.readFileSync(f));
  const hash = bytesToHex(h.digest());
  const outPath = `${outDir}/liblotus_engine_${backend}-${hash.slice(0, 16)}.so`;
  return { backend, compiler, flags, source, hashedFiles, outPath, hash };
}

/** The files under cuda/ that the CUDA engine includes or links with, sorted. */
function cudaParts(sourceDir: string): string[] {
  const dir = `${sourceDir}/${CUDA_DIR}`;
  const files: string[] = [];
  try {
    for (const e of Deno.readDirSync(dir)) {
      if (e.isFile && /\.(cuh|map)$/.test(e.name)) files.push(`${dir}/${e.name}`);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (!files.includes(`${sourceDir}/${CUDA_EXPORTS}`)) {
    throw new EngineBuildError(
      `the CUDA engine's linker script ${sourceDir}/${CUDA_EXPORTS} does not exist; is this ` +
        `a complete checkout?`,
    );
  }
  return files.sort();
}

let tmpCounter = 0;

/**
 * Builds the engine library if it is not built yet (or `force`), and returns its path.
 * Throws {@linkcode EngineBuildError} with the compiler's stderr and the command line when
 * compilation fails.
 *
 * @example
 * ```ts
 * import { buildEngine } from "./build.ts";
 * const lib = buildEngine({ quiet: true }); // compiles once (a few seconds), then cached
 * console.log(lib);
 * ```
 */
export function buildEngine(opts: BuildEngineOptions = {}): string {
  const plan = planEngineBuild(opts);
  if (!opts.force && exists(plan.outPath)) return plan.outPath;
  const outDir = plan.outPath.slice(0, plan.outPath.lastIndexOf("/"));
  try {
    Deno.mkdirSync(outDir, { recursive: true });
  } catch (e) {
    if (!(e instanceof Deno.errors.NotCapable)) throw e;
    throw new EngineBuildError(
      `cannot build the ${plan.backend} engine in ${outDir}: ${e.message}${
        builtNotMatched(outDir)
      }`,
    );
  }
  const tmp = `${plan.outPath}.tmp-${Deno.pid}-${++tmpCounter}`;
  const args = [...plan.flags, "-o", tmp, plan.source];
  const cmd = commandLine(plan.compiler, args);
  if (!opts.quiet) console.error(`build-engine: ${cmd}`);
  const t0 = performance.now();
  let out: Deno.CommandOutput;
  try {
    out = new Deno.Command(plan.compiler, { args, stdout: "piped", stderr: "piped" })
      .outputSync();
  } catch (e) {
    removeQuietly(tmp);
    const why = e instanceof Deno.errors.NotCapable ? builtNotMatched(outDir) : "";
    throw new EngineBuildError(
      `could not run ${plan.compiler}: ${(e as Error).message}${why}`,
      cmd,
    );
  }
  if (!out.success && out.signal !== null && BUILD_STOP_SIGNALS.includes(out.signal)) {
    // Ctrl-C reaches the compiler too: a stopped build is not a failed one (a crash, or the
    // out-of-memory killer's SIGKILL, is).
    removeQuietly(tmp);
    throw new EngineBuildError(
      `the ${plan.backend} engine's build was stopped by ${out.signal}: nothing was built; ` +
        `run the command again to build it`,
      cmd,
    );
  }
  if (!out.success) {
    removeQuietly(tmp);
    const stderr = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    const how = out.signal === null ? `exit ${out.code}` : `killed by ${out.signal}`;
    throw new EngineBuildError(
      `the ${plan.backend} engine failed to compile (${how}).\ncommand: ${cmd}\n` +
        stderr.trimEnd(),
      cmd,
      stderr,
    );
  }
  try {
    Deno.renameSync(tmp, plan.outPath);
  } catch (e) {
    removeQuietly(tmp);
    throw e;
  }
  rememberCompilerVersion(plan.compiler, outDir);
  if (!opts.quiet) {
    console.error(
      `build-engine: built ${plan.outPath} in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
  }
  return plan.outPath;
}

function removeQuietly(path: string): void {
  try {
    Deno.removeSync(path);
  } catch { /* never created */ }
}
