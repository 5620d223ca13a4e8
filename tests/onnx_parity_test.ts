/**
 * The ONNX backend against the native CPU engine on tiny GPT-2 and Llama models: logits of the
 * prefix, of a loop pass with injection and of a decode step on fresh random tokens (relative
 * error at most 1e-4, fp32), whole LOTUS answers (the same greedy tokens and latent readout),
 * and the export cache of `--backend onnx`. The Llama cases cover grouped-query attention
 * (2 and 4 query heads per key/value head, and none), Llama 3 rotary scaling whose three bands
 * the test's positions meet, and tied and untied LM heads.
 *
 * The engine side recomputes the whole sequence for every check (no cache), so the ONNX
 * side's cached prefix, its loop passes over the cache and its decode step are each checked
 * against a computation that shares none of their bookkeeping.
 */
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { tempDir } from "./_tmp.ts";
import { ROOT } from "./_run.ts";
import { cpuEngine } from "./_tiny.ts";
import {
  FIXTURE_QUESTIONS,
  recordChecksums,
  TINY_LLAMA,
  tinyCheckpoint,
} from "./_export_fixture.ts";
import { checkpointFingerprint, exportCheckpoint } from "../export/export.ts";
import {
  type BackboneOutput,
  ONNX_CACHE_DIR,
  ONNX_CACHE_RECORD,
  OnnxBackbone,
  onnxExportFor,
} from "../infer/onnx_session.ts";
import { openInference } from "../infer/inference.ts";
import type { AnswerOptions } from "../infer/session.ts";
import { CheckpointError, CHECKSUMS_FILE, loadCheckpoint } from "../model/checkpoint.ts";
import { Model } from "../model/model.ts";
import { Arena, Chunk, Scratch } from "../model/stack.ts";
import { Rng } from "../base/rng.ts";
import { fileChecksum, readChecksums, verifyChecksums } from "../base/checksums.ts";
import { sha256Hex } from "../base/sha256.ts";
import { exists } from "../base/exists.ts";
import { leftPadQuestions } from "../model/generate.ts";
import type { ModelConfig } from "../model/config.ts";

/** Full-sequence forward on the engine: ids (-1: no token embedding), optional added rows. */
function engineForward(
  model: Model,
  B: number,
  T: number,
  ids: Int32Array,
  pos: Int32Array,
  valid: Uint8Array,
  add: Float32Array | null,
): { logits: Float32Array; h: Float32Array } {
  const e = model.eng, C = model.cfg.dModel, V = model.cfg.vocabSize, N = B * T;
  const a = new Arena(e);
  try {
    const sc = new Scratch(a, N, C, false);
    const ch = new Chunk(a, model.main.shape, B, T, 0, false);
    const up = (x: Int32Array | Uint8Array | Float32Array) => {
      const p = a.bytes(x.byteLength);
      e.upload(p, x);
      return p;
    };
    const posPtr = up(pos);
    e.embedFwd(ch.x[0], up(ids), posPtr, model.wte, model.wpe, N, C);
    if (add) e.copyRows(ch.x[0], up(add), 1, N, C, N * C, C, N * C, C, true);
    // The positions also go to the stack: a Llama rotates queries and keys by them.
    model.main.forward(ch, sc, B, T, null, up(valid), null, posPtr);
    const lg = a.f32(N * V);
    e.matmulFwd(lg, ch.h, model.head, null, N, C, V);
    const logits = new Float32Array(N * V), h = new Float32Array(N * C);
    e.download(logits, lg);
    e.download(h, ch.h);
    return { logits, h };
  } finally {
    a.free();
  }
}

/**
 * max |a - b| / max |b| over the rows where `use` is true (rows of width `w`); the largest
 * absolute error seen goes into `worst`.
 */
function relError(
  a: Float32Array,
  b: Float32Array,
  w: number,
  use: (row: number) => boolean,
  worst?: { abs: number; rel: number },
) {
  assertEquals(a.length, b.length);
  let num = 0, den = 0;
  for (let r = 0; r < a.length / w; r++) {
    if (!use(r)) continue;
    for (let j = r * w; j < (r + 1) * w; j++) {
      num = Math.max(num, Math.abs(a[j] - b[j]));
      den = Math.max(den, Math.abs(b[j]));
    }
  }
  assert(den > 1, `logits are too small (${den}) for a meaningful comparison`);
  if (worst) worst.abs = Math.max(worst.abs, num), worst.rel = Math.max(worst.rel, num / den);
  return num / den;
}

