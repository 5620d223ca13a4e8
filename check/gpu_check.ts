/**
 * The GPU check: builds the CUDA engine and compares it with the CPU engine, loaded in the
 * same process, then with the PyTorch reference (check/torch_reference.py) and Hugging Face's
 * GPT2LMHeadModel. docs/gpu-check.md says what each check does and how to run it; the one
 * command is `npx deno task test:gpu` (bash check/gpu_check.sh, which adds a time limit).
 *
 *   npx deno run --allow-all check/gpu_check.ts [--out DIR] [--steps 50] [--cycles 100]
 *                                          [--engine-lib PATH] [--cpu-only] [--emulate]
 *                                          [--sanitize] [--skip-torch] [--python python3]
 *                                          [--preflight]
 *
 * It can only pass on a GPU: without a usable GPU, or when the CUDA engine cannot be built
 * or loaded, it fails (exit status 1). --engine-lib PATH (or LOTUS_CUDA_LIB) uses a CUDA
 * library built elsewhere instead of building one. The first line on stdout names the device,
 * driver, runtime and the cuBLAS file loaded; the table comes last; report.json (in --out,
 * default $OUT when set, else out/gpu_check) holds every number. Dry runs, asked for
 * explicitly, check the check's own logic: --cpu-only lets the CPU engine stand in for the
 * CUDA engine (fp32 only); --emulate uses the CUDA engine's own source compiled for CPU
 * threads (check/cuda_emu), at every precision. Their rows say what stood in. --sanitize (with
 * --emulate) builds that emulation with AddressSanitizer and UBSan, so that a kernel's access
 * past a device buffer's ends or off a vector's alignment stops the check with a report naming
 * its line; the check runs itself again with libasan preloaded when it is not.
 *
 * --preflight checks only what a bf16 benchmark relies on, in a few seconds: the ops, the LOTUS
 * steps and the CUDA graphs' replays in bf16, with the engine settings of the environment
 * (`LOTUS_PDL=0` and the like, docs/gpu-bench.md). bench/gpu_all.sh runs it first, and again with
 * changes turned off when it fails, so that a change that fails on a GPU does not also cost the
 * benchmark's figures.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { writeTorchCase } from "./torch_case.ts";
import { compareBf16Storage } from "./bf16_storage.ts";
import { buildCudaEmu, ensureAsanPreloaded } from "./cuda_emu.ts";
import { buildEngine, EngineBuildError } from "../engine/build.ts";
import { type Engine, openEngine, type Precision, PRECISIONS } from "../engine/ffi.ts";
import { cudaMemInfo, probeCuda } from "../engine/cuda_probe.ts";
import { GPT2_ATTN_STATS_CASES, GPT2_OP_CASES, REAL_STEP_SPEC } from "./parity_shapes.ts";
import {
  type CheckRow,
  checkRow,
  compareAttentionSettings,
  compareDeferredGeluBwd,
  compareDeferredGeluFwd,
  compareDeferredNormFwd,
  compareFewRowForwards,
  compareGraphReplay,
  compareLotusStep,
  compareMicroBatches,
  compareOps,
  compareSkinnyForwards,
  compareStepGraphs,
  compareStepSettings,
  compareTraining,
  type Curve,
  errorRow,
  formatTable,
  LLAMA_STEP_SPEC,
  memoryCycles,
  OP_CASES,
  skippedRow,
  STEP_SPECS,
  summarizeOps,
  tally,
  TOLERANCES,
  trainCurve,
} from "./parity.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    out: { type: "string" },
    steps: { type: "string", default: "50" },
    cycles: { type: "string", default: "100" },
    "cpu-only": { type: "boolean", default: false },
    "engine-lib": { type: "string" },
    emulate: { type: "boolean", default: false },
    sanitize: { type: "boolean", default: false },
    "skip-torch": { type: "boolean", default: false },
    python: { type: "string", default: "python3" },
    preflight: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
  strict: true,
});
if (a.help) {
  console.log(
    "deno run --allow-all check/gpu_check.ts [--out DIR] [--steps 50] [--cycles 100] " +
      "[--engine-lib PATH] [--cpu-only] [--emulate] [--sanitize] [--skip-torch] " +
      "[--python python3] [--preflight]",
  );
  Deno.exit(0);
}
if (a.sanitize && !a.emulate) {
  console.error("gpu-check: --sanitize sanitizes the host emulation: give it with --emulate");
  Deno.exit(2);
}
if (a.sanitize) await ensureAsanPreloaded(import.meta.url, (s) => console.error(`gpu-check: ${s}`));

const t0 = performance.now();
const secs = (since: number) => `${((performance.now() - since) / 1000).toFixed(1)} s`;
const rows: CheckRow[] = [];
const detail: Record<string, unknown> = {};
const outDir = a.out ?? (Deno.env.get("OUT") ? Deno.env.get("OUT")! : "out/gpu_check");
const steps = Number(a.steps), cycles = Number(a.cycles);
const log = (s: string) => console.error(`gpu-check: ${s}`);
Deno.mkdirSync(outDir, { recursive: true });
const rowsFile = `${outDir}/rows.jsonl`;
Deno.writeTextFileSync(rowsFile, "");

/** Records rows as they come: on stderr and in rows.jsonl, so that a run cut short by a hang
 * or a timeout still leaves what it had measured. */
