/**
 * Activation recomputation (LotusCapacity.recompute): a training runner that keeps fewer
 * activations and rebuilds the rest in the backward gives bit-identical losses and gradients,
 * in less memory; and the loop passes' shared qkv gradients carry nothing from one step to the
 * next, whatever R each step runs.
 */
import { assert, assertEquals } from "./_assert.ts";
import {
  randomExamples,
  tinyConfig,
  tinyLlamaConfig,
  tinyModel,
  tinyParams,
  tinySpecials,
} from "./_tiny.ts";
import { type Example, lotusBatch, plainBatch } from "../train/batch.ts";
import { type LotusOptions, LotusRunner, PlainRunner } from "../train/step.ts";
import type { Model } from "../model/model.ts";
import type { ModelConfig } from "../model/config.ts";

const K = 3, c = 2;
const base: LotusOptions = { lambda: 0.5, auxWeight: 0, stepLoss: "after", injection: "add" };

function capacity(exs: Example[], R: number) {
  const b = lotusBatch(exs, tinySpecials(24), { K, R, c });
  return { B: exs.length, P: b.P, K, c, R, S: b.S + 2, auxT: c + 4 };
}

/** Loss and gradient of `steps` LOTUS steps (R each) on one runner; the last step's are kept. */
function run(
  model: Model,
  exs: Example[],
  opts: LotusOptions,
  Rs: number[],
  recompute: boolean,
) {
  const sp = tinySpecials(model.cfg.vocabSize);
  const cap = { ...capacity(exs, Math.max(...Rs)), recompute, dropout: opts.dropout !== undefined };
  const runner = new LotusRunner(model, cap, true);
  try {
    let loss = NaN;
    for (const R of Rs) {
      model.zeroGrad();
      loss = runner.step(lotusBatch(exs, sp, { K, R, c }), opts, exs).loss;
    }
    return { loss, grad: model.downloadGrads(), bytes: runner.bytes };
  } finally {
    runner.free();
  }
}

const cases: [string, ModelConfig, LotusOptions][] = [
  ["GPT-2, add, after the loop", tinyConfig({ auxLayers: 1 }), base],
  ["GPT-2, replace, in-loop, dropout", tinyConfig(), {
    ...base,
    injection: "replace",
    stepLoss: "in-loop",
    dropout: { p: 0.2, seed: 5n },
  }],
  ["GPT-2, LOTUS-aux in the loop", tinyConfig({ auxLayers: 1 }), {
    ...base,
    auxWeight: 0.3,
    auxReads: "in-loop",
  }],
  ["Llama, add, after the loop", tinyLlamaConfig(), base],
  ["Llama, replace, in-loop, dropout", tinyLlamaConfig({ tieEmbeddings: false }), {
    ...base,
    injection: "replace",
    stepLoss: "in-loop",
    dropout: { p: 0.2, seed: 6n },
  }],
];

for (const [label, cfg, opts] of cases) {
  Deno.test(`recomputation: bit-identical LOTUS loss and gradients, less memory (${label})`, () => {
    const sp = tinySpecials(cfg.vocabSize);
    const exs = randomExamples(3, cfg.vocabSize, 21, sp.eos);
    const model = tinyModel(cfg, tinyParams(cfg, 9));
    try {
      const kept = run(model, exs, opts, [K], false);
      const rebuilt = run(model, exs, opts, [K], true);
      assert(Number.isFinite(kept.loss) && kept.loss > 0, `loss ${kept.loss}`);
      assertEquals(rebuilt.loss, kept.loss);
      assertEquals(rebuilt.grad, kept.grad);
      assert(rebuilt.bytes < kept.bytes, `${rebuilt.bytes} bytes against ${kept.bytes}`);
    } finally {
      model.free();
    }
  });
}

Deno.test("shared qkv gradients of the loop passes: a step after steps at other R equals a fresh one", () => {
  const cfg = tinyConfig();
  const sp = tinySpecials(cfg.vocabSize);
  const exs = randomExamples(3, cfg.vocabSize, 22, sp.eos);
  const model = tinyModel(cfg, tinyParams(cfg, 10));
  try {
    for (const recompute of [false, true]) {
      const fresh = run(model, exs, base, [1], recompute);
      const after = run(model, exs, base, [3, 2, 1], recompute);
      assertEquals(after.loss, fresh.loss);
      assertEquals(after.grad, fresh.grad);
    }
  } finally {
    model.free();
  }
});

Deno.test("recomputation: bit-identical explicit-CoT gradients (GPT-2 and Llama)", () => {
  for (const cfg of [tinyConfig(), tinyLlamaConfig()]) {
    const sp = tinySpecials(cfg.vocabSize);
    const exs = randomExamples(3, cfg.vocabSize, 23, sp.eos);
    const model = tinyModel(cfg, tinyParams(cfg, 11));
    const b = plainBatch(exs, sp, true);
    try {
      const out = [false, true].map((recompute) => {
        const r = new PlainRunner(model, b.B, b.T, true, false, recompute);
        try {
          model.zeroGrad();
          const loss = r.step(b).loss;
          return { loss, grad: model.downloadGrads() };
        } finally {
          r.free();
        }
      });
      assertEquals(out[1].loss, out[0].loss);
      assertEquals(out[1].grad, out[0].grad);
    } finally {
      model.free();
    }
  }
});