const PARITY_CASES: {
  name: string;
  injection: "add" | "replace";
  model: Partial<ModelConfig>;
  scale: number;
}[] = [
  { name: "GPT-2", injection: "add", model: { dModel: 32, nHead: 4, nLayer: 2 }, scale: 4 },
  { name: "GPT-2", injection: "replace", model: { dModel: 32, nHead: 4, nLayer: 2 }, scale: 4 },
  {
    name: "Llama, 4 heads on 2 KV heads, rope scaling, tied head",
    injection: "add",
    model: { ...TINY_LLAMA, nKvHead: 2, tieEmbeddings: true },
    scale: 6,
  },
  {
    name: "Llama, 4 heads on 1 KV head, rope scaling, untied head",
    injection: "replace",
    model: { ...TINY_LLAMA, nKvHead: 1, tieEmbeddings: false },
    scale: 6,
  },
  {
    name: "Llama, 4 KV heads, no rope scaling, untied head",
    injection: "add",
    model: { ...TINY_LLAMA, nKvHead: 4, ropeScaling: null, normEps: 1e-6, tieEmbeddings: false },
    scale: 6,
  },
];

for (const { name, injection, model: over, scale } of PARITY_CASES) {
  Deno.test(`ONNX logits match the CPU engine (1e-4), ${name}: prefix, loop pass (${injection}), decode step`, async () => {
    const d = await tempDir();
    const { cfg, tok } = await tinyCheckpoint(`${d}/ck`, {
      injection,
      model: over,
      seed: 11,
      scale,
    });
    await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "onnx" });
    const ck = await loadCheckpoint(`${d}/ck`);
    const model = new Model(cpuEngine(), cfg, ck.params, false);
    const net = await OnnxBackbone.open(`${d}/ex`, { threads: 2 });
    try {
      const seed = (Math.random() * 2 ** 31) >>> 0; // fresh tokens every run
      const rng = new Rng(seed), sp = tok.special, V = cfg.vocabSize, C = cfg.dModel;
      const qs = [5, 9].map((n) => Int32Array.from({ length: n }, () => rng.below(sp.eos)));
      const B = qs.length, K = 2, c = 3, L = 1 + K * c;
      const pre = leftPadQuestions(qs, sp.pad), P = pre.P, S = P + L;
      const where = `(seed ${seed})`;
      const worst = { abs: 0, rel: 0 };

      // Prefix.
      const onnxPre = await net.forward({ ids: pre.ids }, B, P, {
        positions: pre.pos,
        mask: pre.valid,
        past: net.emptyCache(B),
        logitsToKeep: 0,
      });
      const engPre = engineForward(model, B, P, pre.ids, pre.pos, pre.valid, null);
      const ePre = relError(onnxPre.logits!, engPre.logits, V, (r) => pre.valid[r] === 1, worst);
      assert(ePre <= 1e-4, `prefix logits: relative error ${ePre} ${where}`);

      // Loop region: pass 0 (ids), then pass 1 (embeddings with the injection).
      const loopIds = new Int32Array(B * L).fill(sp.lat), loopPos = new Int32Array(B * L);
      const mask = new Uint8Array(B * S);
      const full = { ids: new Int32Array(B * S), pos: new Int32Array(B * S), valid: mask };
      for (let b = 0; b < B; b++) {
        loopIds[b * L] = sp.bot;
        for (let i = 0; i < L; i++) loopPos[b * L + i] = pre.qLen[b] + i;
        mask.set(pre.valid.subarray(b * P, (b + 1) * P), b * S);
        mask.fill(1, b * S + P, (b + 1) * S);
        full.ids.set(pre.ids.subarray(b * P, (b + 1) * P), b * S);
        full.ids.set(loopIds.subarray(b * L, (b + 1) * L), b * S + P);
        full.pos.set(pre.pos.subarray(b * P, (b + 1) * P), b * S);
        full.pos.set(loopPos.subarray(b * L, (b + 1) * L), b * S + P);
      }
      const args = {
        positions: loopPos,
        mask,
        past: onnxPre.present,
        hidden: true,
        logitsToKeep: 0,
      };
      const pass0: BackboneOutput = await net.forward({ ids: loopIds }, B, L, args);
      const eng0 = engineForward(model, B, S, full.ids, full.pos, mask, null);
      const [eBot, eLat] = [
        await net.tokenEmbeddings([sp.bot]),
        await net.tokenEmbeddings([sp.lat]),
      ];
      const x = new Float32Array(B * L * C);
      const engAdd = new Float32Array(B * S * C), engIds = full.ids.slice();
      for (let b = 0; b < B; b++) {
        x.set(eBot, b * L * C);
        for (let i = 1; i < L; i++) {
          for (let j = 0; j < C; j++) {
            const o = (b * L + i) * C + j;
            x[o] = (injection === "add" ? eLat[j] : 0) + pass0.hidden![o];
            engAdd[(b * S + P + i) * C + j] = eng0.h[(b * S + P + i) * C + j];
          }
          if (injection === "replace") engIds[b * S + P + i] = -1;
        }
      }
      const pass1 = await net.forward({ embeds: x }, B, L, args);
      const eng1 = engineForward(model, B, S, engIds, full.pos, mask, engAdd);
      const loopRows = (logits: Float32Array) => {
        const out = new Float32Array(B * L * V);
        for (let b = 0; b < B; b++) {
          out.set(logits.subarray((b * S + P) * V, (b * S + S) * V), b * L * V);
        }
        return out;
      };
      const e0 = relError(pass0.logits!, loopRows(eng0.logits), V, () => true, worst);
      const e1 = relError(pass1.logits!, loopRows(eng1.logits), V, () => true, worst);
      assert(e0 <= 1e-4, `loop pass 0 logits: relative error ${e0} ${where}`);
      assert(e1 <= 1e-4, `loop pass 1 (${injection}) logits: relative error ${e1} ${where}`);

      // Decode step: EOT attending to the prefix and pass 1's keys and values.
      const dMask = new Uint8Array(B * (S + 1)), dPos = new Int32Array(B);
      const dec = { ids: new Int32Array(B * (S + 1)), pos: new Int32Array(B * (S + 1)) };
      const dAdd = new Float32Array(B * (S + 1) * C);
      for (let b = 0; b < B; b++) {
        dMask.set(mask.subarray(b * S, (b + 1) * S), b * (S + 1));
        dMask[b * (S + 1) + S] = 1;
        dPos[b] = pre.qLen[b] + L;
        dec.ids.set(engIds.subarray(b * S, (b + 1) * S), b * (S + 1));
        dec.ids[b * (S + 1) + S] = sp.eot;
        dec.pos.set(full.pos.subarray(b * S, (b + 1) * S), b * (S + 1));
        dec.pos[b * (S + 1) + S] = dPos[b];
        dAdd.set(engAdd.subarray(b * S * C, (b + 1) * S * C), b * (S + 1) * C);
      }
      const step = await net.forward({ ids: new Int32Array(B).fill(sp.eot) }, B, 1, {
        positions: dPos,
        mask: dMask,
        past: pass1.present,
        logitsToKeep: 1,
      });
      const engDec = engineForward(model, B, S + 1, dec.ids, dec.pos, dMask, dAdd);
      const lastRows = new Float32Array(B * V);
      for (let b = 0; b < B; b++) {
        lastRows.set(engDec.logits.subarray((b * (S + 1) + S) * V, (b + 1) * (S + 1) * V), b * V);
      }
      const eDec = relError(step.logits!, lastRows, V, () => true, worst);
      assert(eDec <= 1e-4, `decode step logits: relative error ${eDec} ${where}`);
      assertEquals(step.present.length, S + 1);
      // The cache holds the key/value heads only (a Llama's nKvHead), as Hugging Face's does.
      const kv = cfg.nKvHead ?? cfg.nHead;
      for (const t of step.present.layers.flat()) {
        assertEquals(t.dims, [B, kv, S + 1, C / cfg.nHead]);
      }
      console.log(
        `${name} (${injection}): max |Δ logit| ${worst.abs.toExponential(2)}, relative ` +
          `${worst.rel.toExponential(2)} ${where}`,
      );
    } finally {
      await net.close();
      model.free();
    }
  });
}