function push(...rs: CheckRow[]): void {
  for (const r of rs) {
    rows.push(r);
    const state = r.skipped ? "SKIPPED" : r.pass ? "ok" : "FAIL";
    log(
      `${state}: ${r.section}: ${r.name} [${r.precision}] err ${r.err} tol ${r.tol} ${
        r.note ?? ""
      }`,
    );
    Deno.writeTextFileSync(rowsFile, JSON.stringify(r) + "\n", { append: true });
  }
}

const dryAsked = a["cpu-only"] || a.emulate;
const engineLib = a["engine-lib"] ?? Deno.env.get("LOTUS_CUDA_LIB") ?? null;

function failure(section: string, name: string, e: unknown): CheckRow {
  log(`${section}: ${name}: ${e instanceof Error ? e.message : String(e)}`);
  return errorRow(section, name, e);
}

/** Writes table.txt and report.json, prints the table last, and exits (1 if a row failed). */
function report(dryRun: boolean): never {
  const { passed, failed, skipped } = tally(rows);
  const table = formatTable(rows);
  const summary =
    `gpu check: ${passed} passed, ${failed} failed, ${skipped} skipped in ${secs(t0)}` +
    (dryRun ? " (DRY RUN: the CUDA engine was not tested on a GPU)" : "");
  try {
    Deno.writeTextFileSync(`${outDir}/table.txt`, `${table}\n${summary}\n`);
    Deno.writeTextFileSync(
      `${outDir}/report.json`,
      JSON.stringify(
        {
          summary: { passed, failed, skipped, seconds: (performance.now() - t0) / 1000 },
          dry: dryRun,
          device: detail.device ?? null,
          engineLib: detail.engineLib ?? null,
          nvcc: detail.nvcc ?? null,
          tolerances: TOLERANCES,
          probe: probeCuda(),
          rows,
          detail,
        },
        null,
        1,
      ) + "\n",
    );
  } catch (e) {
    log(`could not write the report to ${outDir}: ${(e as Error).message}`);
  }
  console.log(table);
  console.log(summary);
  Deno.exit(failed > 0 ? 1 : 0);
}

/** The le_* names declared in the header. */
function headerSymbols(): string[] {
  const h = Deno.readTextFileSync(new URL("../engine/lotus_engine.h", import.meta.url));
  return [...h.matchAll(/\b(le_[a-z0-9_]+)\s*\(/g)].map((m) => m[1]).filter((v, i, all) =>
    all.indexOf(v) === i
  ).sort();
}

/** Dynamic symbols a library defines, from nm -D. */
function exportedSymbols(lib: string): string[] {
  const out = new Deno.Command("nm", { args: ["-D", "--defined-only", lib], stdout: "piped" })
    .outputSync();
  if (!out.success) throw new Error(`nm -D ${lib} failed`);
  return new TextDecoder().decode(out.stdout).split("\n").map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length === 3).map((f) => f[2]).sort();
}

// ---- environment and build ------------------------------------------------------------------

const probe = probeCuda();
const dry = a["cpu-only"] || !probe.available;
push(
  probe.available
    ? checkRow("env", "NVIDIA driver", "-", 0, 0, `${probe.devices} GPU(s)`)
    : dryAsked
    ? skippedRow("env", "NVIDIA driver", probe.reason)
    // Without --cpu-only or --emulate the check is for a GPU: no GPU is a failure.
    : failure("env", "NVIDIA driver and GPU", new Error(probe.reason)),
);
try {
  const v = new Deno.Command("nvcc", { args: ["--version"], stdout: "piped", stderr: "null" })
    .outputSync();
  detail.nvcc = new TextDecoder().decode(v.stdout).trim().split("\n").pop() ?? null;
} catch {
  detail.nvcc = null;
}

