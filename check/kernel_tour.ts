/**
 * The kernel tour: every kernel of the CUDA engine, run at small shapes and checked against the
 * CPU engine, in a few seconds of GPU time. It is the program that check/gpu_sanitize.sh runs
 * under NVIDIA's compute-sanitizer (memcheck, racecheck, synccheck, initcheck), so that every
 * kernel, in every form the engine launches it (each precision, the tensor-core attention's
 * settings, the few-row and split-K forwards, the deferred GELU and LayerNorm passes, CUDA
 * graphs, a Llama step), meets the sanitizer's checks of out-of-bounds and misaligned accesses, shared-memory
 * races and barrier misuse: what the host emulation (check/cuda_emu) cannot see.
 *
 *   npx deno run -A check/kernel_tour.ts [--engine-lib PATH] [--emulate] [--sanitize]
 *                                          [--quick] [--json PATH]
 *
 * --engine-lib PATH (or LOTUS_CUDA_LIB) uses a CUDA library built elsewhere, else it is built
 * here with nvcc. --emulate runs the engine's source in the host emulation instead, and then
 * also checks coverage: every LAUNCH site of the engine's source (engine/engine_cuda.cu and
 * engine/cuda/) and every kernel instance compiled into the library must have run, so that a
 * kernel added later and left out of the tour fails the tour's test (tests/kernel_tour_test.ts).
 * --sanitize (implies --emulate) builds the emulation with AddressSanitizer and UBSan, so that
 * an access past a device buffer's ends or off a vector's alignment stops the tour with a
 * report, on the CPU; it runs itself again with libasan preloaded when it is not. --quick runs
 * every kernel instance still, with fewer repeats (ops and steps in fewer precisions, graphs in
 * bf16 only, no memory cycles): what check/gpu_sanitize.sh runs, since a sanitizer's cost grows
 * with the launches. Prints the check table last and exits 1 if a row failed.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  buildCudaEmu,
  emuCounters,
  emuLaunches,
  ensureAsanPreloaded,
  kernelInstances,
  launchSites,
} from "./cuda_emu.ts";
import { buildEngine } from "../engine/build.ts";
import { type Engine, EngineError, openEngine, type Precision } from "../engine/ffi.ts";
import { Rng } from "../base/rng.ts";
import { randn, withBufs } from "./_op_bufs.ts";
import { compareBf16Storage } from "./bf16_storage.ts";
import {
  attentionCase,
  type CheckRow,
  checkRow,
  compareAttentionSettings,
  compareDeferredGeluBwd,
  compareDeferredGeluFwd,
  compareDeferredNormFwd,
  compareFewRowForwards,
  compareGraphReplay,
  compareLotusStep,
  compareOps,
  compareSkinnyForwards,
  compareStepGraphs,
  compareStepSettings,
  compareTraining,
  errorRow,
  formatTable,
  type ForwardShape,
  layernormCase,
  LLAMA_STEP_SPEC,
  memoryCycles,
  OP_CASES,
  type OpCase,
  relErr,
  residualLayernormCase,
  STEP_SPECS,
  summarizeOps,
  tally,
  withEngineSettings,
} from "./parity.ts";

/**
 * Op cases beyond OP_CASES, so that every compiled kernel instance runs: LayerNorm's vector
 * kernels at each of their eight widths (C = 128 NV - 4, so each also meets a ragged last group),
 * and the tensor-core attention at head size 64, GPT-2's, with and without a past.
 */
export const TOUR_CASES: OpCase[] = [
  ...[1, 2, 3, 4, 5, 6, 7, 8].flatMap((nv) => [
    layernormCase(3, 128 * nv - 4, "tour: "),
    residualLayernormCase(3, 128 * nv - 4, "tour: "),
  ]),
  attentionCase("tour: attention (stats), head size 64, no past", {
    B: 2,
    Tq: 21,
    Tp: 0,
    C: 128,
    NH: 2,
    past: "none",
    pad: [0, 4],
  }, "stats"),
  attentionCase("tour: attention (stats), head size 64, 9 past in the qkv buffer", {
    B: 1,
    Tq: 17,
    Tp: 9,
    C: 128,
    NH: 2,
    past: "qkv",
    pad: [2],
  }, "stats"),
];

