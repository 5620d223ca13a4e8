/**
 * Llama checkpoints: our checkpoints of a Llama model (Hugging Face Llama tensor names and
 * config.json), and `--init` from a Hugging Face Llama directory built here in its layout
 * (config.json, BF16 or F32 weights in one file or in shards with an index, a tokenizer.json
 * whose EOS is Llama 3's `<|end_of_text|>`). Nothing is downloaded.
 */
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { tempDir } from "./_tmp.ts";
import { fixtureData, fixtureTask } from "./_task.ts";
import { tinySpecials, tinyTokenizerJson } from "./_tiny.ts";
import { type Tensor, writeSafetensors } from "../base/safetensors.ts";
import { readSafetensors } from "../base/safetensors.ts";
import { type ModelConfig, ModelConfigSchema, TrainConfigSchema } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { loadCheckpoint, saveCheckpoint } from "../model/checkpoint.ts";
import {
  HfLlamaError,
  llamaConfigJson,
  loadLlamaWeights,
  modelConfigFromLlamaJson,
} from "../model/hf_llama.ts";
import { Rng } from "../base/rng.ts";
import { fitCompactTokenizer, LOTUS_TOKENS, tokenizerFromFile } from "../pipeline/tokenizer.ts";
import { buildDataset } from "../pipeline/build.ts";
import { train } from "../train/recipe.ts";
import { TrainConfigError } from "../train/options.ts";
import { openInference } from "../infer/inference.ts";
import { exportCheckpoint } from "../export/export.ts";
import { checkExport } from "../export/export_check.ts";

function llamaCfg(over: Partial<ModelConfig> = {}): ModelConfig {
  return ModelConfigSchema.parse({
    vocabSize: 20,
    maxPositions: 32,
    dModel: 8,
    nHead: 4,
    nLayer: 2,
    arch: "llama",
    nKvHead: 2,
    dFf: 12,
    ropeTheta: 500000,
    ropeScaling: { factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 },
    normEps: 1e-5,
    tieEmbeddings: true,
    ...over,
  });
}

const state = {
  step: 3,
  epoch: 0,
  batchInEpoch: 3,
  rng: 1,
  bestAccuracy: -1,
  bestStep: -1,
  tokens: 10,
  seconds: 1,
};

for (const tie of [true, false]) {
  Deno.test(`a Llama checkpoint round-trips with Hugging Face Llama names (${tie ? "tied" : "untied"} head)`, async () => {
    const dir = await tempDir();
    const cfg = llamaCfg({ tieEmbeddings: tie });
    const layout = paramLayout(cfg);
    const params = initParams(layout, cfg, 5);
    await saveCheckpoint(`${dir}/ck`, {
      meta: {
        model: cfg,
        train: TrainConfigSchema.parse({}),
        special: tinySpecials(20),
        data: { dir: "d", cot: "math", k: 6, c: 13 },
        preset: "llama-tiny",
      },
      params,
      state,
      tokenizerJson: tinyTokenizerJson(20),
    });
    const back = await loadCheckpoint(`${dir}/ck`);
    assertEquals(Array.from(back.params), Array.from(params));
    assertEquals(back.meta.model.arch, "llama");
    const st = await readSafetensors(`${dir}/ck/model.safetensors`);
    assertEquals(st.tensors["model.layers.1.self_attn.k_proj.weight"].shape, [4, 8]);
    assertEquals(st.tensors["model.layers.0.mlp.gate_proj.weight"].shape, [12, 8]);
    assertEquals(st.tensors["model.norm.weight"].shape, [8]);
    assertEquals("lm_head.weight" in st.tensors, !tie);
    assert(!Object.keys(st.tensors).some((n) => n.startsWith("transformer.")));
    const hf = JSON.parse(await Deno.readTextFile(`${dir}/ck/config.json`));
    assertEquals(
      [hf.model_type, hf.hidden_size, hf.num_key_value_heads, hf.intermediate_size],
      ["llama", 8, 2, 12],
    );
    assertEquals(hf.rope_scaling.rope_type, "llama3");
    assertEquals(hf.tie_word_embeddings, tie);
    // The config our checkpoint writes reads back into the same model config.
    const again = modelConfigFromLlamaJson(hf, 20, 0, "config.json");
    assertEquals({ ...again, auxHeads: cfg.auxHeads }, cfg);
  });
}