const ANSWER_CASES: { mode: "lotus" | "cot"; name: string; model?: Partial<ModelConfig> }[] = [
  { mode: "lotus", name: "GPT-2" },
  { mode: "cot", name: "GPT-2" },
  { mode: "lotus", name: "Llama", model: { ...TINY_LLAMA, nKvHead: 2, tieEmbeddings: false } },
];

for (const { mode, name, model: over } of ANSWER_CASES) {
  Deno.test(`ONNX inference answers as the engine does (${name}, ${mode}): greedy tokens and readout`, async () => {
    const d = await tempDir();
    await tinyCheckpoint(`${d}/ck`, { mode, k: 2, c: 3, seed: 7, injection: "add", model: over });
    await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "onnx" });
    const cpu = await openInference(`${d}/ck`, { backend: "cpu", threads: 2 });
    const onnx = await openInference(`${d}/ex`, { backend: "onnx", threads: 2 });
    try {
      assertEquals(onnx.shape, cpu.shape);
      assertEquals(onnx.backend, "onnx");
      for (const qs of [FIXTURE_QUESTIONS, [FIXTURE_QUESTIONS[2]]]) {
        for (const o of [{}, { k: 1 }]) {
          const opts = { ...o, latentLogits: true, maxNewTokens: 12 };
          const a = await cpu.answer(qs, opts), b = await onnx.answer(qs, opts);
          assertEquals([b.K, b.R, b.c], [a.K, a.R, a.c]);
          assertEquals(b.answers.map((x) => x.tokens), a.answers.map((x) => x.tokens));
          assertEquals(b.answers.map((x) => x.text), a.answers.map((x) => x.text));
          assert(a.answers.some((x) => x.tokens.length > 2), "answers too short to compare");
          assertEquals(b.timings.decodeSteps, a.timings.decodeSteps);
          for (let i = 0; i < qs.length; i++) {
            const x = b.answers[i].latentLogits, y = a.answers[i].latentLogits;
            if (mode === "cot") {
              assertEquals([x, y], [undefined, undefined]);
              continue;
            }
            const V = cpu.meta.model.vocabSize;
            const e = relError(x!, y!, V, () => true);
            assert(e <= 1e-4, `latent logits of question ${i}: relative error ${e}`);
          }
        }
      }
    } finally {
      await cpu.close();
      await onnx.close();
    }
  });
}