/** Split-K forwards at reduced widths: one K slice, a part-filled column tile, many slices. */
export const TOUR_SKINNY_SHAPES: readonly ForwardShape[] = [
  [9, 32, 64, true],
  [16, 64, 100, false],
  [79, 256, 192, true],
  [128, 96, 64, true],
];

/**
 * The embedding forward over more ids than the engine summarises at upload (1 MiB of them),
 * so that its range check runs on the device (first_bad_index_kernel): the rows against the
 * table's, then with one id past the table, which must fail naming that id's index.
 */
export function deviceIndexCheck(eng: Engine): CheckRow[] {
  const V = 16, P = 8, C = 8, n = (1 << 18) + 24, bad = n - 5;
  const rng = new Rng(5);
  const wte = randn(rng, V * C), wpe = randn(rng, P * C);
  const ids = Int32Array.from({ length: n }, (_, i) => (i * 7) % V);
  const pos = Int32Array.from({ length: n }, (_, i) => i % P);
  return withBufs(eng, (b) => {
    const pw = b.f32(wte), pp = b.f32(wpe), out = b.f32(n * C), pi = b.i32(ids), ppos = b.i32(pos);
    eng.embedFwd(out, pi, ppos, pw, pp, n, C);
    const got = b.get(out, n * C), want = new Float32Array(n * C);
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < C; c++) want[r * C + c] = wte[ids[r] * C + c] + wpe[pos[r] * C + c];
    }
    const rows = [
      checkRow(
        "index checks",
        `embedding of ${n} ids checked on the device`,
        "-",
        relErr(got, want),
        1e-6,
      ),
    ];
    ids[bad] = V;
    const pb = b.i32(ids);
    let msg = "no error";
    try {
      eng.embedFwd(out, pb, ppos, pw, pp, n, C);
    } catch (e) {
      msg = e instanceof EngineError ? e.message : `not an EngineError: ${(e as Error).message}`;
    }
    const named = msg.includes(String(bad));
    rows.push(
      checkRow(
        "index checks",
        `an id past the table, at index ${bad} of ${n}: le_embed_fwd fails naming it`,
        "-",
        named ? 0 : 1,
        0,
        msg.split("\n")[0].slice(0, 120),
      ),
    );
    return rows;
  });
}

/** The tour's outcome: its rows, and in the emulation the LAUNCH sites that never ran. */
export interface TourResult {
  rows: CheckRow[];
  /** LAUNCH sites of the source (with file:line) and compiled kernel instances that never ran;
   * null off the emulation. */
  notRun: string[] | null;
  /** What the engine ran on and with: the device, and the settings that choose kernels. */
  device: string;
  seconds: number;
}

/** A coverage row: what the listing has that never ran, and what ran that it lacks. */
function coverageRow(
  name: string,
  notRun: string[],
  unlisted: string[],
  unlistedAs: string,
  whole: string,
): CheckRow {
  const bad = notRun.length + unlisted.length;
  const note = bad
    ? `not run: ${notRun.join(", ") || "-"}; ${unlistedAs}: ${unlisted.join(", ") || "-"}`
    : whole;
  return checkRow("coverage", name, "-", bad, 0, note);
}

/**
 * Runs the tour on the CUDA engine library at `lib` (a GPU's, or the emulation's when
 * `emulated`), against a CPU engine. `log` gets a line a section. `quick`: every kernel
 * instance still, with fewer repeats (see the module's documentation).
 */
