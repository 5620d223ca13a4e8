/**
 * The LOTUS step on the CPU engine: its gradient against finite differences, and the
 * prefix-cached schedule against a naive recomputation of the full sequence on every pass.
 */
import { assert, assertAlmostEquals, assertEquals } from "./_assert.ts";
import {
  cpuEngine,
  randomExamples,
  tinyConfig,
  tinyLlamaConfig as llamaConfig,
  tinyModel,
  tinyParams,
  tinySpecials,
} from "./_tiny.ts";
import { auxBatch, type Example, type LotusBatch, lotusBatch, plainBatch } from "../train/batch.ts";
import { type LotusOptions, LotusRunner, PlainRunner } from "../train/step.ts";
import { paramLayout } from "../model/params.ts";
import { Rng } from "../base/rng.ts";
import type { Model } from "../model/model.ts";
import { Arena, Chunk, F32, Scratch } from "../model/stack.ts";
import type { ModelConfig } from "../model/config.ts";
import type { Ptr } from "../engine/ffi.ts";

const K = 2, c = 2, R = 2;

function capacity(exs: Example[], B: number) {
  const b = lotusBatch(exs, tinySpecials(24), { K, R, c });
  return { B, P: b.P, K, c, R, S: b.S + 2, auxT: c + 4 };
}

/** Loss and gradient of one step. */
function lossAndGrad(model: Model, exs: Example[], opts: LotusOptions, shape = { K, R, c }) {
  const sp = tinySpecials(model.cfg.vocabSize);
  const runner = new LotusRunner(
    model,
    { ...capacity(exs, exs.length), K: shape.K, R: shape.R },
    true,
  );
  try {
    model.zeroGrad();
    const l = runner.step(lotusBatch(exs, sp, shape), opts, exs);
    return { loss: l.loss, grad: model.downloadGrads() };
  } finally {
    runner.free();
  }
}

function lossOnly(
  model: Model,
  runner: LotusRunner,
  exs: Example[],
  opts: LotusOptions,
  shape = { K, R, c },
) {
  const sp = tinySpecials(model.cfg.vocabSize);
  return runner.step(lotusBatch(exs, sp, shape), opts, exs).loss;
}

/** Indices to probe: a few per tensor, plus the LOTUS token rows. */
function probeIndices(cfg: ModelConfig, seed: number): number[] {
  const layout = paramLayout(cfg), rng = new Rng(seed), out: number[] = [];
  for (const t of layout.tensors) {
    for (let i = 0; i < 2; i++) out.push(t.offset + rng.below(t.size));
  }
  const sp = tinySpecials(cfg.vocabSize);
  for (const id of [sp.lat, sp.bot, sp.eot]) {
    for (let j = 0; j < 2; j++) out.push(layout.wte + id * cfg.dModel + rng.below(cfg.dModel));
  }
  return out;
}

function checkFiniteDifferences(opts: LotusOptions, cfg: ModelConfig, label: string) {
  const exs = randomExamples(3, cfg.vocabSize, 11, tinySpecials(cfg.vocabSize).eos);
  const params = tinyParams(cfg, 3);
  const model = tinyModel(cfg, params);
  const evalRunner = new LotusRunner(model, capacity(exs, exs.length), false);
  try {
    const { grad } = lossAndGrad(model, exs, opts);
    const idx = probeIndices(cfg, 5);
    const eps = 2e-3;
    let num = 0, den = 0, worst = 0;
    for (const i of idx) {
      const p = params.slice();
      p[i] += eps;
      model.uploadParams(p);
      const up = lossOnly(model, evalRunner, exs, opts);
      p[i] -= 2 * eps;
      model.uploadParams(p);
      const down = lossOnly(model, evalRunner, exs, opts);
      const fd = (up - down) / (2 * eps);
      num += (fd - grad[i]) ** 2, den += grad[i] ** 2;
      worst = Math.max(worst, Math.abs(fd - grad[i]));
    }
    model.uploadParams(params);
    const rel = Math.sqrt(num / den);
    assert(den > 1e-6, `${label}: probed gradients are all ~0`);
    assert(
      rel < 2e-2,
      `${label}: finite differences disagree, relative error ${rel}, worst ${worst}`,
    );
  } finally {
    evalRunner.free();
    model.free();
  }
}