Deno.test("--backend onnx times the readout in no phase, as the engine does: not in the thought phase nor in decoding", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { mode: "lotus", k: 2, c: 3, seed: 7, injection: "add" });
  await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "onnx" });
  // The run that gives every loop row's logits (the readout) is made slow: the phase that
  // holds it would take that long.
  const DELAY = 2000;
  const forward = OnnxBackbone.prototype.forward;
  let slowRuns = 0;
  OnnxBackbone.prototype.forward = async function (this: OnnxBackbone, input, B, T, args) {
    const out = await forward.call(this, input, B, T, args);
    if (args.logitsToKeep === 0) {
      slowRuns++;
      await new Promise((r) => setTimeout(r, DELAY));
    }
    return out;
  };
  const s = await openInference(`${d}/ex`, { backend: "onnx", threads: 1 });
  try {
    const r = await s.answer([FIXTURE_QUESTIONS[0]], { latentLogits: true, maxNewTokens: 4 });
    assertEquals(slowRuns, 1);
    const L = 1 + r.K * r.c, V = s.meta.model.vocabSize;
    assertEquals(r.answers[0].latentLogits?.length, L * V);
    const t = r.timings;
    assert(t.thoughtMs < DELAY, `the thought phase holds the readout: ${t.thoughtMs} ms`);
    assert(t.decodeMs < DELAY, `decoding holds the readout: ${t.decodeMs} ms`);
    assert(t.stepMs.every((ms) => ms < DELAY), `a decode step holds the readout: ${t.stepMs}`);
  } finally {
    OnnxBackbone.prototype.forward = forward;
    await s.close();
  }
});

Deno.test("both backends refuse a bad answer() request alike, naming it; a second close is fine", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { mode: "lotus", k: 2, c: 3, seed: 7, injection: "add" });
  await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "onnx" });
  for (const [dir, backend] of [[`${d}/ck`, "cpu"], [`${d}/ex`, "onnx"]] as const) {
    const s = await openInference(dir, { backend, threads: 1, maxBatch: 2 });
    const q = [FIXTURE_QUESTIONS[0]];
    // Longer than the model's context on its own: no option makes room for an answer.
    const long = `${FIXTURE_QUESTIONS[1]} ${"and then some more ".repeat(400)}`;
    const cases: [string[], AnswerOptions, string][] = [
      [[], {}, "at least one question"],
      [[...FIXTURE_QUESTIONS.slice(0, 3)], {}, "exceed the session's batch of 2"],
      [q, { k: -1 }, "k = -1"],
      [q, { k: 1.5 }, "k = 1.5"],
      [q, { r: -1 }, "r = -1"],
      [q, { maxNewTokens: 0 }, "maxNewTokens = 0"],
      [q, { maxNewTokens: 100_000 }, "question 0, of "],
      [q, { maxNewTokens: 100_000 }, "fewer new tokens"],
      [[q[0], long], {}, "question 1 is too long"],
      [[q[0], long], { maxNewTokens: 1, k: 0 }, "shorten it"],
      // Text the tokenizer would read as a special token: an EOS or a latent slot inside.
      [
        [q[0], `${q[0]} <|endoftext|>`],
        {},
        'question 1 holds "<|endoftext|>", which the tokenizer reads as its special token ' +
        `${s.meta.special.eos}, not as text; remove it from the question`,
      ],
      [[`Ann has <|latent|> pens.`], {}, `special token ${s.meta.special.lat}, not as text`],
    ];
    for (const [qs, o, text] of cases) {
      await assertRejects(() => s.answer(qs, o), RangeError, text);
    }
    assertEquals((await s.answer(q, { maxNewTokens: 2 })).answers.length, 1);
    await s.close();
    await s.close();
  }
});

Deno.test("deno task infer --backend onnx keeps onnxruntime's telemetry off: no Microsoft/ under a fresh cache directory", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { mode: "lotus", k: 2, c: 3, seed: 7 });
  await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "onnx" });
  // A clean environment: this test process has set ORT_DISABLE_TELEMETRY itself, and a child
  // would inherit it.
  const child = await new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", "infer", "--checkpoint", `${d}/ex`, "--backend", "onnx", "--threads", "1"]
      .concat(FIXTURE_QUESTIONS[0]),
    cwd: ROOT,
    clearEnv: true,
    env: { PATH: Deno.env.get("PATH") ?? "", HOME: d, XDG_CACHE_HOME: `${d}/cache`, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(child.stderr);
  assertEquals(child.code, 0, err);
  assert(new TextDecoder().decode(child.stdout).includes("answer"), err);
  assertEquals(await exists(`${d}/cache/Microsoft`), false, "onnxruntime wrote its telemetry");
  assertEquals(await exists(`${d}/.cache/Microsoft`), false, "onnxruntime wrote its telemetry");
});