let t = performance.now();
let ref: Engine;
try {
  ref = openEngine({ backend: "cpu", quiet: true });
  push(checkRow("build", "CPU engine builds and loads", "-", 0, 0, secs(t)));
} catch (e) {
  push(failure("build", "CPU engine builds and loads (the reference: nothing to compare)", e));
  report(true);
}

let cudaLib: string | null = null;
t = performance.now();
try {
  if (engineLib) {
    Deno.statSync(engineLib); // a missing file fails here, with its path
    cudaLib = engineLib;
    push(checkRow("build", "CUDA engine: prebuilt library", "-", 0, 0, engineLib));
  } else {
    cudaLib = buildEngine({ backend: "cuda", quiet: true });
    push(checkRow("build", "CUDA engine compiles (nvcc)", "-", 0, 0, secs(t)));
  }
  detail.engineLib = cudaLib;
  let got: string[] | null = null;
  try {
    got = exportedSymbols(cudaLib);
  } catch (e) {
    push(
      skippedRow("build", "exports exactly the header's symbols", `nm: ${(e as Error).message}`),
    );
  }
  if (got) {
    const want = headerSymbols();
    const extra = got.filter((s) => !want.includes(s)),
      missing = want.filter((s) => !got.includes(s));
    push(
      checkRow(
        "build",
        "exports exactly the header's symbols",
        "-",
        extra.length + missing.length,
        0,
        extra.length + missing.length === 0
          ? `${got.length} symbols`
          : `missing ${missing.join(",")}; extra ${extra.slice(0, 5).join(",")}`,
      ),
    );
  }
} catch (e) {
  push(
    dryAsked && e instanceof EngineBuildError && e.message.startsWith("compiler not found")
      ? skippedRow("build", "CUDA engine compiles (nvcc)", e.message.split(";")[0])
      : failure(
        "build",
        engineLib ? `CUDA engine: prebuilt library ${engineLib}` : "CUDA engine compiles (nvcc)",
        e,
      ),
  );
}

let test: Engine = ref;
let precisions: Precision[] = ["fp32"];
// --emulate: the CUDA engine's own source, compiled for CPU threads (check/cuda_emu), takes
// the GPU's place, so that every path of this check runs without one.
let testLib = cudaLib;
if (a.emulate) {
  t = performance.now();
  try {
    testLib = buildCudaEmu({ sanitize: a.sanitize });
    const how = a.sanitize ? "g++, ASan and UBSan" : "g++";
    push(checkRow("build", `emulated CUDA engine builds (${how})`, "-", 0, 0, secs(t)));
  } catch (e) {
    testLib = null;
    push(
      failure(
        "build",
        `emulated CUDA engine builds (${a.sanitize ? "g++, ASan and UBSan" : "g++"})`,
        e,
      ),
    );
  }
}
if ((!dry || a.emulate) && testLib) {
  try {
    test = openEngine({ backend: "cuda", libPath: testLib });
    precisions = a.preflight ? ["bf16"] : [...PRECISIONS];
    push(checkRow("build", "CUDA engine initialises (le_init)", "-", 0, 0));
  } catch (e) {
    push(failure("build", "CUDA engine initialises (le_init)", e));
  }
}
const standIn = test === ref;
const emulated = !standIn && !!a.emulate;
// The first line on stdout: what the CUDA engine runs on (or why nothing).
if (!standIn) {
  detail.device = test.deviceInfo();
  const d = detail.device as Record<string, unknown>;
  console.log(
    `device: ${d.device} (cc ${d.cc}), driver ${d.driver}, runtime ${d.runtime}, cuBLAS ${d.cublasVersion} from ${d.cublas}, cuBLASLt ${
      d.cublasLt
        ? `on (${
          d.gemmTuneCandidates === 1
            ? "heuristic's first algorithm"
            : `${d.gemmTuneCandidates} GEMM algorithms timed a shape`
        })`
        : "off"
    }, tensor-core attention ${
      d.tcAttention
        ? "on"
        : d.mmaProbe === -1
        ? "off (the mma probe could not run)"
        : typeof d.mmaProbe === "number" && d.mmaProbe > 0
        ? `off (the mma probe found ${d.mmaProbe} of 128 elements wrong; the split-K kernel too)`
        : "off (LOTUS_TC_ATTENTION=0)"
    }, few-row kernel ${d.gemv === false ? "off (LOTUS_GEMV=0)" : "on"}, programmatic dependent ` +
      `launch ${
        d.pdl
          ? "on"
          : d.pdlDropped
          ? "off (a launch or a recording failed with it)"
          : "off (LOTUS_PDL=0, or le_init's probe failed)"
      }` +
      (emulated ? " [host emulation]" : ""),
  );
} else {
  console.log(`device: none (${a["cpu-only"] ? "--cpu-only" : probe.reason})`);
}
if (standIn && !dryAsked) {
  push(failure("cuda", "CUDA engine on a GPU", new Error("the CUDA engine did not load")));
}
if (emulated) {
  push(
    skippedRow("cuda", "CUDA on a GPU", "--emulate: the CUDA engine's kernels run on CPU threads"),
  );
}
if (standIn) {
  push(
    skippedRow(
      "cuda",
      "CUDA vs CPU",
      a["cpu-only"]
        ? "--cpu-only: the CPU engine stands in for CUDA below (fp32 only)"
        : "no usable GPU: the CPU engine stands in for CUDA below (fp32 only)",
    ),
  );
}
const tag = standIn ? "cpu stand-in" : emulated ? "emulated" : "";
const mark = (rs: CheckRow[]) =>
  tag ? rs.map((r) => ({ ...r, note: `${tag}${r.note ? "; " + r.note : ""}` })) : rs;