const base: LotusOptions = { lambda: 0.5, auxWeight: 0, stepLoss: "after", injection: "add" };

Deno.test("Llama: LOTUS step gradient matches finite differences (add, after; tied head)", () => {
  checkFiniteDifferences(base, llamaConfig(), "llama add/after");
});

Deno.test("Llama: LOTUS step gradient matches finite differences (replace, in-loop; untied)", () => {
  checkFiniteDifferences(
    { ...base, injection: "replace", stepLoss: "in-loop" },
    llamaConfig({ tieEmbeddings: false }),
    "llama replace/in-loop",
  );
});

Deno.test("Llama: LOTUS-aux step gradient matches finite differences", () => {
  checkFiniteDifferences({ ...base, auxWeight: 0.7 }, llamaConfig({ auxLayers: 1 }), "llama aux");
});

Deno.test("LOTUS step gradient matches finite differences (add injection, step loss after the loop)", () => {
  checkFiniteDifferences(base, tinyConfig(), "add/after");
});

Deno.test("LOTUS step gradient matches finite differences (replace injection, in-loop step loss)", () => {
  checkFiniteDifferences(
    { ...base, injection: "replace", stepLoss: "in-loop" },
    tinyConfig(),
    "replace/in-loop",
  );
});

Deno.test("LOTUS-aux step gradient matches finite differences", () => {
  checkFiniteDifferences({ ...base, auxWeight: 0.7 }, tinyConfig({ auxLayers: 1 }), "aux");
});

Deno.test("LOTUS-aux reading block r-1 at pass r: gradient matches finite differences", () => {
  checkFiniteDifferences(
    { ...base, auxWeight: 0.7, auxReads: "in-loop" },
    tinyConfig({ auxLayers: 1 }),
    "aux in-loop",
  );
});

Deno.test("LOTUS-aux in the loop decodes only the blocks a pass reaches", () => {
  const cfg = tinyConfig({ auxLayers: 1 });
  const sp = tinySpecials(cfg.vocabSize);
  const exs = randomExamples(3, cfg.vocabSize, 13, sp.eos);
  const model = tinyModel(cfg, tinyParams(cfg, 5));
  const shape = { K: 2, R: 1, c };
  const runner = new LotusRunner(model, { ...capacity(exs, exs.length), ...shape }, false);
  try {
    const b = lotusBatch(exs, sp, shape);
    const opts = { ...base, auxWeight: 0.7 };
    const inLoop = runner.step(b, { ...opts, auxReads: "in-loop" }, exs);
    const after = runner.step(b, opts, exs);
    // With R = 1 < K = 2 only block 0 is decoded in the loop; after the loop both are.
    const block0 = exs.reduce((n, e) => n + (e.steps[0]?.length ?? 0), 0);
    assertEquals(inLoop.nAux, block0);
    assert(after.nAux > block0, `${after.nAux}`);
  } finally {
    runner.free();
    model.free();
  }
});

/**
 * The naive schedule: every pass recomputes the whole sequence [prefix ‖ loop] from scratch,
 * and the suffix recomputes [prefix ‖ pass-R loop inputs ‖ suffix]. No K/V is shared.
 */