Deno.test("--backend onnx on a checkpoint exports it once to onnx-cache, again when it changes", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { seed: 1 });
  const cache = `${d}/ck/${ONNX_CACHE_DIR}`;
  const first = await openInference(`${d}/ck`, { backend: "onnx", threads: 2 });
  const q = [FIXTURE_QUESTIONS[0]];
  const a1 = await first.answer(q, { maxNewTokens: 6 });
  await first.close();
  const made = (await Deno.stat(`${cache}/onnx/model.onnx_data`)).mtime!.getTime();
  const again = await openInference(`${d}/ck`, { backend: "onnx", threads: 2 });
  assertEquals((await again.answer(q, { maxNewTokens: 6 })).answers, a1.answers);
  await again.close();
  assertEquals((await Deno.stat(`${cache}/onnx/model.onnx_data`)).mtime!.getTime(), made);

  // New weights in the checkpoint: the cache is stale and is exported again.
  await tinyCheckpoint(`${d}/ck2`, { seed: 2 });
  for (const f of ["model.safetensors", CHECKSUMS_FILE]) {
    await Deno.copyFile(`${d}/ck2/${f}`, `${d}/ck/${f}`);
  }
  const cpu = await openInference(`${d}/ck`, { backend: "cpu", threads: 2 });
  const want = await cpu.answer(q, { maxNewTokens: 6 });
  await cpu.close();
  const fresh = await openInference(`${d}/ck`, { backend: "onnx", threads: 2 });
  const got = await fresh.answer(q, { maxNewTokens: 6 });
  await fresh.close();
  assertEquals(got.answers.map((x) => x.tokens), want.answers.map((x) => x.tokens));
  assert(JSON.stringify(got.answers) !== JSON.stringify(a1.answers), "new weights, same answers");
});

/** Every 1000th float of an ONNX weight file set to NaN (the first included). */
async function nanEvery1000(path: string): Promise<void> {
  const bytes = await Deno.readFile(path);
  const f = new Float32Array(bytes.buffer, 0, bytes.length >> 2);
  for (let i = 0; i < f.length; i += 1000) f[i] = NaN;
  await Deno.writeFile(path, bytes);
}

Deno.test("--backend onnx: a cache file changed since its export is noticed, and the cache exported again", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { seed: 4 });
  const cache = `${d}/ck/${ONNX_CACHE_DIR}`, data = `${cache}/onnx/model.onnx_data`;
  const q = [FIXTURE_QUESTIONS[1]];
  const answers = async () => {
    const s = await openInference(`${d}/ck`, { backend: "onnx", threads: 1 });
    try {
      return (await s.answer(q, { maxNewTokens: 6, latentLogits: true })).answers;
    } finally {
      await s.close();
    }
  };
  const want = await answers();
  assert(await Deno.stat(`${cache}/${ONNX_CACHE_RECORD}`), "the cache records its files");
  const reuse = async () => {
    const lines: string[] = [];
    assertEquals(await onnxExportFor(`${d}/ck`, (l) => lines.push(l)), cache);
    return lines;
  };
  assertEquals(await reuse(), [], "a sound cache is used as it is, silently");

  const damages: [string, () => Promise<void>, string][] = [
    ["NaN in every 1000th weight", () => nanEvery1000(data), "onnx/model.onnx_data"],
    ["one byte flipped", async () => {
      const b = await Deno.readFile(data);
      b[b.length >> 1] ^= 0x40;
      await Deno.writeFile(data, b);
    }, "onnx/model.onnx_data"],
    ["a graph replaced", async () => {
      await Deno.copyFile(`${cache}/onnx/model_embeds.onnx`, `${cache}/onnx/model.onnx`);
    }, "onnx/model.onnx"],
    ["tokenizer.json truncated", async () => {
      const t = await Deno.readTextFile(`${cache}/tokenizer.json`);
      await Deno.writeTextFile(`${cache}/tokenizer.json`, t.slice(0, t.length >> 1));
    }, "tokenizer.json"],
    ["no record", () => Deno.remove(`${cache}/${ONNX_CACHE_RECORD}`), ONNX_CACHE_RECORD],
  ];
  for (const [what, damage, file] of damages) {
    await damage();
    const lines = await reuse();
    assertEquals(lines.length, 1, `${what}: ${lines.join("\n")}`);
    for (const p of [`${cache}/${file}`, "exporting", "again"]) {
      assert(lines[0].includes(p), `${what}: "${lines[0]}" lacks ${JSON.stringify(p)}`);
    }
    assertEquals(await reuse(), [], `${what}: the new cache is used as it is`);
    const got = await answers();
    assertEquals(got.map((a) => a.tokens), want.map((a) => a.tokens), what);
    assertEquals(got[0].latentLogits, want[0].latentLogits, what);
  }
});