export function kernelTour(
  lib: string,
  emulated: boolean,
  log: (s: string) => void = () => {},
  quick = false,
): TourResult {
  const t0 = performance.now();
  const rows: CheckRow[] = [];
  const open = () => openEngine({ backend: "cuda", libPath: lib });
  const section = (name: string, fn: () => void) => {
    const t = performance.now();
    try {
      fn();
    } catch (e) {
      rows.push(errorRow(name, `${name}: ran to the end`, e));
    }
    log(`${name}: ${((performance.now() - t) / 1000).toFixed(1)} s`);
  };
  const ref = openEngine({ backend: "cpu", quiet: true });
  // The engine stays open throughout, so its library (and the sites it has launched) stays
  // loaded across the sections that open and close engines of their own.
  const test = open();
  const d = test.deviceInfo();
  // Under a sanitizer a failed probe would quietly turn programmatic dependent launch or the
  // tensor-core attention off, and their kernels' paths with them: say which ran.
  const device = `${d.device} (cc ${d.cc}); programmatic dependent launch ${
    d.pdl ? "on" : "off"
  }; tensor-core attention ${d.tcAttention ? "on" : "off"}; few-row kernel ${
    d.gemv === false ? "off" : "on"
  }`;
  log(`device: ${device}`);
  try {
    // The sections most likely to find a fault come first (bf16 holds the engine's own
    // kernels), so that a sanitizer stopped at its time limit has checked them.
    const all: Precision[] = ["bf16", "fp32", "tf32"];
    const precisions: Precision[] = quick ? ["bf16", "fp32"] : all;
    section("ops", () => {
      const opRows: CheckRow[] = [];
      const cases = [...OP_CASES, ...TOUR_CASES];
      for (const p of precisions) opRows.push(...compareOps(test, ref, p, { cases }));
      rows.push(...summarizeOps(opRows));
    });
    section("own forwards", () => {
      rows.push(compareFewRowForwards(open));
      rows.push(compareSkinnyForwards(open, TOUR_SKINNY_SHAPES));
      rows.push(compareSkinnyForwards(open, TOUR_SKINNY_SHAPES, 12, true));
      rows.push(compareDeferredGeluFwd(open, 150));
      rows.push(compareDeferredNormFwd(open));
      rows.push(compareDeferredGeluBwd(open, 200));
    });
    section("attention settings", () => {
      const tc = [...OP_CASES, ...TOUR_CASES].filter((c) => c.tensorCores);
      rows.push(...compareAttentionSettings(open, tc));
    });
    section("bf16 storage", () => {
      for (const p of precisions) rows.push(...compareBf16Storage(test, p));
    });
    section("lotus step", () => {
      for (const p of quick ? ["bf16" as const] : precisions) {
        for (const spec of [...STEP_SPECS, LLAMA_STEP_SPEC]) {
          rows.push(...compareLotusStep(test, ref, p, spec));
        }
      }
      if (!quick) rows.push(...compareStepSettings(open, STEP_SPECS[0]));
    });
    section("training", () => {
      rows.push(...compareTraining(test, ref, "bf16", 3).rows);
    });
    section("index checks", () => {
      rows.push(...deviceIndexCheck(test));
    });
    section("GEMMs without cuBLASLt", () => {
      // cublasGemmEx and the bias kernel: the path where cuBLASLt is missing or declines.
      const matmuls = OP_CASES.filter((c) => c.matmul);
      withEngineSettings(open, { LOTUS_CUBLASLT: "0" }, (eng) => {
        const opRows: CheckRow[] = [];
        // every precision, in quick tours too: TF32's rounding kernels run here
        for (const p of all) opRows.push(...compareOps(eng, ref, p, { cases: matmuls }));
        rows.push(
          ...summarizeOps(opRows).map((r) => ({ ...r, name: `${r.name} (LOTUS_CUBLASLT=0)` })),
        );
      });
    });
    section("graphs", () => {
      for (const p of quick ? ["bf16" as const] : ["fp32", "bf16"] as const) {
        rows.push(...compareGraphReplay(test, p), ...compareStepGraphs(test, p));
      }
    });
    if (!quick) {
      section("memory", () => {
        rows.push(...memoryCycles(open, { cycles: 2, warm: 1 }));
      });
    }
    let notRun: string[] | null = null;
    if (emulated) {
      const ran = emuLaunches(lib);
      const sites = launchSites();
      const idle = [...sites].filter(([at]) => !ran.sites.has(at)).map(([at, k]) => `${k} (${at})`);
      // A site or an instance that ran but that the source's or nm's listing lacks means the
      // listing missed it, and coverage would pass without it: that fails too.
      const unlisted = [...ran.sites].filter((at) => !sites.has(at));
      rows.push(coverageRow(
        "every LAUNCH site of the engine's source ran its kernel",
        idle,
        unlisted,
        "run but not found in the source",
        `${sites.size} sites`,
      ));
      const instances = kernelInstances(lib);
      const unrun = [...instances].filter(([off]) => !ran.kernels.has(off)).map(([, n]) => n);
      const unnamed = [...ran.kernels].filter((off) => !instances.has(off))
        .map((off) => `0x${off.toString(16)}`);
      rows.push(coverageRow(
        "every kernel instance compiled into the engine ran",
        unrun,
        unnamed,
        "run but not listed by nm",
        `${instances.size} instances`,
      ));
      notRun = [...idle, ...unlisted, ...unrun, ...unnamed];
      const n = emuCounters(lib);
      log(
        `${n.launches} kernel launches, ${n.gemms} GEMMs and ${n.graphLaunches} graph launches ` +
          "(their replays not counted)",
      );
    }
    return { rows, notRun, device, seconds: (performance.now() - t0) / 1000 };
  } finally {
    test.close();
    ref.close();
  }
}