function naiveLossAndGrad(model: Model, exs: Example[], opts: LotusOptions) {
  const e = model.eng, C = model.cfg.dModel, V = model.cfg.vocabSize;
  const sp = tinySpecials(V);
  const b: LotusBatch = lotusBatch(exs, sp, { K, R, c });
  const { B, P, L, S } = b, T = P + L, TS = P + L + S;
  const a = new Arena(e);
  try {
    const sc = new Scratch(a, B * TS, C, true, model.main.shape);
    const passes = Array.from(
      { length: R + 1 },
      () => new Chunk(a, model.main.shape, B, T, 0, true),
    );
    const suf = new Chunk(a, model.main.shape, B, TS, 0, true);
    const cat = (
      parts: [Int32Array | Uint8Array, number][],
      n: number,
      ctor: typeof Int32Array | typeof Uint8Array,
    ) => {
      const out = new ctor(B * n);
      for (let bi = 0; bi < B; bi++) {
        let o = 0;
        for (const [arr, w] of parts) {
          out.set(arr.subarray(bi * w, (bi + 1) * w), bi * n + o), o += w;
        }
      }
      return out;
    };
    const ids = cat([[b.prefixIds, P], [b.loopIds, L]], T, Int32Array) as Int32Array;
    const pos = cat([[b.prefixPos, P], [b.loopPos, L]], T, Int32Array) as Int32Array;
    const sids = cat(
      [[b.prefixIds, P], [b.loopIds, L], [b.suffixIds, S]],
      TS,
      Int32Array,
    ) as Int32Array;
    const spos = cat(
      [[b.prefixPos, P], [b.loopPos, L], [b.suffixPos, S]],
      TS,
      Int32Array,
    ) as Int32Array;
    const valid = b.loopValid, svalid = b.suffixValid;
    const tgt = new Int32Array(B * T).fill(-100), stgt = new Int32Array(B * TS).fill(-100);
    for (let bi = 0; bi < B; bi++) {
      tgt.set(b.stepTargets.subarray(bi * L, (bi + 1) * L), bi * T + P);
      stgt.set(b.suffixTargets.subarray(bi * S, (bi + 1) * S), bi * TS + P + L);
    }
    const up = (arr: Int32Array | Uint8Array) => {
      const p = a.bytes(arr.byteLength);
      e.upload(p, arr);
      return p;
    };
    const dIds = up(ids), dPos = up(pos), dValid = up(valid), dSids = up(sids), dSpos = up(spos);
    const dSvalid = up(svalid), dTgt = up(tgt), dStgt = up(stgt);
    const logits = a.f32(B * TS * V), losses = a.f32(B * TS);
    model.zeroGrad();
    for (const ch of passes) model.main.zeroGrads(ch, B, T);
    model.main.zeroGrads(suf, B, TS);
    // loop rows [P+1, P+L) of a [B, n, C] buffer
    const inject = (dst: Chunk, n: number, src: Chunk) =>
      e.copyRows(
        e.offset(dst.x[0], (P + 1) * C * F32),
        e.offset(src.h, (P + 1) * C * F32),
        B,
        L - 1,
        C,
        n * C,
        C,
        T * C,
        C,
        true,
      );
    const injectBack = (dst: Chunk, dx: Ptr, n: number) =>
      e.copyRows(
        e.offset(dst.dh, (P + 1) * C * F32),
        e.offset(dx, (P + 1) * C * F32),
        B,
        L - 1,
        C,
        T * C,
        C,
        n * C,
        C,
        true,
      );
    const head = (ch: Chunk, rows: number, targets: Ptr, w: number, n: number) => {
      e.matmulFwd(logits, ch.h, model.head, null, rows, C, V);
      e.xentFwdBwd(logits, losses, targets, rows, V, w / n);
      e.matmulBwd(ch.dh, model.ghead, null, logits, ch.h, model.head, rows, C, V);
      const l = new Float32Array(rows);
      e.download(l, losses);
      return l.reduce((s, x) => s + x, 0) / n;
    };
    for (let r = 0; r <= R; r++) {
      e.embedFwd(passes[r].x[0], dIds, dPos, model.wte, model.wpe, B * T, C);
      if (r > 0) inject(passes[r], T, passes[r - 1]);
      model.main.forward(passes[r], sc, B, T, null, dValid, null, dPos);
    }
    const step = head(passes[R], B * T, dTgt, opts.lambda, b.nStep);
    e.embedFwd(suf.x[0], dSids, dSpos, model.wte, model.wpe, B * TS, C);
    if (R > 0) inject(suf, TS, passes[R - 1]);
    model.main.forward(suf, sc, B, TS, null, dSvalid, null, dSpos);
    const ans = head(suf, B * TS, dStgt, 1, b.nAns);
    let dx = model.main.backward(suf, sc, null);
    e.embedBwd(model.gwte, model.gwpe, dx, dSids, dSpos, B * TS, C);
    if (R > 0) injectBack(passes[R - 1], dx, TS);
    for (let r = R; r >= 0; r--) {
      dx = model.main.backward(passes[r], sc, null);
      e.embedBwd(model.gwte, model.gwpe, dx, dIds, dPos, B * T, C);
      if (r > 0) injectBack(passes[r - 1], dx, T);
    }
    return { loss: ans + opts.lambda * step, grad: model.downloadGrads() };
  } finally {
    a.free();
  }
}