Deno.test("--backend onnx: a cache missing lotus.json, its graphs or everything is exported again, naming the damage", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { seed: 10 });
  const cache = `${d}/ck/${ONNX_CACHE_DIR}`;
  const q = [FIXTURE_QUESTIONS[2]];
  const answers = async () => {
    const s = await openInference(`${d}/ck`, { backend: "onnx", threads: 1 });
    try {
      return (await s.answer(q, { maxNewTokens: 6 })).answers.map((a) => a.tokens);
    } finally {
      await s.close();
    }
  };
  const want = await answers();
  const reuse = async () => {
    const lines: string[] = [];
    assertEquals(await onnxExportFor(`${d}/ck`, (l) => lines.push(l)), cache);
    return lines;
  };
  const emptied = async () => {
    for await (const e of Deno.readDir(cache)) {
      await Deno.remove(`${cache}/${e.name}`, { recursive: true });
    }
  };
  const damages: [string, () => Promise<void>, string[]][] = [
    ["lotus.json removed", () => Deno.remove(`${cache}/lotus.json`), [
      `${cache}/lotus.json is missing`,
    ]],
    ["lotus.json not JSON", () => Deno.writeTextFile(`${cache}/lotus.json`, "{"), [
      `${cache}/lotus.json cannot be read`,
    ]],
    ["onnx/ removed", () => Deno.remove(`${cache}/onnx`, { recursive: true }), [
      `${cache}/onnx is missing`,
    ]],
    ["the graph removed", () => Deno.remove(`${cache}/onnx/model.onnx`), [
      `${cache}/onnx/model.onnx is missing`,
    ]],
    ["lotus.json and the record removed", async () => {
      await Deno.remove(`${cache}/lotus.json`);
      await Deno.remove(`${cache}/${ONNX_CACHE_RECORD}`);
    }, [`${cache}/lotus.json is missing`]],
    ["every file removed", emptied, [`${cache} is empty`]],
    ["a file in its place", async () => {
      await Deno.remove(cache, { recursive: true });
      await Deno.writeTextFile(cache, "not a cache");
    }, [`${cache} is not a directory`]],
  ];
  for (const [what, damage, parts] of damages) {
    await damage();
    const lines = await reuse();
    assertEquals(lines.length, 1, `${what}: ${lines.join("\n")}`);
    for (const p of [...parts, "exporting", "again"]) {
      assert(lines[0].includes(p), `${what}: "${lines[0]}" lacks ${JSON.stringify(p)}`);
    }
    assert(!lines[0].includes("once per checkpoint"), `${what}: ${lines[0]}`);
    assertEquals(await reuse(), [], `${what}: the new cache is used as it is`);
  }
  assertEquals(await answers(), want);
  // A directory of the user's, elsewhere, is never replaced by an export.
  await Deno.mkdir(`${d}/mine`);
  await Deno.writeTextFile(`${d}/mine/notes.txt`, "mine");
  await assertRejects(
    () => exportCheckpoint(`${d}/ck`, `${d}/mine`, { format: "onnx" }),
    Error,
    "is not an export",
  );
  assertEquals(await Deno.readTextFile(`${d}/mine/notes.txt`), "mine");
});

/** The paths `fn` read whole (Deno.readFile) and opened (Deno.open), in order. */
async function reads(fn: () => Promise<unknown>): Promise<{ whole: string[]; opened: string[] }> {
  const whole: string[] = [], opened: string[] = [];
  const d = Deno as { readFile: typeof Deno.readFile; open: typeof Deno.open };
  const { readFile, open } = d;
  d.readFile = (path, o) => (whole.push(String(path)), readFile(path, o));
  d.open = (path, o) => (opened.push(String(path)), open(path, o));
  try {
    await fn();
  } finally {
    d.readFile = readFile;
    d.open = open;
  }
  return { whole, opened };
}