// ---- ops, the LOTUS step, a training run -----------------------------------------------------

const opRows: CheckRow[] = [];
for (const p of precisions) {
  t = performance.now();
  try {
    opRows.push(...compareOps(test, ref, p, {
      cases: [...OP_CASES, ...GPT2_OP_CASES, ...GPT2_ATTN_STATS_CASES],
    }));
  } catch (e) {
    opRows.push({ ...failure("ops", "ops", e), precision: p });
  }
  log(`ops ${p}: ${secs(t)}`);
}
push(...mark(summarizeOps(opRows)));
detail.ops = opRows;

for (const p of precisions) {
  for (const spec of [...STEP_SPECS, REAL_STEP_SPEC, LLAMA_STEP_SPEC]) {
    try {
      push(...mark(compareLotusStep(test, ref, p, spec)));
    } catch (e) {
      push({ ...failure("lotus step", spec.name, e), precision: p });
    }
  }
}

let refCurve: Curve | undefined;
detail.curves = {} as Record<string, number[]>;
for (const p of a.preflight ? [] : precisions) {
  t = performance.now();
  try {
    refCurve ??= trainCurve(ref, steps);
    const r = compareTraining(test, ref, p, steps, refCurve);
    push(...mark(r.rows.map((x) => ({ ...x, note: `${x.note}; ${secs(t)}` }))));
    (detail.curves as Record<string, number[]>)[`test ${p}`] = r.test.losses;
    (detail.curves as Record<string, number[]>).ref = r.ref.losses;
  } catch (e) {
    push({ ...failure("training", `tiny, ${steps} steps`, e), precision: p });
  }
}

// ---- tensor-core attention settings that must not change a bit -------------------------------

if (test.backend === "cuda" && !a.preflight) {
  try {
    const tcCases = [...OP_CASES.filter((c) => c.tensorCores === "bf16"), ...GPT2_ATTN_STATS_CASES];
    const open = () => openEngine({ backend: "cuda", libPath: testLib! });
    push(...mark(compareAttentionSettings(open, tcCases)));
  } catch (e) {
    push({ ...failure("ops", "tensor-core attention settings", e), precision: "bf16" });
  }
  // One bf16 row of section ops each, from a comparison that reopens the engine.
  const reopening: [string, (open: () => Engine) => CheckRow][] = [
    ["bf16 forwards of 1 to 8 rows", compareFewRowForwards],
    ["bf16 forwards of 9 to 128 rows", compareSkinnyForwards],
    ["GELU's forward left to its matmul", compareDeferredGeluFwd],
    ["the norms' forwards left to their matmul", (open) => compareDeferredNormFwd(open)],
    ["GELU's backward left to the fc matmul", compareDeferredGeluBwd],
  ];
  for (const [what, compare] of reopening) {
    try {
      push(...mark([compare(() => openEngine({ backend: "cuda", libPath: testLib! }))]));
    } catch (e) {
      push({ ...failure("ops", what, e), precision: "bf16" });
    }
  }
  try {
    const open = () => openEngine({ backend: "cuda", libPath: testLib! });
    // On a GPU a bf16 qkv comes from another GEMM kernel than an fp32 one: equal to rounding.
    push(...mark(compareStepSettings(open, REAL_STEP_SPEC, 7, false)));
  } catch (e) {
    push({ ...failure("lotus step", "settings that keep a step's bits", e), precision: "bf16" });
  }
  for (const p of ["bf16", "fp32"] as const) {
    try {
      push(...mark(compareBf16Storage(test, p)));
    } catch (e) {
      push({ ...failure("bf16 storage", "bf16 storage against fp32 buffers", e), precision: p });
    }
  }
}