/** Write a Hugging Face Llama directory of `cfg` with random weights; returns the weights. */
async function writeHfLlama(
  dir: string,
  cfg: ModelConfig,
  opts: { dtype: "BF16" | "F32"; shards: number },
): Promise<Map<string, Float32Array>> {
  await Deno.mkdir(dir, { recursive: true });
  const layout = paramLayout(cfg), rng = new Rng(17);
  const values = new Map<string, Float32Array>();
  const tensors: [string, Tensor][] = [];
  for (const t of layout.tensors) {
    const v = new Float32Array(t.size);
    for (let i = 0; i < v.length; i++) v[i] = rng.normal() * 0.5;
    if (opts.dtype === "BF16") {
      // keep values exactly representable in bf16
      const u = new Uint32Array(v.buffer);
      for (let i = 0; i < u.length; i++) u[i] &= 0xffff0000;
      const bits = new Uint16Array(v.length);
      for (let i = 0; i < u.length; i++) bits[i] = u[i] >>> 16;
      tensors.push([t.name, { dtype: "BF16", shape: t.shape, data: bits }]);
    } else {
      tensors.push([t.name, { dtype: "F32", shape: t.shape, data: v }]);
    }
    values.set(t.name, v);
  }
  const json = { ...llamaConfigJson(cfg, { eos: cfg.vocabSize - 1, pad: cfg.vocabSize - 1 }) };
  json.torch_dtype = opts.dtype === "BF16" ? "bfloat16" : "float32";
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(json));
  if (opts.shards === 1) {
    await writeSafetensors(`${dir}/model.safetensors`, Object.fromEntries(tensors));
  } else {
    const per = Math.ceil(tensors.length / opts.shards), map: Record<string, string> = {};
    for (let s = 0; s < opts.shards; s++) {
      const name = `model-${String(s + 1).padStart(5, "0")}-of-${
        String(opts.shards).padStart(5, "0")
      }.safetensors`;
      const part = tensors.slice(s * per, (s + 1) * per);
      for (const [n] of part) map[n] = name;
      await writeSafetensors(`${dir}/${name}`, Object.fromEntries(part));
    }
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ metadata: {}, weight_map: map }),
    );
  }
  return values;
}

for (const [dtype, shards] of [["BF16", 3], ["F32", 1]] as const) {
  Deno.test(`a Hugging Face Llama directory loads (${dtype}, ${shards} file(s)), the vocabulary grown by 3`, async () => {
    const dir = await tempDir();
    const file = llamaCfg({ vocabSize: 17, tieEmbeddings: false });
    const values = await writeHfLlama(dir, file, { dtype, shards });
    const json = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    const cfg = modelConfigFromLlamaJson(json, 20, 0, "config.json");
    assertEquals([cfg.vocabSize, cfg.nKvHead, cfg.dFf, cfg.tieEmbeddings], [20, 2, 12, false]);
    const layout = paramLayout(cfg);
    const params = new Float32Array(layout.total).fill(7);
    const { vocabRows } = await loadLlamaWeights(dir, layout, params);
    assertEquals(vocabRows, 17);
    for (const t of layout.tensors) {
      const want = values.get(t.name)!;
      const got = params.subarray(t.offset, t.offset + want.length);
      assertEquals(Array.from(got), Array.from(want), t.name);
    }
    // The rows of the three new tokens are left for the caller.
    const emb = layout.tensors[0];
    assertEquals(params[emb.offset + 17 * 8], 7);
  });
}