for (
  const [label, cfg] of [
    ["GPT-2", tinyConfig()],
    ["Llama, GQA, untied head", llamaConfig({ tieEmbeddings: false })],
  ] as const
) {
  Deno.test(`prefix-cached R+1-pass schedule equals a naive full recomputation (${label})`, () => {
    naiveEqualsCached(cfg);
  });
}

function naiveEqualsCached(cfg: ModelConfig) {
  const exs = randomExamples(3, cfg.vocabSize, 21, tinySpecials(cfg.vocabSize).eos);
  const model = tinyModel(cfg, tinyParams(cfg, 9));
  try {
    const cached = lossAndGrad(model, exs, base);
    const naive = naiveLossAndGrad(model, exs, base);
    assertAlmostEquals(cached.loss, naive.loss, 1e-5 * Math.abs(naive.loss));
    let maxG = 0, maxD = 0;
    for (let i = 0; i < naive.grad.length; i++) {
      maxG = Math.max(maxG, Math.abs(naive.grad[i]));
      maxD = Math.max(maxD, Math.abs(naive.grad[i] - cached.grad[i]));
    }
    assert(maxG > 0, "gradient is zero");
    assert(maxD / maxG < 1e-4, `gradients differ: max |diff| ${maxD} vs max |g| ${maxG}`);
  } finally {
    model.free();
  }
}

Deno.test("aux batch shape feeds the runner without error for examples with fewer steps than K", () => {
  const cfg = tinyConfig({ auxLayers: 1 });
  const sp = tinySpecials(cfg.vocabSize);
  const exs = randomExamples(2, cfg.vocabSize, 31, sp.eos).map((e) => ({
    ...e,
    steps: e.steps.slice(0, 1),
  }));
  assert(auxBatch(exs, K, c).nTargets > 0);
  const model = tinyModel(cfg, tinyParams(cfg, 1));
  try {
    const { loss } = lossAndGrad(model, exs, { ...base, auxWeight: 1 });
    assert(Number.isFinite(loss));
  } finally {
    model.free();
  }
});

Deno.test("gradients reach the LAT embedding row and the prefix through every pass", () => {
  const cfg = tinyConfig();
  const sp = tinySpecials(cfg.vocabSize);
  const exs = randomExamples(2, cfg.vocabSize, 41, sp.eos);
  const model = tinyModel(cfg, tinyParams(cfg, 2));
  try {
    const { grad } = lossAndGrad(model, exs, base);
    const layout = paramLayout(cfg), C = cfg.dModel;
    const row = (id: number) => grad.subarray(layout.wte + id * C, layout.wte + (id + 1) * C);
    assert(row(sp.lat).some((x) => x !== 0), "LAT row has no gradient");
    assert(row(sp.bot).some((x) => x !== 0), "BOT row has no gradient");
    assert(row(exs[0].q[0]).some((x) => x !== 0), "question token row has no gradient");
  } finally {
    model.free();
  }
  cpuEngine();
});

