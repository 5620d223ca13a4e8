import { assert, assertAlmostEquals, assertEquals } from "./_assert.ts";
import { TrainConfigSchema } from "../model/config.ts";
import { epochOrder, lrAt, stageOf, stageShape } from "../train/schedule.ts";
import { answersMatch, extractAnswer } from "../pipeline/answer.ts";

Deno.test("curriculum: K = R = min(stage, k); stage = epoch / epochsPerStage", () => {
  const cfg = TrainConfigSchema.parse({ k: 3 });
  assertEquals([0, 1, 2, 3, 4, 9].map((e) => stageOf(cfg, e)), [0, 1, 2, 3, 3, 3]);
  assertEquals(stageShape(cfg, 2), { k: 2, r: 2 });
  const fixedR = TrainConfigSchema.parse({ k: 3, r: 0 });
  assertEquals(stageShape(fixedR, 3), { k: 3, r: 0 });
  assertEquals(stageShape(TrainConfigSchema.parse({ mode: "cot" }), 5), { k: 0, r: 0 });
  assertEquals(stageOf(TrainConfigSchema.parse({ k: 4, epochsPerStage: 0 }), 0), 4);
});

Deno.test("lr schedule: warmup, constant and cosine", () => {
  const c = TrainConfigSchema.parse({ lr: 1, warmupSteps: 4, schedule: "cosine", minLrRatio: 0.1 });
  assertAlmostEquals(lrAt(c, 0, 104), 0.25);
  assertAlmostEquals(lrAt(c, 3, 104), 1);
  assertAlmostEquals(lrAt(c, 4, 104), 1);
  assertAlmostEquals(lrAt(c, 54, 104), 0.55, 1e-9);
  assertAlmostEquals(lrAt(c, 104, 104), 0.1, 1e-9);
  assertEquals(lrAt(TrainConfigSchema.parse({ lr: 0.5 }), 77, 100), 0.5);
});

Deno.test("data order: a seeded permutation per epoch", () => {
  const a = epochOrder(50, 7, 0), b = epochOrder(50, 7, 0), c = epochOrder(50, 7, 1);
  assertEquals(Array.from(a), Array.from(b));
  assert(Array.from(a).join() !== Array.from(c).join());
  assertEquals(Array.from(a).sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i));
});

Deno.test("answer extraction: several ###, none, commas, negatives, decimals, fractions", () => {
  assertEquals(extractAnswer("<<2*3=6>>\n### 6"), "6");
  assertEquals(extractAnswer("### 5 ### 1,234"), "1234");
  assertEquals(extractAnswer("no marker, so the last number 17 wins"), "17");
  assertEquals(extractAnswer("### -4.5"), "-4.5");
  assertEquals(extractAnswer("### 3/4"), "3/4");
  assert(answersMatch("1234", "1,234"));
  assert(answersMatch("0.75", "3/4"));
  assert(answersMatch("18.0", "18"));
  assert(!answersMatch("18", "19"));
  assert(answersMatch("abc", "abc"));
});
