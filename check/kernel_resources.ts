/**
 * The CUDA engine's kernels as the compiler built them: registers, spills, stack and static
 * shared memory of every kernel, from ptxas's report (`nvcc -cubin -Xptxas -v`), which needs
 * nvcc but no GPU. The host emulation runs the kernels' logic but models none of this, and it
 * is what decides whether a kernel runs at the speed its design assumes: a kernel that spills
 * registers goes through local memory in its loops, and one that takes more registers than
 * planned holds fewer warps a multiprocessor to hide its loads.
 *
 * {@linkcode SPILL_BUDGET} lists the kernels allowed to spill, with the most bytes each may
 * spill and why; every other kernel must spill nothing. `tests/kernel_resources_test.ts` holds
 * the engine to it, and a listed kernel that no longer spills must leave the list. It also holds
 * every kernel's PTX to waiting for the kernels before it first ({@linkcode pdlViolations}).
 *
 * As a script, prints the table (and writes it as JSON with `--json PATH`):
 *
 *   npx deno run -A check/kernel_resources.ts [--compiler PATH] [--arch 90] [--json PATH]
 *
 * @module
 */
import { parseArgs } from "node:util";

/** One kernel's resources, as ptxas reported them for one architecture. */
export interface KernelResources {
  /** The kernel's demangled name with its template arguments, without its parameters. */
  name: string;
  /** Its mangled (symbol) name. */
  symbol: string;
  registers: number;
  spillStoreBytes: number;
  spillLoadBytes: number;
  stackFrameBytes: number;
  /** Statically declared shared memory; dynamic shared memory is set per launch. */
  staticSmemBytes: number;
  /** Warps a multiprocessor can hold by registers alone (sm_90: 64 K registers, at most 64). */
  warpsBySM: number;
}

/** A kernel allowed to spill: the most bytes of spill stores, and why that is accepted. */
export interface SpillAllowance {
  maxStoreBytes: number;
  why: string;
}

const FWD = "the forward holds its output rows (16 x HSP), a tile's scores (16 x NC) and the " +
  "online softmax's state under 128 registers (four blocks of 4 warps a multiprocessor)";

/**
 * Kernels allowed to spill (ptxas for sm_90, nvcc 13), keyed by demangled name. Everything else
 * must spill nothing. The budgets sit a little above today's figures (the figures in brackets)
 * so that another nvcc release's register allocation does not fail the tests, while a change
 * that doubles a spill does.
 */
export const SPILL_BUDGET: Readonly<Record<string, SpillAllowance>> = {
  "le::attention_tc_fwd_kernel<128, float>": { maxStoreBytes: 16, why: `[4] ${FWD}` },
  "le::attention_tc_fwd_kernel<64, float>": { maxStoreBytes: 16, why: `[8] ${FWD}` },
};

/** Registers a multiprocessor has, and the warps it can hold (sm_90). */
const SM_REGISTERS = 65536, SM_MAX_WARPS = 64, REG_ALLOC_UNIT = 256;

/** Warps a multiprocessor holds when each thread takes `regs` registers (allocated per warp in
 * units of 256). */
export function warpsByRegisters(regs: number): number {
  if (regs <= 0) return SM_MAX_WARPS;
  const perWarp = Math.ceil((regs * 32) / REG_ALLOC_UNIT) * REG_ALLOC_UNIT;
  return Math.min(SM_MAX_WARPS, Math.floor(SM_REGISTERS / perWarp));
}

/** Error for a report that cannot be read: names the line and what was expected. */
export class KernelReportError extends Error {
  override name = "KernelReportError";
}

/**
 * Parses ptxas's verbose report (`-Xptxas -v`, stderr) into one entry per kernel, in report
 * order. `demangle` turns a symbol into its C++ name (c++filt; the symbol itself without it).
 * Device functions compiled apart (not entry points) are skipped.
 */
