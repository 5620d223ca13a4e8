/**
 * Greedy generation with the K/V cache against a naive decoder that recomputes the whole
 * sequence for every token, for LOTUS and for plain (CoT) models; and batched (left-padded)
 * generation against one example at a time.
 */
import { assert, assertEquals } from "./_assert.ts";
import { randomExamples, tinyConfig, tinyModel, tinyParams, tinySpecials } from "./_tiny.ts";
import type { ModelConfig } from "../model/config.ts";

const CONFIGS: [string, ModelConfig][] = [
  ["GPT-2", tinyConfig({ vocabSize: 24 })],
  [
    "Llama",
    tinyConfig({
      vocabSize: 24,
      arch: "llama",
      nKvHead: 1,
      dFf: 40,
      ropeTheta: 10000,
      ropeScaling: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 16 },
      tieEmbeddings: false,
    }),
  ],
];
import { Generator } from "../model/generate.ts";
import type { Model } from "../model/model.ts";
import { Arena, Chunk, F32, Scratch } from "../model/stack.ts";

/** Run a full sequence (optionally with injected rows) and return the argmax at its last row. */
function naiveArgmaxLast(
  model: Model,
  ids: number[],
  inject: { from: number; rows: Float32Array } | null,
  a: Arena,
): { next: number; h: Float32Array } {
  const e = model.eng, C = model.cfg.dModel, V = model.cfg.vocabSize, T = ids.length;
  const sc = new Scratch(a, T, C, false, model.main.shape);
  const ch = new Chunk(a, model.main.shape, 1, T, 0, false);
  const up = (arr: Int32Array | Uint8Array | Float32Array) => {
    const p = a.bytes(arr.byteLength);
    e.upload(p, arr);
    return p;
  };
  const dIds = up(Int32Array.from(ids.map((x) => x)));
  const dPos = up(Int32Array.from(ids.map((_, i) => i)));
  e.embedFwd(ch.x[0], dIds, dPos, model.wte, model.wpe, T, C);
  if (inject) {
    const n = inject.rows.length / C;
    const src = up(inject.rows);
    e.copyRows(e.offset(ch.x[0], inject.from * C * F32), src, 1, n, C, T * C, C, n * C, C, true);
  }
  model.main.forward(ch, sc, 1, T, null, null, null, dPos);
  const logits = a.f32(V);
  e.matmulFwd(logits, e.offset(ch.h, (T - 1) * C * F32), model.head, null, 1, C, V);
  const l = new Float32Array(V);
  e.download(l, logits);
  let best = 0;
  for (let v = 1; v < V; v++) if (l[v] > l[best]) best = v;
  const h = new Float32Array(T * C);
  e.download(h, ch.h);
  return { next: best, h };
}

function naiveLotus(
  model: Model,
  q: Int32Array,
  K: number,
  c: number,
  R: number,
  maxNew: number,
): number[] {
  const sp = tinySpecials(model.cfg.vocabSize), C = model.cfg.dModel, L = 1 + K * c;
  const a = new Arena(model.eng);
  try {
    const loop = [sp.bot, ...Array(K * c).fill(sp.lat)];
    const base = [...q, ...loop];
    let inj: Float32Array | null = null; // h^(r-1) at the latent rows
    for (let r = 0; r <= R; r++) {
      if (r === R) break;
      const { h } = naiveArgmaxLast(model, base, inj ? { from: q.length + 1, rows: inj } : null, a);
      inj = h.slice((q.length + 1) * C, (q.length + L) * C);
    }
    const out: number[] = [];
    const seq = [...base, sp.eot];
    for (let t = 0; t < maxNew; t++) {
      const { next } = naiveArgmaxLast(
        model,
        seq,
        inj ? { from: q.length + 1, rows: inj } : null,
        a,
      );
      if (next === sp.eos) break;
      out.push(next);
      seq.push(next);
    }
    return out;
  } finally {
    a.free();
  }
}

function naivePlain(model: Model, q: Int32Array, maxNew: number): number[] {
  const sp = tinySpecials(model.cfg.vocabSize);
  const a = new Arena(model.eng);
  try {
    const seq = [...q], out: number[] = [];
    for (let t = 0; t < maxNew; t++) {
      const { next } = naiveArgmaxLast(model, seq, null, a);
      if (next === sp.eos) break;
      out.push(next);
      seq.push(next);
    }
    return out;
  } finally {
    a.free();
  }
}

for (const [label, cfg] of CONFIGS) {
  Deno.test(`LOTUS generation with the K/V cache equals naive recomputation, batched and alone (${label})`, () => {
    const sp = tinySpecials(cfg.vocabSize);
    const model = tinyModel(cfg, tinyParams(cfg, 4, 8), false);
    const qs = randomExamples(4, cfg.vocabSize, 7, sp.eos).map((e) => e.q);
    const K = 2, c = 3, R = 2, maxNew = 6;
    const gen = new Generator(model, { B: 4, P: 8, K, c, maxNewTokens: maxNew });
    try {
      const batched = gen.generate(qs, sp, {
        mode: "lotus",
        K,
        c,
        R,
        maxNewTokens: maxNew,
        latentLogits: true,
      });
      assertEquals(batched.latentLogits!.length, 4 * (1 + K * c) * cfg.vocabSize);
      let nonEmpty = 0;
      for (let i = 0; i < qs.length; i++) {
        const alone = gen.generate([qs[i]], sp, { mode: "lotus", K, c, R, maxNewTokens: maxNew });
        const naive = naiveLotus(model, qs[i], K, c, R, maxNew);
        assertEquals(alone.tokens[0], naive, `example ${i}: cached vs naive`);
        assertEquals(batched.tokens[i], naive, `example ${i}: batched vs naive`);
        if (naive.length > 0) nonEmpty++;
      }
      assert(nonEmpty > 0, "every generation was empty; the test would prove nothing");
    } finally {
      gen.free();
      model.free();
    }
  });

  Deno.test(`plain (CoT) generation with the K/V cache equals naive recomputation (${label})`, () => {
    const sp = tinySpecials(cfg.vocabSize);
    const model = tinyModel(cfg, tinyParams(cfg, 6, 8), false);
    const qs = randomExamples(3, cfg.vocabSize, 8, sp.eos).map((e) => e.q);
    const gen = new Generator(model, { B: 3, P: 8, K: 0, c: 1, maxNewTokens: 7 });
    try {
      const batched = gen.generate(qs, sp, { mode: "cot", maxNewTokens: 7 });
      for (let i = 0; i < qs.length; i++) {
        assertEquals(batched.tokens[i], naivePlain(model, qs[i], 7), `example ${i}`);
      }
    } finally {
      gen.free();
      model.free();
    }
  });
}
