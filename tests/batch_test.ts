import { assert, assertEquals } from "./_assert.ts";
import { auxBatch, type Example, lotusBatch, plainBatch, suffixOf } from "../train/batch.ts";
import { IGNORE } from "../pipeline/pack.ts";

const sp = { eos: 0, pad: 0, bot: 1, eot: 2, lat: 3 };
const ex = (q: number[], steps: number[][], ans: number[], index = 0): Example => ({
  q: Int32Array.from(q),
  steps: steps.map((s) => Int32Array.from(s)),
  ans: Int32Array.from(ans),
  index,
});

Deno.test("lotusBatch: regions, left-padded prefix, positions, and the BOT-offset step targets", () => {
  const a = ex([10, 11, 12], [[20, 21, 22], [30], [40, 41]], [50, 0]);
  const b = ex([13], [[60, 61]], [70, 0]);
  const bt = lotusBatch([a, b], sp, { K: 2, R: 2, c: 2 });
  assertEquals([bt.B, bt.P, bt.L, bt.K, bt.R], [2, 3, 5, 2, 2]);
  // prefix: left-padded, positions restart at 0 after the pads
  assertEquals(Array.from(bt.prefixIds), [10, 11, 12, 0, 0, 13]);
  assertEquals(Array.from(bt.prefixPos), [0, 1, 2, 0, 0, 0]);
  assertEquals(Array.from(bt.prefixValid), [1, 1, 1, 0, 0, 1]);
  // loop: BOT then K*c latents, positions continue from each question's length
  assertEquals(Array.from(bt.loopIds), [1, 3, 3, 3, 3, 1, 3, 3, 3, 3]);
  assertEquals(Array.from(bt.loopIdsReplace), [1, -1, -1, -1, -1, 1, -1, -1, -1, -1]);
  assertEquals(Array.from(bt.loopPos), [3, 4, 5, 6, 7, 1, 2, 3, 4, 5]);
  // step targets: row k*c + j holds S_k[j]; step 0 of a is truncated to c = 2
  assertEquals(Array.from(bt.stepTargets), [
    20,
    21,
    30,
    IGNORE,
    IGNORE,
    60,
    61,
    IGNORE,
    IGNORE,
    IGNORE,
  ]);
  assertEquals(Array.from(bt.stepBlock), [0, 0, 1, -1, -1, 0, 0, -1, -1, -1]);
  assertEquals(bt.nStep, 5);
  // suffix: EOT, the steps beyond K, the answer; right-padded; next-token targets
  assertEquals(bt.S, 5);
  assertEquals(Array.from(bt.suffixIds), [2, 40, 41, 50, 0, 2, 70, 0, 0, 0]);
  assertEquals(Array.from(bt.suffixTargets), [
    40,
    41,
    50,
    0,
    IGNORE,
    70,
    0,
    IGNORE,
    IGNORE,
    IGNORE,
  ]);
  assertEquals(bt.nAns, 6);
  assertEquals(Array.from(bt.suffixPos.subarray(5)), [6, 7, 8, 9, 10]);
  // key validity of the suffix: prefix pads masked, loop valid, suffix pads masked
  assertEquals(Array.from(bt.suffixValid.subarray(13)), [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
});

Deno.test("lotusBatch: stage 0 is BOT + EOT with the whole chain explicit", () => {
  const a = ex([10], [[20], [30]], [50, 0]);
  const bt = lotusBatch([a], sp, { K: 0, R: 0, c: 4 });
  assertEquals(bt.L, 1);
  assertEquals(Array.from(bt.suffixIds), [2, 20, 30, 50, 0]);
  assertEquals(bt.nStep, 0);
});

Deno.test("plainBatch: CoT and no-CoT targets cover everything after the question", () => {
  const a = ex([10, 11], [[20], [30, 31]], [50, 0]);
  const cot = plainBatch([a], sp, true);
  assertEquals(Array.from(cot.ids), [10, 11, 20, 30, 31, 50, 0]);
  assertEquals(Array.from(cot.targets), [IGNORE, 20, 30, 31, 50, 0, IGNORE]);
  const nocot = plainBatch([a], sp, false);
  assertEquals(Array.from(nocot.ids), [10, 11, 50, 0]);
  assertEquals(nocot.nTargets, 2);
});

Deno.test("auxBatch: the last latent predicts the step's first token, teacher-forced after", () => {
  const a = ex([10], [[20, 21, 22]], [50, 0]);
  const ab = auxBatch([a], 2, 2);
  assertEquals([ab.n, ab.T], [2, 5]);
  assertEquals(Array.from(ab.ids.subarray(0, 5)), [-1, -1, 20, 21, -1]);
  assertEquals(Array.from(ab.targets.subarray(0, 5)), [IGNORE, 20, 21, 22, IGNORE]);
  assert(ab.targets.subarray(5).every((t) => t === IGNORE), "block without a step is unsupervised");
  assertEquals(ab.nTargets, 3);
});

Deno.test("suffixOf keeps steps from K on", () => {
  assertEquals(Array.from(suffixOf(ex([1], [[5], [6]], [7]), 1, 2)), [2, 6, 7]);
});

Deno.test("lotusBatch: --long-step spill adds target layers over the same rows", () => {
  // K = 2, c = 2, L = 5. Example a: S_0 = [20, 21, 22] spills its third token onto row 2,
  // where S_1 = [30] starts. Example b: S_0 = [60, 61, 62, 63, 64, 65] reaches the last row
  // (4 = K*c) and its last token is cut.
  const a = ex([10, 11, 12], [[20, 21, 22], [30], [40, 41]], [50, 0]);
  const b = ex([13], [[60, 61, 62, 63, 64, 65]], [70, 0]);
  const bt = lotusBatch([a, b], sp, { K: 2, R: 2, c: 2, longStep: "spill" });
  const X = IGNORE;
  assertEquals(Array.from(bt.stepTargets), [20, 21, 30, X, X, 60, 61, X, X, X]);
  assertEquals(Array.from(bt.stepBlock), [0, 0, 1, -1, -1, 0, 0, -1, -1, -1]);
  assertEquals(bt.spillTargets.length, 2);
  assertEquals(Array.from(bt.spillTargets[0]), [X, X, 22, X, X, X, X, 62, 63, X]);
  assertEquals(Array.from(bt.spillBlock[0]), [-1, -1, 0, -1, -1, -1, -1, 0, 0, -1]);
  assertEquals(Array.from(bt.spillTargets[1]), [X, X, X, X, X, X, X, X, X, 64]);
  assertEquals(Array.from(bt.spillBlock[1]), [-1, -1, -1, -1, -1, -1, -1, -1, -1, 0]);
  assertEquals(bt.nStep, 5 + 4);
  // Truncate (the default) has no spill layers, and the suffix is the same either way.
  const tr = lotusBatch([a, b], sp, { K: 2, R: 2, c: 2 });
  assertEquals(tr.spillTargets.length, 0);
  assertEquals(tr.nStep, 5);
  assertEquals(Array.from(tr.suffixIds), Array.from(bt.suffixIds));
});