Deno.test("--backend onnx: the cache's record is a checksums record, checked a piece at a time", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { seed: 6 });
  const lines: string[] = [];
  const cache = await onnxExportFor(`${d}/ck`, (l) => lines.push(l));
  // The same record as a checkpoint's checksums.json: size and piece digests of each file.
  assertEquals(ONNX_CACHE_RECORD, CHECKSUMS_FILE);
  const sums = await readChecksums(`${cache}/${ONNX_CACHE_RECORD}`);
  assert(sums !== null, "the cache records its files");
  assertEquals(sums.format, "lotus-checksums");
  const data = `${cache}/onnx/model.onnx_data`;
  assertEquals(sums.files["onnx/model.onnx_data"], await fileChecksum(data, sums.pieceBytes));
  assertEquals(await verifyChecksums(cache, sums), null);

  // Using the cache again reads none of its files whole to hash them.
  const { whole } = await reads(async () => {
    assertEquals(await onnxExportFor(`${d}/ck`, (l) => lines.push(l)), cache);
  });
  assertEquals(lines.length, 1, lines.join("\n"));
  assertEquals(whole.filter((p) => p.startsWith(`${cache}/`)), []);
});

Deno.test("--backend onnx: using a cache reads and hashes the checkpoint's weights once", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { seed: 9 });
  const cache = await onnxExportFor(`${d}/ck`, () => {});
  const weights = `${d}/ck/model.safetensors`;
  const r = await reads(async () => {
    assertEquals(await onnxExportFor(`${d}/ck`, () => {}), cache);
  });
  // Once, by the checkpoint's verification: the fingerprint comes from its checksums.json.
  assertEquals([...r.whole, ...r.opened].filter((p) => p === weights).length, 1);
  const fp = await reads(() => checkpointFingerprint(`${d}/ck`));
  assertEquals([...fp.whole, ...fp.opened].filter((p) => p === weights), []);
  // Without the record, the files give the same fingerprint.
  const withRecord = await checkpointFingerprint(`${d}/ck`);
  await Deno.remove(`${d}/ck/${CHECKSUMS_FILE}`);
  assertEquals(await checkpointFingerprint(`${d}/ck`), withRecord);
  // A checkpoint without it is refused; with it recorded again, the cache still fits.
  await assertRejects(
    () => onnxExportFor(`${d}/ck`, () => {}),
    CheckpointError,
    `${d}/ck/${CHECKSUMS_FILE}: missing`,
  );
  await recordChecksums(`${d}/ck`);
  const lines: string[] = [];
  assertEquals(await onnxExportFor(`${d}/ck`, (l) => lines.push(l)), cache);
  assertEquals(lines, [], "the cache still fits the checkpoint");
});

Deno.test("--backend onnx: a cache recorded by an earlier version (cache.json) is exported again, with a note", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { seed: 8 });
  const cache = await onnxExportFor(`${d}/ck`, () => {});
  // What earlier versions left: cache.json with whole-file sha256s, no checksums.json.
  const files: Record<string, string> = {};
  for (const f of Object.keys((await readChecksums(`${cache}/${ONNX_CACHE_RECORD}`))!.files)) {
    files[f] = sha256Hex(await Deno.readFile(`${cache}/${f}`));
  }
  await Deno.writeTextFile(
    `${cache}/cache.json`,
    JSON.stringify({ format: "lotus-onnx-cache", version: 1, files }),
  );
  await Deno.remove(`${cache}/${ONNX_CACHE_RECORD}`);
  const lines: string[] = [];
  assertEquals(await onnxExportFor(`${d}/ck`, (l) => lines.push(l)), cache);
  assertEquals(lines.length, 1, lines.join("\n"));
  for (const p of [`${cache}/cache.json`, "earlier version", ONNX_CACHE_RECORD, "again"]) {
    assert(lines[0].includes(p), `"${lines[0]}" lacks ${JSON.stringify(p)}`);
  }
  assert(!(await exists(`${cache}/cache.json`)), "the new cache has no cache.json");
  assert((await readChecksums(`${cache}/${ONNX_CACHE_RECORD}`)) !== null);
  const quiet: string[] = [];
  await onnxExportFor(`${d}/ck`, (l) => quiet.push(l));
  assertEquals(quiet, [], "the new cache is used as it is");
});

Deno.test("--backend onnx on an export directory refuses non-finite ONNX weights, naming the file", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { seed: 5 });
  await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "onnx" });
  await (await openInference(`${d}/ex`, { backend: "onnx", threads: 1 })).close();
  await nanEvery1000(`${d}/ex/onnx/model.onnx_data`);
  const e = await assertRejects(() => openInference(`${d}/ex`, { backend: "onnx", threads: 1 }));
  for (
    const p of [`${d}/ex/onnx/model.onnx_data`, "non-finite", "NaN", "export the checkpoint again"]
  ) {
    assert((e as Error).message.includes(p), `"${(e as Error).message}" lacks ${p}`);
  }
});