Deno.test("a Llama directory that does not fit is refused with the field or tensor named", async () => {
  const dir = await tempDir();
  const cfg = llamaCfg({ vocabSize: 17 });
  await writeHfLlama(dir, cfg, { dtype: "F32", shards: 1 });
  const json = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  const refuse = (over: Record<string, unknown>, what: string) => {
    let msg = "";
    try {
      modelConfigFromLlamaJson({ ...json, ...over }, 20, 0, "config.json");
    } catch (e) {
      assert(e instanceof HfLlamaError);
      msg = e.message;
    }
    assert(msg.includes(what), `expected "${what}" in: ${msg}`);
  };
  refuse({ attention_bias: true }, "attention_bias");
  refuse({ hidden_act: "gelu" }, "hidden_act");
  refuse({ rope_scaling: { ...json.rope_scaling, rope_type: "yarn" } }, "rope_type");
  refuse({ hidden_size: "wide" }, "hidden_size");
  // Shapes the engine cannot run name the config.json field, not the engine's.
  refuse({ num_attention_heads: 3, head_dim: undefined }, 'field "num_attention_heads" (3)');
  refuse({ num_key_value_heads: 3 }, 'field "num_key_value_heads" (3)');
  // Another kind of scaling is named as such, whatever fields it has.
  refuse({ rope_scaling: { type: "linear", factor: 2 } }, '"linear", not "llama3"');
  refuse({ rope_scaling: { rope_type: "llama3", factor: 8 } }, "rope_scaling.low_freq_factor");
  // "default" is no scaling; transformers 5's rope_parameters hold theta and scaling together.
  const plain = modelConfigFromLlamaJson(
    { ...json, rope_scaling: { rope_type: "default" } },
    20,
    0,
    "c",
  );
  assertEquals(plain.ropeScaling, null);
  const { rope_theta: _t, rope_scaling: scaling, ...v5 } = json;
  const fromV5 = modelConfigFromLlamaJson(
    { ...v5, rope_parameters: { rope_theta: 250000, ...scaling } },
    20,
    0,
    "c",
  );
  assertEquals([fromV5.ropeTheta, fromV5.ropeScaling?.factor], [250000, 32]);
  const v5Plain = modelConfigFromLlamaJson(
    { ...v5, rope_parameters: { rope_theta: 40000, rope_type: "default" } },
    20,
    0,
    "c",
  );
  assertEquals([v5Plain.ropeTheta, v5Plain.ropeScaling], [40000, null]);
  // A null rope_scaling beside rope_parameters is filled from them; a disagreement is named.
  const filled = modelConfigFromLlamaJson(
    { ...v5, rope_scaling: null, rope_parameters: { rope_theta: 250000, ...scaling } },
    20,
    0,
    "c",
  );
  assertEquals([filled.ropeTheta, filled.ropeScaling?.factor], [250000, 32]);
  refuse({ rope_theta: 10000, rope_parameters: { rope_theta: 500000 } }, '"rope_theta" is 10000');
  // Weights of another shape: two layers in the file, three in the config.
  const bigger = modelConfigFromLlamaJson({ ...json, num_hidden_layers: 3 }, 20, 0, "c");
  const layout = paramLayout(bigger);
  await assertRejects(
    () => loadLlamaWeights(dir, layout, new Float32Array(layout.total)),
    HfLlamaError,
    "model.layers.2.",
  );
  await assertRejects(
    () => loadLlamaWeights(`${dir}/nowhere`, layout, new Float32Array(layout.total)),
    HfLlamaError,
    "model.safetensors",
  );
});

/**
 * A tokenizer.json in Llama 3's manner, fitted to the records of `jsonl`: EOS is
 * <|end_of_text|>, no LOTUS tokens yet.
 */
function llamaStyleTokenizer(jsonl: string): string {
  const texts = jsonl.split("\n").filter(Boolean).map((l) => JSON.parse(l))
    .flatMap((r) => [r.question, r.answer]);
  const fitted = JSON.parse(fitCompactTokenizer(texts).toJSON());
  const lotus = new Set(Object.values(LOTUS_TOKENS) as string[]);
  fitted.added_tokens = fitted.added_tokens.filter((t: { content: string }) =>
    !lotus.has(t.content)
  ).map((t: { content: string }) =>
    t.content === "<|endoftext|>" ? { ...t, content: "<|end_of_text|>" } : t
  );
  return JSON.stringify(fitted);
}