// ---- generation and training steps replayed from CUDA graphs ------------------------------------

if (test.backend === "cuda") {
  for (const p of a.preflight ? ["bf16"] as const : ["fp32", "bf16"] as const) {
    try {
      push(...mark(compareGraphReplay(test, p)));
    } catch (e) {
      push({ ...failure("generation", "CUDA graphs replay the loop passes", e), precision: p });
    }
    try {
      push(...mark(compareStepGraphs(test, p)));
    } catch (e) {
      push({ ...failure("training graphs", "recorded steps replay bit for bit", e), precision: p });
    }
    try {
      push(...mark(compareMicroBatches(test, p)));
    } catch (e) {
      push({
        ...failure("micro-batches", "a batch's gradient from micro-batches", e),
        precision: p,
      });
    }
  }
}

// ---- device memory over create/destroy cycles ------------------------------------------------

t = performance.now();
if (!a.preflight) {
  try {
    const open = standIn
      ? () => openEngine({ backend: "cpu", quiet: true })
      : () => openEngine({ backend: "cuda", libPath: testLib! });
    const memInfo = standIn || emulated ? undefined : cudaMemInfo;
    push(...mark(memoryCycles(open, { cycles, memInfo })));
    log(`memory: ${secs(t)}`);
  } catch (e) {
    push(failure("memory", `${cycles} cycles`, e));
  }
}

// ---- PyTorch reference and Hugging Face GPT2LMHeadModel --------------------------------------

interface TorchRow {
  name: string;
  err: number | null;
  tol: number;
  pass: boolean;
  skipped?: boolean;
  note?: string;
}

async function torchChecks(): Promise<CheckRow[]> {
  const dir = await Deno.makeTempDir({ prefix: "lotus-gpu-check-torch-" });
  try {
    const testName = standIn ? "cpu-standin" : emulated ? "cuda-emulated-fp32" : "cuda-fp32";
    await writeTorchCase(dir, [[testName, test], ["cpu", ref]]);
    const script = new URL("./torch_reference.py", import.meta.url).pathname;
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 240_000);
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command(a.python!, {
        args: [script, "compare", dir, "--json", `${dir}/torch.json`],
        stdout: "piped",
        stderr: "piped",
        signal: ac.signal,
        env: { PYTHONUNBUFFERED: "1", HF_HUB_OFFLINE: "1", TRANSFORMERS_OFFLINE: "1" },
      }).output();
    } catch (e) {
      return [
        skippedRow("torch", "PyTorch reference", `cannot run ${a.python}: ${(e as Error).message}`),
      ];
    } finally {
      clearTimeout(timer);
    }
    const stderr = new TextDecoder().decode(out.stderr).trim();
    if (out.code === 3) {
      return [skippedRow("torch", "PyTorch reference", stderr.split("\n").pop() ?? "no torch")];
    }
    let parsed: TorchRow[];
    try {
      parsed = JSON.parse(await Deno.readTextFile(`${dir}/torch.json`));
    } catch {
      return [
        failure(
          "torch",
          "PyTorch reference",
          new Error(`exit ${out.code}: ${stderr.split("\n").slice(-3).join(" | ")}`),
        ),
      ];
    }
    detail.torchStdout = new TextDecoder().decode(out.stdout);
    return parsed.map((r) =>
      r.skipped ? skippedRow("torch", r.name, r.note ?? "") : {
        section: "torch",
        name: r.name,
        precision: "fp32" as const,
        err: r.err ?? Infinity,
        tol: r.tol,
        pass: r.pass && r.err !== null,
        note: r.note,
      }
    );
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

// A preflight leaves out the PyTorch rows, as it does the sections above that the benchmark
// does not rely on: they are not failures, nor rows.
if (a["skip-torch"] && !a.preflight) {
  push(skippedRow("torch", "PyTorch reference", "--skip-torch"));
} else if (!a.preflight) {
  t = performance.now();
  try {
    push(...mark(await torchChecks()));
  } catch (e) {
    push(failure("torch", "PyTorch reference", e));
  }
  log(`torch: ${secs(t)}`);
}

if (test !== ref) test.close();
ref.close();

report(standIn || emulated);