if (import.meta.main) {
  const { values: a } = parseArgs({
    args: Deno.args,
    options: {
      "engine-lib": { type: "string" },
      emulate: { type: "boolean", default: false },
      sanitize: { type: "boolean", default: false },
      quick: { type: "boolean", default: false },
      json: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (a.help) {
    console.log(
      "deno run --allow-all check/kernel_tour.ts [--engine-lib PATH] [--emulate] [--sanitize] " +
        "[--quick] [--json PATH]",
    );
    Deno.exit(0);
  }
  const log = (s: string) => console.error(`kernel-tour: ${s}`);
  // The sanitized library needs the ASan runtime loaded first: run again with it if not.
  if (a.sanitize) await ensureAsanPreloaded(import.meta.url, log);
  const emulate = a.emulate || a.sanitize;
  let lib: string;
  try {
    lib = emulate
      ? buildCudaEmu({ sanitize: a.sanitize })
      : a["engine-lib"] ?? Deno.env.get("LOTUS_CUDA_LIB") ??
        buildEngine({ backend: "cuda", quiet: true });
  } catch (e) {
    console.error(`kernel-tour: no CUDA engine library: ${(e as Error).message}`);
    Deno.exit(1);
  }
  let r: TourResult;
  try {
    r = kernelTour(lib, emulate, log, a.quick);
  } catch (e) {
    // Opening the engines failed: nothing ran.
    console.error(`kernel-tour: ${(e as Error).message}`);
    Deno.exit(1);
  }
  const { passed, failed, skipped } = tally(r.rows);
  const summary = `kernel tour: ${passed} passed, ${failed} failed, ${skipped} skipped in ${
    r.seconds.toFixed(1)
  } s${a.sanitize ? " (host emulation, ASan and UBSan)" : emulate ? " (host emulation)" : ""}`;
  if (a.json) {
    Deno.writeTextFileSync(
      a.json,
      JSON.stringify({ summary: { passed, failed, skipped, seconds: r.seconds }, ...r }, null, 1),
    );
  }
  console.log(`device: ${r.device}`);
  console.log(formatTable(r.rows));
  console.log(summary);
  Deno.exit(failed > 0 ? 1 : 0);
}