Deno.test("in-loop step loss with R < K averages over the blocks the passes supervise", () => {
  const cfg = tinyConfig();
  const sp = tinySpecials(cfg.vocabSize);
  const exs = randomExamples(3, cfg.vocabSize, 12, sp.eos);
  const model = tinyModel(cfg, tinyParams(cfg, 4));
  const shape = { K: 2, R: 1, c };
  const runner = new LotusRunner(model, { ...capacity(exs, exs.length), ...shape }, false);
  try {
    const b = lotusBatch(exs, sp, shape);
    const inBlock0 = b.stepBlock.filter((k) => k === 0).length;
    assert(inBlock0 > 0 && inBlock0 < b.nStep, "the batch has targets in both blocks");
    const l = runner.step(b, { ...base, stepLoss: "in-loop" }, exs);
    // Pass 1 supervises block 0 only: its targets are the denominator, not all K blocks'.
    assertEquals(l.nStep, inBlock0);
    const after = runner.step(b, base, exs);
    assertEquals(after.nStep, b.nStep);
  } finally {
    runner.free();
    model.free();
  }
});

Deno.test("LOTUS step with dropout: gradient matches finite differences under fixed masks", () => {
  const cfg = tinyConfig();
  const sp = tinySpecials(cfg.vocabSize);
  const exs = randomExamples(3, cfg.vocabSize, 11, sp.eos);
  const params = tinyParams(cfg, 3);
  const model = tinyModel(cfg, params);
  // A training runner for the gradient and for every finite difference: the masks depend on
  // the seed alone, so the loss is a fixed function of the weights.
  const runner = new LotusRunner(model, { ...capacity(exs, exs.length), dropout: true }, true);
  const opts: LotusOptions = { ...base, dropout: { p: 0.2, seed: 77n } };
  const loss = () => {
    model.zeroGrad();
    return runner.step(lotusBatch(exs, sp, { K, R, c }), opts, exs).loss;
  };
  try {
    const l0 = loss();
    const grad = model.downloadGrads();
    const idx = probeIndices(cfg, 6), eps = 2e-3;
    let num = 0, den = 0;
    for (const i of idx) {
      const p = params.slice();
      p[i] += eps;
      model.uploadParams(p);
      const up = loss();
      p[i] -= 2 * eps;
      model.uploadParams(p);
      const down = loss();
      const fd = (up - down) / (2 * eps);
      num += (fd - grad[i]) ** 2, den += grad[i] ** 2;
    }
    model.uploadParams(params);
    assert(den > 1e-6, "probed gradients are all ~0");
    assert(Math.sqrt(num / den) < 2e-2, `relative error ${Math.sqrt(num / den)}`);
    // Dropout is on: another seed gives another loss; p = 0 is the plain step.
    const other = runner.step(lotusBatch(exs, sp, { K, R, c }), {
      ...opts,
      dropout: { p: 0.2, seed: 78n },
    }, exs).loss;
    assert(other !== l0, "another seed drops other elements");
    const none = runner.step(lotusBatch(exs, sp, { K, R, c }), {
      ...opts,
      dropout: { p: 0, seed: 77n },
    }, exs).loss;
    const plain = runner.step(lotusBatch(exs, sp, { K, R, c }), base, exs).loss;
    assertEquals(none, plain);
  } finally {
    runner.free();
    model.free();
  }
});

Deno.test("spilled step targets: the step loss sums one cross-entropy per layer", () => {
  const cfg = tinyConfig();
  const sp = tinySpecials(cfg.vocabSize);
  // Steps longer than c = 2 so that every example spills.
  const exs = randomExamples(3, cfg.vocabSize, 21, sp.eos).map((e) => ({
    ...e,
    steps: e.steps.map((s, i) => i === 0 ? Int32Array.from([...s, ...s, 5]) : s),
  }));
  const model = tinyModel(cfg, tinyParams(cfg, 5));
  const runner = new LotusRunner(model, capacity(exs, exs.length), false);
  try {
    for (const stepLoss of ["after", "in-loop"] as const) {
      const opts = { ...base, stepLoss };
      const spill = lotusBatch(exs, sp, { K, R, c, longStep: "spill" });
      assert(spill.spillTargets.length > 0, "the batch spills");
      const all = runner.step(spill, opts, exs);
      assert(all.nStep > lotusBatch(exs, sp, { K, R, c }).nStep);
      // Each layer alone, as if it were the only one: the sums must add up.
      const layers = [spill.stepTargets, ...spill.spillTargets];
      const blocks = [spill.stepBlock, ...spill.spillBlock];
      let sum = 0, n = 0;
      for (let m = 0; m < layers.length; m++) {
        const one: LotusBatch = {
          ...spill,
          stepTargets: layers[m],
          stepBlock: blocks[m],
          spillTargets: [],
          spillBlock: [],
          nStep: layers[m].filter((t) => t >= 0).length,
        };
        const l = runner.step(one, opts, exs);
        sum += l.step * l.nStep, n += l.nStep;
      }
      assertEquals(all.nStep, n);
      assertAlmostEquals(all.step * all.nStep, sum, 1e-3 * Math.max(1, sum));
    }
  } finally {
    runner.free();
    model.free();
  }
});