Deno.test("each backend refuses the wrong kind of directory with a clear error", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`);
  await exportCheckpoint(`${d}/ck`, `${d}/hf`, { format: "hf" });
  await exportCheckpoint(`${d}/ck`, `${d}/both`, { format: "both" });
  const e1 = await assertRejects(() => openInference(`${d}/hf`, { backend: "onnx" }));
  assert((e1 as Error).message.includes("this export has no ONNX graphs"), String(e1));
  const e2 = await assertRejects(() => openInference(`${d}/both`, { backend: "cpu" }));
  assert((e2 as Error).message.includes("is an export directory"), String(e2));
  assert((e2 as Error).message.includes(`made from (${d}/ck)`), String(e2));
  assert((e2 as Error).message.endsWith("or use --backend onnx"), String(e2));
  // An export without graphs is not sent to the onnx backend, which would refuse it too.
  const e4 = await assertRejects(() => openInference(`${d}/hf`, { backend: "cpu" }));
  assert((e4 as Error).message.includes("is an export directory"), String(e4));
  assert(!(e4 as Error).message.includes("or use --backend onnx"), String(e4));
  assert((e4 as Error).message.includes("export with --format onnx or both"), String(e4));
  const e3 = await assertRejects(() => openInference(`${d}/nothing`, { backend: "onnx" }));
  assert((e3 as Error).message.includes("config.json"), String(e3));
});

/**
 * How to run a command as a user whom a directory's missing write bits stop: as it is for a
 * normal user; as nobody (setpriv) for root, where nobody may run Deno and read the project;
 * null where neither works. (`id -u`: Deno.uid() would need --allow-sys, which the test task
 * does not grant.)
 */
const READ_ONLY_RUNNER: string[] | null = (() => {
  const run = (cmd: string[]) => {
    try {
      return new Deno.Command(cmd[0], { args: cmd.slice(1), stdout: "piped", stderr: "null" })
        .outputSync();
    } catch {
      return null;
    }
  };
  const id = run(["id", "-u"]);
  if (id === null) return null;
  if (new TextDecoder().decode(id.stdout).trim() !== "0") return [];
  const nobody = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
  const ok = run([...nobody, Deno.execPath(), "--version"])?.success &&
    run([...nobody, "/usr/bin/test", "-r", `${ROOT}/cli/infer.ts`])?.success;
  return ok ? nobody : null;
})();

Deno.test({
  name: "--backend onnx on a checkpoint it cannot write to keeps its cache in the user's cache " +
    "directory",
  ignore: READ_ONLY_RUNNER === null,
  async fn() {
    const runner = READ_ONLY_RUNNER!;
    const d = await tempDir();
    await tinyCheckpoint(`${d}/ck`, { seed: 3 });
    const q = FIXTURE_QUESTIONS[0];
    const home = `${d}/home`;
    // A Deno cache and a home of its own, which nobody can write to.
    for (const dir of [`${d}/deno-dir`, home]) {
      await Deno.mkdir(dir);
      await Deno.chmod(dir, 0o777);
    }
    await Deno.chmod(d, 0o755);
    const answer = async (backend: string) => {
      const args = ["run", "-A", "cli/infer.ts", "--checkpoint", `${d}/ck`, "--backend", backend];
      const onnx = backend === "onnx";
      const cmd = onnx ? [...runner, Deno.execPath(), ...args] : [Deno.execPath(), ...args];
      const r = await new Deno.Command(cmd[0], {
        args: [...cmd.slice(1), "--max-new-tokens", "6", q],
        cwd: ROOT,
        clearEnv: onnx,
        env: onnx ? { DENO_DIR: `${d}/deno-dir`, HOME: home, NO_COLOR: "1" } : { NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const dec = new TextDecoder();
      return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
    };
    const want = await answer("cpu");
    assertEquals(want.code, 0, want.stderr);
    for await (const e of Deno.readDir(`${d}/ck`)) await Deno.chmod(`${d}/ck/${e.name}`, 0o444);
    await Deno.chmod(`${d}/ck`, 0o555);
    try {
      const got = await answer("onnx");
      assertEquals(got.code, 0, got.stderr);
      const note = got.stderr.split("\n").find((l) => l.includes("cannot be written to")) ?? "";
      const cache = note.match(/exporting \S+ to (\S+) \(once per checkpoint/)?.[1] ?? "";
      assert(cache.startsWith(`${home}/.cache/lotus-deno/${ONNX_CACHE_DIR}/`), got.stderr);
      assert(await exists(`${cache}/lotus.json`), `${cache}: no export`);
      assert(!(await exists(`${d}/ck/${ONNX_CACHE_DIR}`)));
      // The same answer as the CPU engine's (the CLI's answer lines, timings left out).
      const answers = (s: string) => s.split("\n").filter((l) => /^(answer|text):/.test(l.trim()));
      assertEquals(answers(want.stdout).length, 2, want.stdout);
      assertEquals(answers(got.stdout), answers(want.stdout));
      // Used again as it is.
      const again = await answer("onnx");
      assertEquals(again.code, 0, again.stderr);
      assert(!again.stderr.includes("exporting"), again.stderr);
      assertEquals(answers(again.stdout), answers(want.stdout));
    } finally {
      await Deno.chmod(`${d}/ck`, 0o755);
    }
  },
});