Deno.test("--init from a Llama directory whose vocabulary is padded past its tokenizer's ids; a dataset of another tokenizer is refused", async () => {
  const root = await tempDir();
  await Deno.writeTextFile(`${root}/train.jsonl`, fixtureTask(32, 1));
  const hf = `${root}/Llama-padded`;
  await Deno.mkdir(hf);
  await Deno.writeTextFile(`${hf}/tokenizer.json`, llamaStyleTokenizer(fixtureTask(32, 1)));
  const base = (await tokenizerFromFile(`${hf}/tokenizer.json`)).vocabSize - 3;
  // Its embedding has 8 rows past the tokenizer's ids (the LOTUS tokens take 3 of them).
  const file = llamaCfg({ vocabSize: base + 8, dModel: 16, maxPositions: 256 });
  const values = await writeHfLlama(hf, file, { dtype: "F32", shards: 1 });
  const build = (out: string, tokenizer: string) =>
    buildDataset({
      out,
      splits: [{ name: "train", inputs: [`${root}/train.jsonl`] }],
      tokenizer,
      k: 2,
      c: 4,
    });
  await build(`${root}/data`, `${hf}/tokenizer.json`);
  const cfg = modelConfigFromLlamaJson(
    JSON.parse(await Deno.readTextFile(`${hf}/config.json`)),
    base + 3,
    0,
    "config.json",
  );
  assertEquals(cfg.vocabSize, base + 3, "the dataset's vocabulary");
  const layout = paramLayout(cfg), params = new Float32Array(layout.total);
  assertEquals((await loadLlamaWeights(hf, layout, params)).vocabRows, base + 3);
  const emb = layout.tensors.find((t) => t.name === "model.embed_tokens.weight")!;
  const want = values.get("model.embed_tokens.weight")!.subarray(0, (base + 3) * 16);
  assertEquals(Array.from(params.subarray(emb.offset, emb.offset + want.length)), Array.from(want));
  const run = (data: string, init: string) =>
    train({
      data,
      out: `${root}/run-${crypto.randomUUID()}`,
      init,
      recipe: "none",
      backend: "cpu",
      threads: 1,
      quiet: true,
      train: { steps: 1, batch: 4, evalExamples: 2, maxNewTokens: 4, epochsPerStage: 0 },
    });
  assertEquals((await run(`${root}/data`, hf)).steps, 1);
  // A dataset of another tokenizer would index other tokens' rows.
  await Deno.writeTextFile(`${root}/other.json`, llamaStyleTokenizer(fixtureTask(32, 5)));
  await build(`${root}/other`, `${root}/other.json`);
  await assertRejects(
    () => run(`${root}/other`, hf),
    TrainConfigError,
    "was not built with this model's tokenizer",
  );
  // Without a tokenizer.json a padded vocabulary cannot be told from another tokenizer.
  await Deno.remove(`${hf}/tokenizer.json`);
  await assertRejects(
    () => run(`${root}/data`, hf),
    TrainConfigError,
    "no tokenizer.json to tell a padded vocabulary from another tokenizer",
  );
});