Deno.test("the LM head in row chunks gives the step's losses and gradients of one whole pass", () => {
  const cfg = tinyConfig({ auxLayers: 1 });
  const sp = tinySpecials(cfg.vocabSize);
  const exs = randomExamples(4, cfg.vocabSize, 61, sp.eos);
  const model = tinyModel(cfg, tinyParams(cfg, 5));
  const opts: LotusOptions = { ...base, auxWeight: 0.7 };
  const run = (headRows?: number) => {
    const runner = new LotusRunner(model, { ...capacity(exs, exs.length), headRows }, true);
    try {
      model.zeroGrad();
      const l = runner.step(lotusBatch(exs, sp, { K, R, c }), opts, exs);
      return { l, grad: model.downloadGrads(), bytes: runner.bytes };
    } finally {
      runner.free();
    }
  };
  try {
    const whole = run(), chunked = run(5); // 5 rows: every head runs in several chunks
    assert(chunked.bytes < whole.bytes, "a smaller logits buffer");
    for (const k of ["loss", "ans", "step", "aux"] as const) {
      assert(whole.l[k] > 0, k);
      assertAlmostEquals(chunked.l[k], whole.l[k], 1e-6 * whole.l[k], k);
    }
    let maxG = 0, maxD = 0;
    for (let i = 0; i < whole.grad.length; i++) {
      maxG = Math.max(maxG, Math.abs(whole.grad[i]));
      maxD = Math.max(maxD, Math.abs(whole.grad[i] - chunked.grad[i]));
    }
    // Only summation order differs (the head's gradient is summed chunk by chunk): measured
    // 2e-7 of the largest gradient.
    assert(maxG > 0 && maxD / maxG < 1e-5, `gradients differ: ${maxD} vs ${maxG}`);
  } finally {
    model.free();
  }
});

for (
  const [label, cfg] of [
    ["GPT-2", tinyConfig()],
    ["Llama, untied head", llamaConfig({ tieEmbeddings: false })],
  ] as const
) {
  Deno.test(`explicit-CoT step gradient matches finite differences (${label})`, () => {
    const sp = tinySpecials(cfg.vocabSize);
    const exs = randomExamples(3, cfg.vocabSize, 12, sp.eos);
    const params = tinyParams(cfg, 4);
    const model = tinyModel(cfg, params);
    const b = plainBatch(exs, sp, true);
    const train = new PlainRunner(model, b.B, b.T, true);
    const evalR = new PlainRunner(model, b.B, b.T, false);
    try {
      model.zeroGrad();
      train.step(b);
      const grad = model.downloadGrads();
      const eps = 2e-3;
      let num = 0, den = 0;
      for (const i of probeIndices(cfg, 7)) {
        const p = params.slice();
        p[i] += eps;
        model.uploadParams(p);
        const up = evalR.step(b).loss;
        p[i] -= 2 * eps;
        model.uploadParams(p);
        const down = evalR.step(b).loss;
        const fd = (up - down) / (2 * eps);
        num += (fd - grad[i]) ** 2, den += grad[i] ** 2;
      }
      assert(den > 1e-6, "probed gradients are all ~0");
      assert(Math.sqrt(num / den) < 2e-2, `relative error ${Math.sqrt(num / den)}`);
    } finally {
      train.free();
      evalR.free();
      model.free();
    }
  });
}
