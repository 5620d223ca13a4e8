/**
 * The results table of bench/experiment.sh: one row per trained model, from the summaries that
 * `deno task train` and `deno task eval` wrote under the experiment's directory, as Markdown.
 * Also draws every run's validation accuracy and loss into one picture each.
 *
 * ```sh
 * npx deno run --allow-read --allow-write bench/experiment_table.ts out/experiment
 * ```
 *
 * @module
 */
import type { RunSummary } from "../eval/evaluate.ts";
import { lineChartSvg, type Series } from "../eval/svg.ts";
import { readTrainLog } from "../train/run_log.ts";
import { writeFileAtomic } from "../base/atomic.ts";

/** The rows, in the order of the paper's table. */
const ROWS: [string, string][] = [
  ["cot", "explicit CoT"],
  ["nocot", "no CoT"],
  ["lotus", "LOTUS"],
  ["lotus-aux", "LOTUS-aux"],
  ["lotus-r0", "LOTUS, no loop (R = 0)"],
  ["lotus-lambda0", "LOTUS, no step loss (λ = 0)"],
  ["cot-long", "explicit CoT, 1.5x steps"],
  ["lotus-from-cot", "LOTUS from the CoT model (+0.5x steps)"],
];

async function json<T>(path: string): Promise<T | null> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as T;
  } catch {
    return null;
  }
}

const pct = (x: number | undefined) => (x === undefined ? "–" : `${(100 * x).toFixed(1)}`);
const ms = (x: number | null | undefined) => (x == null ? "–" : x.toFixed(2));

/** Build the table (and the pictures) for the experiment directory `dir`. */
export async function experimentTable(dir: string): Promise<string> {
  const lines = [
    "| model | train positions (M) | train s | test acc % | 95% CI | thought ms (batch 1, median) | ms/answer token | readout top-1 % | top-5 % | alt. top-1 % | alt. top-5 % | GSM8K acc % |",
    "| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |",
  ];
  const acc: Series[] = [], loss: Series[] = [];
  for (const [name, label] of ROWS) {
    const tr = await json<{ seconds: number; steps: number; tokens: number }>(
      `${dir}/runs/${name}/summary.json`,
    );
    if (!tr) continue;
    const test = (await json<{ runs: RunSummary[] }>(`${dir}/eval/${name}/test/summary.json`))
      ?.runs[0];
    const lat = (await json<{ runs: RunSummary[] }>(`${dir}/eval/${name}/latency/summary.json`))
      ?.runs[0];
    const gsm = (await json<{ runs: RunSummary[] }>(`${dir}/eval/${name}/gsm8k/summary.json`))
      ?.runs[0];
    // A Wilson interval says how far apart two rows must be before the gap means anything.
    const ci = test ? wilson(test.correct, test.n) : null;
    lines.push(
      `| ${label} | ${(tr.tokens / 1e6).toFixed(1)} | ${tr.seconds.toFixed(0)} | ${
        pct(test?.accuracy)
      } | ${ci ? `${pct(ci[0])}–${pct(ci[1])}` : "–"} | ${ms(lat?.latency.thoughtMsMedian)} | ${
        ms(lat?.latency.msPerAnswerToken)
      } | ${pct(test?.readout?.top1)} | ${pct(test?.readout?.top5)} | ${
        pct(test?.readout?.alternativeTop1)
      } | ${pct(test?.readout?.alternativeTop5)} | ${pct(gsm?.accuracy)} |`,
    );
    try {
      const log = await readTrainLog(`${dir}/runs/${name}`);
      acc.push({
        name: label,
        points: log.filter((r) => r.kind === "eval").map((r) => [r.step, r.valAccuracy ?? NaN]),
      });
      loss.push({
        name: label,
        points: log.filter((r) => r.kind === "eval").map((r) => [r.step, r.valLoss ?? NaN]),
      });
    } catch { /* no log: no curve */ }
  }
  const sweep = (await json<{ runs: RunSummary[] }>(`${dir}/eval/lotus/sweep/summary.json`))?.runs;
  if (sweep) {
    lines.push(
      "",
      "LOTUS at inference-time R (K fixed at the checkpoint's):",
      "",
      "| R | test acc % | thought ms/example (batch 32, median) | readout top-1 % |",
      "| --: | --: | --: | --: |",
      ...sweep.map((r) =>
        `| ${r.R} | ${pct(r.accuracy)} | ${ms(r.latency.thoughtMsMedian)} | ${
          pct(r.readout?.top1)
        } |`
      ),
    );
  }
  if (acc.length) {
    await writeFileAtomic(
      `${dir}/validation_accuracy.svg`,
      lineChartSvg(acc, {
        title: "Validation accuracy during training",
        xLabel: "step",
        yLabel: "exact match",
        yMin: 0,
      }),
    );
    await writeFileAtomic(
      `${dir}/validation_loss.svg`,
      lineChartSvg(loss, {
        title: "Validation answer loss",
        xLabel: "step",
        yLabel: "loss (log scale)",
        logY: true,
      }),
    );
  }
  return lines.join("\n") + "\n";
}

/** The 95% Wilson score interval of k successes in n trials. */
export function wilson(k: number, n: number): [number, number] {
  if (n === 0) return [0, 1];
  const z = 1.96, p = k / n, d = 1 + z * z / n;
  const mid = (p + z * z / (2 * n)) / d;
  const half = (z * Math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / d;
  return [Math.max(0, mid - half), Math.min(1, mid + half)];
}

if (import.meta.main) {
  const dir = Deno.args[0] ?? "out/experiment";
  console.log(await experimentTable(dir));
}