Deno.test("--init from a Hugging Face Llama directory with its tokenizer.json: a LOTUS run trains, evaluates and checkpoints as Llama", async () => {
  const root = await tempDir();
  await Deno.writeTextFile(`${root}/train.jsonl`, fixtureTask(64, 1));
  await Deno.writeTextFile(`${root}/valid.jsonl`, fixtureTask(8, 2));
  const hf = `${root}/Llama-tiny`;
  await Deno.mkdir(hf);
  await Deno.writeTextFile(`${hf}/tokenizer.json`, llamaStyleTokenizer(fixtureTask(64, 1)));
  const tok = await tokenizerFromFile(`${hf}/tokenizer.json`);
  const base = tok.vocabSize - 3;
  assertEquals(tok.special.bot, base);
  assertEquals(tok.decode([tok.special.eos]), "<|end_of_text|>");
  await writeHfLlama(hf, llamaCfg({ vocabSize: base, dModel: 16, maxPositions: 256 }), {
    dtype: "BF16",
    shards: 2,
  });
  await buildDataset({
    out: `${root}/data`,
    splits: [
      { name: "train", inputs: [`${root}/train.jsonl`] },
      { name: "valid", inputs: [`${root}/valid.jsonl`] },
    ],
    tokenizer: `${hf}/tokenizer.json`,
    k: 2,
    c: 4,
  });
  const out = `${root}/run`;
  const losses: number[] = [];
  const res = await train({
    data: `${root}/data`,
    out,
    init: hf, // no --preset: the defaults of the Llama preset of its size
    backend: "cpu",
    threads: 1,
    quiet: true,
    train: { steps: 3, batch: 4, lr: 1e-3, evalExamples: 4, maxNewTokens: 8, epochsPerStage: 0 },
    onLog: (r) => {
      if (r.kind === "train") losses.push(r.loss!);
    },
  });
  assertEquals(res.steps, 3);
  assert(losses.every(Number.isFinite), `losses ${losses}`);
  // The from-cot recipe: the CoT start began at the Llama directory, in its shape.
  assert(res.cotStart?.completed, "the CoT start ran");
  const cot = await loadCheckpoint(`${out}/cot-start`);
  assertEquals([cot.meta.model.arch, cot.meta.model.dModel], ["llama", 16]);
  const ck = await loadCheckpoint(out);
  assertEquals([ck.meta.model.arch, ck.meta.model.dModel, ck.meta.model.nKvHead], [
    "llama",
    16,
    2,
  ]);
  assertEquals(ck.meta.model.vocabSize, tok.vocabSize);
  assertEquals(ck.meta.preset, "llama-tiny");
  const cfgJson = JSON.parse(await Deno.readTextFile(`${out}/checkpoint/config.json`));
  assertEquals(cfgJson.model_type, "llama");
  // Inference on the CPU engine answers from the Llama checkpoint.
  const question = ["Ann has 2 pens and gets 3 more, then doubles them."];
  const session = await openInference(out, { backend: "cpu", threads: 1 });
  let engineAnswer;
  try {
    const ans = await session.answer(question, { maxNewTokens: 8 });
    assertEquals(ans.answers.length, 1);
    engineAnswer = ans.answers[0].tokens;
  } finally {
    await session.close();
  }
  // A Llama export holds both the Hugging Face directory and the ONNX graphs, and the ONNX
  // backend answers from it as the engine does.
  const ex = await exportCheckpoint(out, `${root}/exp`);
  assert(ex.files.includes("model.safetensors") && ex.files.includes("onnx/model.onnx"));
  assertEquals(await checkExport(`${root}/exp`), []);
  const onnx = await openInference(`${root}/exp`, { backend: "onnx", threads: 1 });
  try {
    assertEquals(
      (await onnx.answer(question, { maxNewTokens: 8 })).answers[0].tokens,
      engineAnswer,
    );
  } finally {
    await onnx.close();
  }
  const hfOnly = await exportCheckpoint(out, `${root}/exp-hf`, { format: "hf" });
  assert(!hfOnly.files.some((f) => f.startsWith("onnx")));
  assertEquals(await checkExport(`${root}/exp-hf`), []);
  const exCfg = JSON.parse(await Deno.readTextFile(`${root}/exp/config.json`));
  assertEquals([exCfg.model_type, exCfg.architectures[0]], ["llama", "LlamaForCausalLM"]);
  // The structural check names a tensor of the wrong shape.
  const st = await readSafetensors(`${root}/exp/model.safetensors`);
  const k = st.tensors["model.layers.0.self_attn.k_proj.weight"];
  await writeSafetensors(`${root}/exp/model.safetensors`, {
    ...st.tensors,
    "model.layers.0.self_attn.k_proj.weight": { ...k, shape: [k.shape[1], k.shape[0]] },
  }, { format: "pt" });
  const problems = await checkExport(`${root}/exp`);
  assert(
    problems.some((p) => p.includes("k_proj") && p.includes("Llama needs")),
    problems.join("\n"),
  );
});

