// Each speed change's prediction against a gpu_all.sh run (check/predictions.ts): the figures
// read from the benchmark's rows and the variants' lines of run.log, and the verdicts.
import { assert, assertEquals } from "./_assert.ts";
import {
  checkPredictions,
  defaultFigures,
  figuresOf,
  formatChecks,
  PREDICTIONS,
  variantRows,
} from "../check/predictions.ts";

const row = (section: string, name: string, value: number, note = "") =>
  JSON.stringify({ section, name, value, unit: "", target: "", note, met: null });

/** A benchmark's rows at a step of `ms`, a thought phase and an answer token of their ms. */
function rows(ms: number, thought: number, token: number): string[] {
  return [
    row("train", "engine bf16: examples/s", 64000 / ms, `${ms.toFixed(1)} ms/step; gpt2, B=64`),
    row("train", "engine: token positions/s", 1),
    row("infer", "thought phase (pass 0 + 6 loops, batch 1)", thought, "median of 5"),
    row("infer", "thought phase without CUDA graphs (batch 1)", thought + 1),
    row("infer", "LOTUS answer token (batch 1)", token),
  ];
}

Deno.test("predictions: figures from a benchmark's rows, variants from run.log's lines", () => {
  const f = figuresOf(rows(120, 4.5, 0.6).map((r) => JSON.parse(r)));
  assertEquals(f, { step: 120, thought: 4.5, token: 0.6 });
  const log = [
    "gpu-all: variant no-pdl",
    ...rows(123, 5.2, 0.7).map((r) => `no-pdl: ${r}`),
    "gpu-all: variant no-pdl exit 0",
    "separate-gelu-bwd: {not json}",
    ...rows(124, 4.5, 0.6).map((r) => `separate-gelu-bwd: ${r}`),
  ].join("\n");
  const v = variantRows(log);
  assertEquals([...v.keys()], ["no-pdl", "separate-gelu-bwd"]);
  assertEquals(figuresOf(v.get("no-pdl")!), { step: 123, thought: 5.2, token: 0.7 });
});

Deno.test("predictions: within the range, beyond it, short of it, or not measured", () => {
  const log = [
    ...rows(123, 5.2, 0.7).map((r) => `no-pdl: ${r}`), // step -3, thought -0.7, token -0.1
    ...rows(130, 4.5, 0.6).map((r) => `separate-gelu-bwd: ${r}`), // step -10: beyond
  ].join("\n");
  const checks = checkPredictions({ step: 120, thought: 4.5, token: 0.6 }, variantRows(log));
  const by = (variant: string, measure: string) =>
    checks.find((c) => c.variant === variant && c.measure === measure)!;
  assertEquals(by("no-pdl", "step").verdict, "as predicted");
  assert(Math.abs(by("no-pdl", "thought").measured! + 0.7) < 1e-9);
  assertEquals(by("no-pdl", "token").verdict, "as predicted");
  assertEquals(by("separate-gelu-bwd", "step").verdict, "beyond (saved more)");
  assertEquals(by("heuristic-gemm", "step").verdict, "not measured");
  // A change that costs time where it was to save: short.
  const slower = checkPredictions(
    { step: 125 },
    variantRows(rows(120, 1, 1).map((r) => `separate-gelu-bwd: ${r}`).join("\n")),
  );
  assertEquals(slower.find((c) => c.variant === "separate-gelu-bwd")!.verdict, "short");
  // A run without a GPU judges nothing: its variants' settings do not exist on the CPU.
  const dry = checkPredictions(
    { step: 120, thought: 4.5, token: 0.6 },
    variantRows(log),
    undefined,
    true,
  );
  assert(dry.every((c) => c.verdict === "not measured" || c.verdict === "not judged (no GPU)"));
  assert(dry.some((c) => c.verdict === "not judged (no GPU)"));
  const table = formatChecks(checks);
  assert(table.includes("29. programmatic dependent launch"), table);
  assertEquals(table.split("\n").length, 2 + checks.length);
});

Deno.test("predictions: the defaults are the short run's when it ran, else the benchmark's", () => {
  const bench = () => rows(110, 4, 0.5).map((r) => JSON.parse(r));
  const withDefault = variantRows(rows(120, 4.5, 0.6).map((r) => `default: ${r}`).join("\n"));
  assertEquals(defaultFigures(withDefault, bench), { step: 120, thought: 4.5, token: 0.6 });
  assertEquals(defaultFigures(new Map(), bench), { step: 110, thought: 4, token: 0.5 });
});

Deno.test("predictions: every variant named is one that bench/gpu_all.sh runs", () => {
  const script = Deno.readTextFileSync(new URL("../bench/gpu_all.sh", import.meta.url));
  assert(/^\s+default\) variant /m.test(script), "the defaults' short run");
  for (const p of PREDICTIONS) {
    assert(new RegExp(`^\\s+${p.variant}\\) variant `, "m").test(script), p.variant);
    for (const [lo, hi] of Object.values(p.effect)) assert(lo <= hi, `${p.variant}: ${lo} ${hi}`);
  }
});