export function parsePtxasReport(
  text: string,
  demangle: (symbols: string[]) => string[] = (s) => s,
): KernelResources[] {
  type Partial = Omit<KernelResources, "name" | "warpsBySM"> & { seen: boolean };
  const out: Partial[] = [];
  let cur: Partial | null = null;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const entry = line.match(/Compiling entry function '([^']+)'/);
    if (entry) {
      cur = {
        symbol: entry[1],
        registers: 0,
        spillStoreBytes: 0,
        spillLoadBytes: 0,
        stackFrameBytes: 0,
        staticSmemBytes: 0,
        seen: false,
      };
      out.push(cur);
      continue;
    }
    if (!cur) continue;
    const spill = line.match(
      /(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads/,
    );
    if (spill) {
      cur.stackFrameBytes = Number(spill[1]);
      cur.spillStoreBytes = Number(spill[2]);
      cur.spillLoadBytes = Number(spill[3]);
      continue;
    }
    const used = line.match(/Used (\d+) registers/);
    if (used) {
      cur.registers = Number(used[1]);
      const smem = line.match(/(\d+) bytes smem/);
      cur.staticSmemBytes = smem ? Number(smem[1]) : 0;
      cur.seen = true;
    }
  }
  const missing = out.find((k) => !k.seen);
  if (missing) {
    throw new KernelReportError(
      `ptxas report: the entry ${missing.symbol} has no "Used N registers" line; was it ` +
        `compiled with -Xptxas -v?`,
    );
  }
  const names = demangle(out.map((k) => k.symbol));
  return out.map(({ seen: _, ...k }, i) => ({
    name: names[i].replace(/\(.*$/, "").replace(/^void /, ""),
    ...k,
    warpsBySM: warpsByRegisters(k.registers),
  }));
}

/** Demangles with c++filt (binutils); the symbols unchanged where it is missing. */
export function cxxFilt(symbols: string[]): string[] {
  if (symbols.length === 0) return [];
  try {
    const out = new Deno.Command("c++filt", { args: symbols, stdout: "piped", stderr: "null" })
      .outputSync();
    const names = new TextDecoder().decode(out.stdout).trimEnd().split("\n");
    if (out.success && names.length === symbols.length) return names;
  } catch { /* not installed */ }
  return symbols;
}

/** Where nvcc is: PATH, then /usr/local/cuda/bin; null when neither has it. */
export function findNvcc(): string | null {
  for (const d of [...(Deno.env.get("PATH") ?? "").split(":"), "/usr/local/cuda/bin"]) {
    try {
      if (d && Deno.statSync(`${d}/nvcc`).isFile) return `${d}/nvcc`;
    } catch { /* not here */ }
  }
  return null;
}

const ENGINE_SOURCE = new URL("../engine/engine_cuda.cu", import.meta.url).pathname;

/**
 * Compiles the CUDA engine's kernels for one architecture (a cubin, as the engine's build
 * compiles them: -O3 -lineinfo) and returns ptxas's report of each, and the PTX it compiled
 * from. About 20 s on two cores. Throws a KernelReportError that names the compiler's message
 * when it fails.
 */