Deno.test("--init from a Llama run of this project takes its shape and its trained LOTUS rows; another --arch or --preset is refused", async () => {
  const root = await tempDir();
  await Deno.writeTextFile(`${root}/train.jsonl`, fixtureTask(32, 1));
  const data = `${root}/data`;
  await buildDataset({
    out: data,
    splits: [{ name: "train", inputs: [`${root}/train.jsonl`] }],
    tokenizer: "compact",
    k: 2,
    c: 4,
  });
  const V = (await tokenizerFromFile(`${data}/tokenizer.json`)).vocabSize;
  // A Hugging Face Llama directory unlike any preset: an untied head, rope_theta 10000 without
  // scaling, rms_norm_eps 1e-6.
  const hf = `${root}/hf`;
  const shape = { ropeTheta: 10000, ropeScaling: null, normEps: 1e-6, tieEmbeddings: false };
  await writeHfLlama(hf, llamaCfg({ vocabSize: V, dModel: 16, maxPositions: 128, ...shape }), {
    dtype: "F32",
    shards: 1,
  });
  const common = { data, backend: "cpu" as const, threads: 1, quiet: true };
  const settings = { batch: 4, evalEvery: 0, evalExamples: 4, maxNewTokens: 4 };
  const first = `${root}/first`;
  await train({
    ...common,
    out: first,
    init: hf,
    recipe: "none",
    train: { ...settings, steps: 2, lr: 1e-2, epochsPerStage: 0 },
  });
  const a = await loadCheckpoint(first);
  const pick = (m: ModelConfig) => [m.ropeTheta, m.ropeScaling, m.normEps, m.tieEmbeddings];
  assertEquals(pick(a.meta.model), [10000, null, 1e-6, false]);
  // From the run directory, then from its model.safetensors: the shape is the run's, and the
  // LOTUS tokens' rows are the ones it trained (a step at lr 1e-9 barely moves them), not
  // fresh copies of "<<".
  for (const init of [first, `${first}/checkpoint/model.safetensors`]) {
    const out = `${root}/next-${init === first ? "dir" : "file"}`;
    await train({
      ...common,
      out,
      init,
      recipe: "none",
      train: { ...settings, steps: 1, lr: 1e-9, epochsPerStage: 0 },
    });
    const b = await loadCheckpoint(out);
    assertEquals(pick(b.meta.model), pick(a.meta.model), init);
    assertEquals(b.meta.preset, a.meta.preset);
    const layout = paramLayout(a.meta.model), d = a.meta.model.dModel;
    for (const id of [a.meta.special.bot, a.meta.special.eot, a.meta.special.lat]) {
      for (const at of [layout.wte, layout.lmHead]) {
        for (let j = 0; j < d; j++) {
          const x = a.params[at + id * d + j], y = b.params[at + id * d + j];
          assert(Math.abs(x - y) < 1e-6, `${init}: row ${id}[${j}] ${x} -> ${y}`);
        }
      }
    }
  }
  const refused = async (opts: Partial<Parameters<typeof train>[0]>, flag: string) => {
    const e = await assertRejects(() =>
      train({ ...common, out: `${root}/refused`, recipe: "none", ...opts })
    );
    assert((e as Error).message.startsWith(flag), (e as Error).message);
  };
  await refused({ init: first, arch: "gpt2" }, "--arch gpt2: --init");
  await refused({ init: first, preset: "llama-1b" }, "--preset llama-1b: --init");
  await refused({ init: hf, arch: "gpt2" }, "--arch gpt2: --init");
  await refused({ resume: first, out: first, arch: "gpt2" }, "--arch gpt2 contradicts");
  await refused({ resume: first, out: first, init: hf }, "--init");
  // A model type this project does not load is named as such, not by a missing tensor.
  const mistral = `${root}/mistral`;
  await Deno.mkdir(mistral);
  const cfgJson = JSON.parse(await Deno.readTextFile(`${hf}/config.json`));
  await Deno.writeTextFile(
    `${mistral}/config.json`,
    JSON.stringify({ ...cfgJson, model_type: "mistral" }),
  );
  await Deno.copyFile(`${hf}/model.safetensors`, `${mistral}/model.safetensors`);
  await refused({ init: mistral }, `${mistral}/config.json: model_type "mistral" is not one`);
});

