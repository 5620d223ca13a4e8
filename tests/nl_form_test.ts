/**
 * The NL form end to end on data of our own: synthetic problems built with NL steps and
 * `--long-step spill` under both tokenizers (the shards' [N, K, K*c+1] targets, the manifest,
 * loading for training), the per-step NL check on the generator's output, and the step-length
 * statistics. GSM8K's step lengths are checked when ../shared/data is present.
 */
import { assert, assertEquals } from "./_assert.ts";
import { tempDir } from "./_tmp.ts";
import { buildDataset } from "../pipeline/build.ts";
import { readManifest } from "../pipeline/manifest.ts";
import { getTensor, readSafetensors } from "../base/safetensors.ts";
import { IGNORE } from "../pipeline/pack.ts";
import { generate } from "../pipeline/synthetic.ts";
import { segment } from "../pipeline/segment.ts";
import { validate } from "../pipeline/validate.ts";
import { nearestRank, StepLengths } from "../pipeline/step_lengths.ts";
import { loadSplit } from "../train/dataset.ts";
import { lotusBatch } from "../train/batch.ts";
import { formatSummary } from "../pipeline/summary.ts";
import { tokenizerFromFile } from "../pipeline/tokenizer.ts";
import { haveSharedData, SHARED_DATA } from "./_shared_data.ts";

Deno.test("step lengths: nearest-rank percentiles, steps over c, the suggested c", () => {
  assertEquals(nearestRank([1, 2, 3, 4], 0.5), 2);
  assertEquals(nearestRank([1, 2, 3, 4], 0.9), 4);
  assertEquals(nearestRank([], 0.5), 0);
  const s = new StepLengths();
  for (let i = 1; i <= 100; i++) s.add(i);
  assertEquals(s.stats(95), {
    steps: 100,
    p50: 50,
    p90: 90,
    p99: 99,
    max: 100,
    overC: 5,
    suggestedC: 90,
  });
  assertEquals(new StepLengths().stats(13).max, 0);
});

Deno.test("synthetic NL steps state what their math steps compute (no nl_* reason)", () => {
  let n = 0;
  for (const p of generate({ n: 2000, seed: 5 })) {
    const r = validate(segment(p), { cot: "nl" });
    assertEquals(r.nl.length, r.math.length, p.id);
    assertEquals(r.nlOfMath, r.math.map((_, i) => i), p.id);
    assert(
      !r.validation.reasons.some((x) => x.startsWith("nl_")),
      `${p.id}: ${r.validation.details}`,
    );
    n++;
  }
  assertEquals(n, 2000);
});

for (const tokenizer of ["gpt2", "compact"]) {
  Deno.test(`NL dataset (${tokenizer}): spilled targets in [N, K, K*c+1], loadable, batched`, async () => {
    const out = `${await tempDir()}/nl`;
    const K = 3, c = 8, W = K * c + 1;
    const { manifest: m } = await buildDataset({
      out,
      splits: [{ name: "train", inputs: [], synthetic: { n: 120, seed: 9, maxSteps: 4 } }],
      cot: "nl",
      k: K,
      c,
      tokenizer,
      longStep: "spill",
    });
    const info = m.splits.train;
    assertEquals(info.options.longStep, "spill");
    const sl = info.stepLengths!;
    assert(sl.nl.p50 > sl.math.p50, "NL steps are longer than math steps");
    assert(sl.nl.p50 <= sl.nl.p90 && sl.nl.p90 <= sl.nl.p99 && sl.nl.p99 <= sl.nl.max);
    assertEquals(sl.nl.steps, sl.math.steps);
    assert(info.counts.flaggedByReason.step_spilled > 0, "some NL step is longer than c = 8");
    assert(formatSummary(m).includes("nl step tokens p50/p90/p99/max"));
    // The shard holds block k's targets from row k*c on, for the whole step (up to row K*c).
    const f = await readSafetensors(`${out}/${info.shards[0].file}`);
    const n = info.counts.kept;
    const targets = getTensor(f, "lotus_step_targets", "I32", [n, K, W]);
    const lines = (await Deno.readTextFile(`${out}/${info.records}`)).trimEnd().split("\n");
    const recIndex = getTensor(f, "record_index", "I32");
    const tok = await tokenizerFromFile(`${out}/${m.tokenizer.file}`);
    let spilled = 0;
    for (let i = 0; i < n; i++) {
      const rec = JSON.parse(lines[recIndex[i]]);
      for (let k = 0; k < Math.min(K, rec.nl.length); k++) {
        const ids = tok.encode(rec.nl[k] + "\n");
        const row = Array.from(targets.subarray((i * K + k) * W, (i * K + k + 1) * W));
        const kept = Math.min(ids.length, (K - k) * c + 1);
        assertEquals(row.slice(0, kept), ids.slice(0, kept));
        assert(row.slice(kept).every((v) => v === IGNORE));
        if (ids.length > c) spilled++;
      }
    }
    assert(spilled > 0);
    // Training reads it (the shard check knows the width) and spills in its batches.
    const split = await loadSplit(out, "train", { verify: "full" });
    const b = lotusBatch(split.examples.slice(0, 16), split.special, {
      K,
      R: K,
      c,
      longStep: "spill",
    });
    assert(b.spillTargets.length > 0);
    assert((await readManifest(out)).splits.train.stepLengths !== undefined);
  });
}

const HAVE = haveSharedData("gsm8k/", "nl_form_test", "GSM8K's step lengths");
Deno.test({
  name: "GSM8K train (real): step lengths per form under GPT-2's tokenizer",
  ignore: !HAVE,
  fn: async () => {
    const out = `${await tempDir()}/g`;
    const { manifest: m } = await buildDataset({
      out,
      splits: [{ name: "train", inputs: [`${SHARED_DATA}gsm8k/train.jsonl`] }],
      cot: "nl",
      longStep: "spill",
    });
    // Measured (bench/step_lengths.ts prints the same figures for the math-form build, whose
    // 95 records without annotation are dropped): NL steps are about twice as long as math.
    const sl = m.splits.train.stepLengths!;
    assertEquals([sl.math.p50, sl.math.p90, sl.math.p99, sl.math.max], [8, 10, 14, 28]);
    assertEquals([sl.nl.p50, sl.nl.p90, sl.nl.p99, sl.nl.max], [18, 29, 42, 91]);
    assertEquals(sl.nl.steps, 26720);
    // No GSM8K NL step fails to state its line's computed value.
    assertEquals(m.splits.train.counts.flaggedByReason.nl_step_mismatch ?? 0, 0);
  },
});