export function compileKernels(
  opts: { compiler?: string; arch?: number } = {},
): { kernels: KernelResources[]; ptx: string } {
  const nvcc = opts.compiler ?? findNvcc();
  if (!nvcc) {
    throw new KernelReportError("nvcc not found: install the CUDA toolkit or pass --compiler");
  }
  const arch = opts.arch ?? 90;
  const dir = Deno.makeTempDirSync({ prefix: "lotus_kernels_" });
  try {
    const out = new Deno.Command(nvcc, {
      args: [
        "-O3",
        "-lineinfo",
        "-cubin",
        "-gencode",
        `arch=compute_${arch},code=sm_${arch}`,
        "-Xptxas",
        "-v",
        "--keep",
        "--keep-dir",
        dir,
        "-o",
        `${dir}/engine.cubin`,
        ENGINE_SOURCE,
      ],
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    const err = new TextDecoder().decode(out.stderr);
    if (!out.success) {
      throw new KernelReportError(`${nvcc} failed to compile ${ENGINE_SOURCE}:\n${err}`);
    }
    const ptxFile = [...Deno.readDirSync(dir)].find((e) => e.name.endsWith(".ptx"));
    if (!ptxFile) throw new KernelReportError(`${nvcc} --keep left no PTX file in ${dir}`);
    return {
      kernels: parsePtxasReport(err, cxxFilt),
      ptx: Deno.readTextFileSync(`${dir}/${ptxFile.name}`),
    };
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

/** {@linkcode compileKernels}'s report alone. */
export function compileKernelReport(
  opts: { compiler?: string; arch?: number } = {},
): KernelResources[] {
  return compileKernels(opts).kernels;
}

/**
 * Instructions a kernel may run before its `griddepcontrol.wait`: parameter loads, moves,
 * conversions, arithmetic and comparisons, none of which touches memory or branches.
 */
const BEFORE_WAIT = new Set([
  "abs",
  "add",
  "and",
  "bfe",
  "bfi",
  "brev",
  "clz",
  "cnot",
  "copysign",
  "cvt",
  "cvta",
  "div",
  "fma",
  "mad",
  "mad24",
  "max",
  "min",
  "mov",
  "mul",
  "mul24",
  "neg",
  "not",
  "or",
  "popc",
  "prmt",
  "rem",
  "sad",
  "selp",
  "setp",
  "shl",
  "shr",
  "sub",
  "xor",
]);

/**
 * Every kernel of the engine begins with pdl_begin() (engine/cuda/common.cuh): it must wait
 * for the kernels it depends on (`griddepcontrol.wait`) before it touches memory, since with
 * programmatic dependent launch its blocks may start while the kernel before it still runs.
 * Checks each entry of `ptx` in instruction order: before its first `griddepcontrol.wait`
 * only {@linkcode BEFORE_WAIT}'s instructions and parameter loads (`ld.param`) may come, and
 * the wait itself must not be predicated. Returns the entries read and one message per kernel
 * that breaks this (none for the engine), each naming the kernel and the first offending
 * instruction. This reads PTX: that ptxas keeps the order is the instruction's contract.
 */
export function pdlViolations(
  ptx: string,
  demangle: (symbols: string[]) => string[] = (s) => s,
): { entries: number; bad: string[] } {
  const entries = [...ptx.matchAll(/\.entry\s+([\w$]+)\s*\(/g)];
  const names = demangle(entries.map((m) => m[1]))
    .map((n) => n.replace(/\(.*$/, "").replace(/^void /, ""));
  const bad: string[] = [];
  const fix = "begin the kernel with pdl_begin() (engine/cuda/common.cuh)";
  entries.forEach((m, i) => {
    const start = ptx.indexOf("{", m.index!) + 1;
    const end = i + 1 < entries.length ? entries[i + 1].index! : ptx.length;
    const body = ptx.slice(start, end).replace(/\/\/[^\n]*/g, "");
    let verdict: string | null = `never calls griddepcontrol.wait: ${fix}`;
    for (const raw of body.split(/[;\n]/)) {
      const ins = raw.replace(/[{}]/g, "").trim();
      if (!ins || ins.startsWith(".") || ins.endsWith(":")) continue; // declarations, labels
      const pred = ins.match(/^@!?%\w+\s+/);
      const op = ins.slice(pred ? pred[0].length : 0).split(/\s/)[0];
      if (op === "griddepcontrol.wait") {
        verdict = pred ? `"${ins}": the wait is predicated: ${fix}` : null;
        break;
      }
      if (op.startsWith("ld.param") || BEFORE_WAIT.has(op.split(".")[0])) continue;
      verdict = `"${ins}" comes before griddepcontrol.wait: ${fix}`;
      break;
    }
    if (verdict) bad.push(`${names[i]}: ${verdict}`);
  });
  return { entries: entries.length, bad };
}

/** A kernel outside its spill budget, or a budget entry no kernel needs: what to do. */
export function spillViolations(
  kernels: KernelResources[],
  budget: Readonly<Record<string, SpillAllowance>> = SPILL_BUDGET,
): string[] {
  const bad: string[] = [];
  for (const k of kernels) {
    const allow = budget[k.name]?.maxStoreBytes ?? 0;
    if (k.spillStoreBytes > allow) {
      bad.push(
        `${k.name} spills ${k.spillStoreBytes} bytes (${k.registers} registers), over its ` +
          `budget of ${allow}: free registers in the kernel, or list it in SPILL_BUDGET ` +
          `(check/kernel_resources.ts) with the reason`,
      );
    }
  }
  for (const name of Object.keys(budget)) {
    const k = kernels.find((x) => x.name === name);
    if (!k) bad.push(`SPILL_BUDGET lists ${name}, which the engine no longer has: remove it`);
    else if (k.spillStoreBytes === 0) {
      bad.push(`SPILL_BUDGET lists ${name}, which no longer spills: remove it`);
    }
  }
  return bad;
}

/** The report as a fixed-width table, one kernel a line, sorted by name. */
export function formatKernelTable(kernels: KernelResources[]): string {
  const rows = [...kernels].sort((a, b) => a.name.localeCompare(b.name));
  const w = Math.max(6, ...rows.map((k) => k.name.length));
  const head = `${"kernel".padEnd(w)}  regs  warps/SM  spill st/ld  stack  smem`;
  const lines = rows.map((k) =>
    `${k.name.padEnd(w)}  ${String(k.registers).padStart(4)}  ${String(k.warpsBySM).padStart(8)}  ${
      `${k.spillStoreBytes}/${k.spillLoadBytes}`.padStart(11)
    }  ${String(k.stackFrameBytes).padStart(5)}  ${String(k.staticSmemBytes).padStart(4)}`
  );
  return [head, ...lines].join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      compiler: { type: "string" },
      arch: { type: "string", default: "90" },
      json: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(
      "usage: deno run -A check/kernel_resources.ts [--compiler PATH] [--arch 90] [--json PATH]",
    );
    Deno.exit(0);
  }
  const arch = Number(values.arch);
  if (!Number.isInteger(arch) || arch < 80) {
    console.error(
      `kernel_resources: --arch ${values.arch}: give a compute capability of 80 or more, like 90 ` +
        "(the kernels use cp.async and bf16 tensor-core products)",
    );
    Deno.exit(2);
  }
  try {
    const { kernels, ptx } = compileKernels({ compiler: values.compiler, arch });
    console.log(formatKernelTable(kernels));
    const bad = arch === 90 ? spillViolations(kernels) : [];
    const pdl = pdlViolations(ptx, cxxFilt);
    console.log(
      `${kernels.length} kernels for sm_${arch}; ` +
        `${kernels.filter((k) => k.spillStoreBytes > 0).length} spill` +
        (bad.length ? `; ${bad.length} outside the budget:\n${bad.join("\n")}` : ""),
    );
    console.log(
      `${pdl.entries - pdl.bad.length} of ${pdl.entries} kernels wait (griddepcontrol.wait) ` +
        "before touching memory" + (pdl.bad.length ? `:\n${pdl.bad.join("\n")}` : ""),
    );
    bad.push(...pdl.bad);
    if (values.json) {
      const tmp = `${values.json}.tmp`;
      Deno.writeTextFileSync(tmp, JSON.stringify({ arch, kernels }, null, 1) + "\n");
      Deno.renameSync(tmp, values.json);
    }
    if (bad.length) Deno.exit(1);
  } catch (e) {
    if (e instanceof KernelReportError) {
      console.error(`kernel_resources: ${e.message}`);
      Deno.exit(1);
    }
    throw e;
  }
}