Deno.test("--arch llama: a tiny Llama's LOTUS loss falls 5x in 150 steps on the two-step task", async () => {
  const data = await fixtureData();
  const out = await tempDir();
  const losses: number[] = [];
  await train({
    data,
    out,
    preset: "tiny",
    arch: "llama",
    backend: "cpu",
    threads: 1,
    quiet: true,
    train: { k: 2, c: 10, steps: 150, batch: 16, lr: 3e-3, evalExamples: 8, epochsPerStage: 0 },
    onLog: (r) => {
      if (r.kind === "train") losses.push(r.loss!);
    },
  });
  const avg = (a: number[]) => a.reduce((x, y) => x + y) / a.length;
  const first = avg(losses.slice(0, 5)), last = avg(losses.slice(-5));
  assert(first / last > 5, `loss fell only from ${first} to ${last}`);
  assertEquals((await loadCheckpoint(out)).meta.preset, "llama-tiny");
});

/** GPT-2's byte-to-character table of byte-level BPE (printable bytes map to themselves). */
function byteChars(): string[] {
  const keep: number[] = [];
  for (let b = 33; b <= 126; b++) keep.push(b);
  for (let b = 161; b <= 172; b++) keep.push(b);
  for (let b = 174; b <= 255; b++) keep.push(b);
  const out: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    out.push(String.fromCodePoint(keep.includes(b) ? b : 256 + extra++));
  }
  return out;
}

Deno.test("a tokenizer.json in Llama 3's form loads: no BOS added, round trips, LOTUS tokens after the reserved ones", async () => {
  const chars = byteChars();
  const vocab: Record<string, number> = {};
  chars.forEach((c, i) => (vocab[c] = i));
  const G = chars[" ".charCodeAt(0)];
  const merges = ["h a", `${G} ha`];
  vocab["ha"] = 256, vocab[`${G}ha`] = 257;
  const special = (id: number, content: string) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  const added = [
    special(258, "<|begin_of_text|>"),
    special(259, "<|end_of_text|>"),
    special(260, "<|reserved_special_token_0|>"),
    special(261, "<|eot_id|>"),
  ];
  const pattern = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?" +
    "[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: pattern }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: "Sequence",
      processors: [
        { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
        {
          type: "TemplateProcessing",
          single: [
            { SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } },
            { Sequence: { id: "A", type_id: 0 } },
          ],
          pair: [
            { SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } },
            { Sequence: { id: "A", type_id: 0 } },
            { SpecialToken: { id: "<|begin_of_text|>", type_id: 1 } },
            { Sequence: { id: "B", type_id: 1 } },
          ],
          special_tokens: {
            "<|begin_of_text|>": {
              id: "<|begin_of_text|>",
              ids: [258],
              tokens: ["<|begin_of_text|>"],
            },
          },
        },
      ],
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: true,
      vocab,
      merges,
    },
  };
  const dir = await tempDir();
  await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(json));
  const tok = await tokenizerFromFile(`${dir}/tokenizer.json`);
  assertEquals(tok.special.eos, 259);
  assertEquals([tok.special.bot, tok.special.eot, tok.special.lat], [262, 263, 264]);
  assertEquals(tok.vocabSize, 265);
  const text = "Ann has 12 pens.\nShe's here: 48/2=24 <<48/2=24>> ha ha";
  const ids = tok.encode(text);
  assert(!ids.includes(258), "no <|begin_of_text|> is added");
  assert(ids.includes(257), "the merge ' ha' applies");
  assertEquals(tok.decode(ids), text);
  assertEquals(tok.decode(tok.encode("<|latent|>")), "<|latent|>");
});
