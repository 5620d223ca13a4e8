import { assert, assertAlmostEquals, assertEquals } from "./_assert.ts";
import { TrainConfigSchema } from "../model/config.ts";
import {
  epochOrder,
  finalStageStart,
  inferenceShape,
  lrAt,
  stageOf,
  stageShape,
  totalSteps,
} from "../train/schedule.ts";
import { defaultRecipe, recipeSettings, resolveTrainConfig } from "../train/options.ts";
import type { LotusMeta } from "../model/checkpoint.ts";
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

Deno.test("curriculum in steps, a final-stage length, and a latent-phase learning rate", () => {
  const c = TrainConfigSchema.parse({ k: 3, stepsPerStage: 10, finalStageSteps: 25, lr: 1e-3 });
  assertEquals([0, 9, 10, 29, 30, 99].map((s) => stageOf(c, 0, s)), [0, 0, 1, 2, 3, 3]);
  assertEquals(finalStageStart(c, 7), 30);
  assertEquals(totalSteps(c, 7), 55, "the final stage's start, then 25 steps");
  const e = TrainConfigSchema.parse({ k: 2, epochsPerStage: 2, finalStageSteps: 5 });
  assertEquals(finalStageStart(e, 10), 40);
  assertEquals(totalSteps(e, 10), 45);
  assertEquals(totalSteps(TrainConfigSchema.parse({ epochs: 3 }), 10), 30);
  const l = TrainConfigSchema.parse({ lr: 1e-3, lrLatent: 1e-4 });
  assertEquals([lrAt(l, 5, 100, 0), lrAt(l, 5, 100, 1), lrAt(l, 5, 100, 3)], [1e-3, 1e-4, 1e-4]);
  // Inference answers at the stage of the last step trained.
  const meta = { train: c } as LotusMeta;
  assertEquals(inferenceShape(meta, { epoch: 0, step: 30 }).K, 2);
  assertEquals(inferenceShape(meta, { epoch: 0, step: 31 }).K, 3);
});

Deno.test("recipe paper: the reference's protocol, under the settings given", () => {
  const ds = { dir: "d", k: 6, c: 13 };
  const paper = resolveTrainConfig(recipeSettings("paper", "gpt2"), "gpt2", ds);
  assertEquals(
    [paper.lr, paper.batch, paper.epochs, paper.epochsPerStage, paper.dropout, paper.keepBest],
    [1e-4, 128, 30, 1, 0.1, true],
  );
  assertEquals([paper.k, paper.c, paper.lambda, paper.stepLoss], [6, 13, 0.05, "after"]);
  const mine = resolveTrainConfig(
    { ...recipeSettings("paper", "gpt2"), lr: 3e-4, batch: 32 },
    "gpt2",
    ds,
  );
  assertEquals([mine.lr, mine.batch, mine.dropout], [3e-4, 32, 0.1]);
});

Deno.test("recipe from-cot: the default of LOTUS, a CoT start and a third of the preset's rate", () => {
  const ds = { dir: "d", k: 3, c: 12 };
  assertEquals(
    [defaultRecipe("lotus"), defaultRecipe("lotus-aux"), defaultRecipe("cot")],
    ["from-cot", "from-cot", "none"],
  );
  assertEquals(defaultRecipe("nocot"), "none");
  for (const [preset, lr] of [["tiny", 1e-3], ["small", 1e-3 / 3]] as const) {
    const cfg = resolveTrainConfig(recipeSettings("from-cot", preset), preset, ds);
    assert(Math.abs(cfg.lr - lr) < 1e-15, `${preset}: ${cfg.lr}`);
    assertEquals([cfg.cotStartEpochs, cfg.epochsPerStage, cfg.keepBest], [8, 1, true]);
  }
  const none = resolveTrainConfig(recipeSettings("none", "tiny"), "tiny", ds);
  assertEquals([none.cotStartEpochs, none.lr, none.keepBest], [0, 3e-3, false]);
});
