/**
 * Export: the directory layout, the structural check of the Hugging Face files (config
 * keys, safetensors names and shapes, the tokenizer's special tokens), the ONNX codec, and
 * clear errors for checkpoints with a wrong or missing file.
 */
import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import { tempDir } from "./_tmp.ts";
import { recordChecksums, TINY_LLAMA, tinyCheckpoint } from "./_export_fixture.ts";
import { exportCheckpoint, ExportError, readLotusJson } from "../export/export.ts";
import { checkExport } from "../export/export_check.ts";
import { decodeModel, encodeModel } from "../export/onnx_proto.ts";
import { GraphBuilder, WeightFile } from "../export/onnx_builder.ts";
import { DataType } from "../export/onnx_proto.ts";
import { getTensor, readSafetensors, writeSafetensors } from "../base/safetensors.ts";
import { parseExportArgs } from "../cli/export.ts";
import { parseInferArgs } from "../cli/infer.ts";
import { CliError } from "../cli/_common.ts";
import { paramLayout } from "../model/params.ts";
import type { ModelConfig } from "../model/config.ts";
import { exists } from "../base/exists.ts";

async function readJson(path: string): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(path));
}

Deno.test("export --format both: the Hugging Face files, lotus.json and the ONNX graphs", async () => {
  const d = await tempDir();
  const { cfg, tok, params } = await tinyCheckpoint(`${d}/ck`, {
    k: 2,
    c: 3,
    injection: "replace",
  });
  const r = await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "both" });
  assertEquals(r.files.toSorted(), [
    "config.json",
    "generation_config.json",
    "lotus.json",
    "model.safetensors",
    "onnx/model.onnx",
    "onnx/model.onnx_data",
    "onnx/model_embeds.onnx",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
  ]);
  assertEquals(await checkExport(`${d}/ex`), []);
  assertEquals(await checkExport(`${d}/none`), [`${d}/none: no such directory`]);
  assertEquals(await checkExport(`${d}/ex/lotus.json`), [`${d}/ex/lotus.json: is not a directory`]);
  // Every entry an export writes is one a later export may replace (EXPORT_ENTRIES).
  await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "both" });

  const c = await readJson(`${d}/ex/config.json`);
  assertEquals(
    [c.model_type, c.vocab_size, c.n_positions, c.n_embd, c.n_layer, c.n_head],
    ["gpt2", cfg.vocabSize, cfg.maxPositions, cfg.dModel, cfg.nLayer, cfg.nHead],
  );
  assertEquals([c.activation_function, c.layer_norm_epsilon, c.tie_word_embeddings], [
    "gelu_new",
    1e-5,
    true,
  ]);
  assertEquals(c.eos_token_id, tok.special.eos);
  assert(!("lotus" in c), "config.json keeps to GPT-2 fields; LOTUS settings go to lotus.json");
  assertEquals(c["transformers.js_config"], {
    dtype: "fp32",
    use_external_data_format: { "model.onnx": 1 },
  });

  const l = await readLotusJson(`${d}/ex`);
  assertEquals([l.mode, l.K, l.c, l.R, l.injection], ["lotus", 2, 3, 2, "replace"]);
  assertEquals(l.special, tok.special);
  assertEquals(l.tokens, {
    bot: "<|start-latent|>",
    eot: "<|end-latent|>",
    lat: "<|latent|>",
  });

  // Safetensors: Hugging Face names, Conv1D weights transposed to [in, out], metadata "pt".
  const st = await readSafetensors(`${d}/ex/model.safetensors`);
  assertEquals(st.metadata.format, "pt");
  const C = cfg.dModel;
  const w = getTensor(st, "transformer.h.1.mlp.c_fc.weight", "F32", [C, 4 * C]);
  const t = paramLayout(cfg).tensors.find((x) => x.name === "transformer.h.1.mlp.c_fc.weight")!;
  assertEquals(w[3 * 4 * C + 7], params[t.offset + 7 * C + 3]);
  assertEquals(Object.keys(st.tensors).length, 2 + 12 * cfg.nLayer + 2);

  const tc = await readJson(`${d}/ex/tokenizer_config.json`);
  assertEquals([tc.eos_token, tc.pad_token, tc.tokenizer_class], [
    "<|endoftext|>",
    "<|endoftext|>",
    "PreTrainedTokenizerFast",
  ]);
  const dec = tc.added_tokens_decoder as Record<string, { content: string }>;
  assertEquals(dec[String(tok.special.lat)].content, "<|latent|>");
  const sm = await readJson(`${d}/ex/special_tokens_map.json`);
  assertEquals(sm.additional_special_tokens, ["<|start-latent|>", "<|end-latent|>", "<|latent|>"]);
  const g = await readJson(`${d}/ex/generation_config.json`);
  assertEquals([g.eos_token_id, g.do_sample, g.max_new_tokens], [tok.special.eos, false, 24]);

  // The two graphs name the same weights in one file.
  const ids = decodeModel(await Deno.readFile(`${d}/ex/onnx/model.onnx`));
  const emb = decodeModel(await Deno.readFile(`${d}/ex/onnx/model_embeds.onnx`));
  assertEquals(ids.opsetImport[0].version, 17);
  assertEquals(ids.graph.input.map((i) => i.name).slice(0, 4), [
    "input_ids",
    "attention_mask",
    "position_ids",
    "past_key_values.0.key",
  ]);
  assertEquals(emb.graph.input[0].name, "inputs_embeds");
  assertEquals(ids.graph.output.map((o) => o.name), [
    "logits",
    "last_hidden_state",
    "present.0.key",
    "present.0.value",
    "present.1.key",
    "present.1.value",
  ]);
  const ext = (m: typeof ids) =>
    m.graph.initializer.filter((x) => x.dataLocation === 1).map((x) =>
      `${x.name}@${x.externalData!.find((e) => e.key === "offset")!.value}`
    ).sort();
  assertEquals(ext(emb), ext(ids));
  assertEquals(ext(ids).length, 2 + 12 * cfg.nLayer + 2);
});

Deno.test("export --format hf has no ONNX files; --format onnx has no safetensors", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { mode: "cot" });
  const hf = await exportCheckpoint(`${d}/ck`, `${d}/hf`, { format: "hf" });
  assert(!hf.files.some((f) => f.startsWith("onnx/")));
  assertEquals((await readLotusJson(`${d}/hf`)).onnx, null);
  assertEquals((await readLotusJson(`${d}/hf`)).mode, "cot");
  assert(!("transformers.js_config" in await readJson(`${d}/hf/config.json`)));
  assertEquals(await checkExport(`${d}/hf`), []);
  const ox = await exportCheckpoint(`${d}/ck`, `${d}/ox`, { format: "onnx" });
  assert(!ox.files.includes("model.safetensors"));
  assertEquals(await checkExport(`${d}/ox`), []);
  // exporting again over an earlier export replaces it and leaves no temporary directory
  await exportCheckpoint(`${d}/ck`, `${d}/ox`, { format: "hf" });
  assert(await Deno.stat(`${d}/ox/model.safetensors`).then(() => true));
  await assertRejects(() => Deno.stat(`${d}/ox/onnx`));
  assertEquals([...Deno.readDirSync(d)].map((e) => e.name).sort(), ["ck", "hf", "ox"]);
});

Deno.test("the structural check names what is wrong in a damaged export", async () => {
  const d = await tempDir();
  const { cfg } = await tinyCheckpoint(`${d}/ck`);
  await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "both" });
  const c = await readJson(`${d}/ex/config.json`);
  await Deno.writeTextFile(
    `${d}/ex/config.json`,
    JSON.stringify({ ...c, n_head: 3, activation_function: "relu" }),
  );
  const st = await readSafetensors(`${d}/ex/model.safetensors`);
  const tensors = { ...st.tensors };
  delete tensors["transformer.ln_f.bias"];
  tensors["transformer.h.0.attn.c_attn.weight"] = {
    ...tensors["transformer.h.0.attn.c_attn.weight"],
    shape: [3 * cfg.dModel, cfg.dModel],
  };
  await writeSafetensors(`${d}/ex/model.safetensors`, tensors, { format: "np" });
  const tc = await readJson(`${d}/ex/tokenizer_config.json`);
  await Deno.writeTextFile(
    `${d}/ex/tokenizer_config.json`,
    JSON.stringify({ ...tc, eos_token: "<|nope|>" }),
  );
  const problems = await checkExport(`${d}/ex`);
  const has = (s: string) =>
    assert(problems.some((p) => p.includes(s)), `no problem "${s}" in\n${problems.join("\n")}`);
  has(`config.json: field "n_embd" (16) must be divisible by "n_head" (3)`);
  has(`config.json: field "activation_function"`);
  has(`model.safetensors: field "__metadata__.format" must be "pt"`);
  has(`tensor "transformer.ln_f.bias" is missing`);
  has(`tensor "transformer.h.0.attn.c_attn.weight" has shape [48,16], GPT-2 needs [16,48]`);
  has(`tokenizer_config.json: field "eos_token" names no token`);
});

Deno.test("the structural check reports non-finite weights and configs that disagree", async () => {
  const d = await tempDir();
  const { cfg, tok } = await tinyCheckpoint(`${d}/ck`);
  await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "both" });
  assertEquals(await checkExport(`${d}/ex`), []);
  // Weights that are not finite, in the safetensors file and in the ONNX weight file.
  const st = await readSafetensors(`${d}/ex/model.safetensors`);
  const tensors = { ...st.tensors };
  const lnf = Float32Array.from(tensors["transformer.ln_f.weight"].data as Float32Array);
  lnf[3] = NaN;
  tensors["transformer.ln_f.weight"] = { ...tensors["transformer.ln_f.weight"], data: lnf };
  await writeSafetensors(`${d}/ex/model.safetensors`, tensors, st.metadata);
  const graph = decodeModel(await Deno.readFile(`${d}/ex/onnx/model.onnx`));
  const wpe = graph.graph.initializer.find((t) => t.name === "transformer.wpe.weight")!;
  const offset = Number(wpe.externalData!.find((e) => e.key === "offset")!.value);
  const f = await Deno.open(`${d}/ex/onnx/model.onnx_data`, { write: true });
  await f.seek(offset + 4 * 7, Deno.SeekMode.Start);
  await f.write(new Uint8Array(Float32Array.of(Infinity).buffer));
  f.close();
  // lotus.json and config.json that disagree on the context and the special ids.
  const lotus = await readJson(`${d}/ex/lotus.json`);
  const model = (lotus.lotus as { model: Record<string, unknown> }).model;
  model.maxPositions = 64;
  const special = lotus.special as Record<string, number>;
  special.lat = cfg.vocabSize + 5;
  special.eot = special.bot;
  await Deno.writeTextFile(`${d}/ex/lotus.json`, JSON.stringify(lotus));
  const c = await readJson(`${d}/ex/config.json`);
  await Deno.writeTextFile(
    `${d}/ex/config.json`,
    JSON.stringify({ ...c, pad_token_id: tok.special.bot, n_ctx: 256 }),
  );
  const problems = await checkExport(`${d}/ex`);
  const has = (s: string) =>
    assert(problems.some((p) => p.includes(s)), `no problem "${s}" in\n${problems.join("\n")}`);
  has(`model.safetensors: tensor "transformer.ln_f.weight" holds non-finite values ([3] = NaN`);
  has(`onnx/model.onnx_data: weight "transformer.wpe.weight" holds non-finite values ([7] = Inf`);
  has(`lotus.json: field "lotus.model.maxPositions" is 64, config.json field "n_positions" is 128`);
  has(`lotus.json: field "special.lat" is ${cfg.vocabSize + 5}, outside the vocabulary [0, `);
  has(`lotus.json: fields "special.bot" and "special.eot" are both ${tok.special.bot}`);
  has(`lotus.json: field "special" disagrees with "lotus.special"`);
  has(`config.json: field "pad_token_id" is ${tok.special.bot}, lotus.json's "special.pad" is`);
  has(`config.json: field "n_ctx" is 256, "n_positions" is 128`);
  // A tokenizer with fewer tokens than the model's vocabulary is another tokenizer.
  const other = await tempDir();
  await tinyCheckpoint(`${other}/ck`);
  await exportCheckpoint(`${other}/ck`, `${other}/ex`, { format: "hf" });
  const c2 = await readJson(`${other}/ex/config.json`);
  await Deno.writeTextFile(
    `${other}/ex/config.json`,
    JSON.stringify({ ...c2, vocab_size: cfg.vocabSize + 64 }),
  );
  const p2 = await checkExport(`${other}/ex`);
  assert(
    p2.some((p) => p.includes(`tokenizer.json: ${tok.vocabSize} tokens, but config.json field`)),
    p2.join("\n"),
  );
});

Deno.test("a lotus.json summary edited by hand (K, injection, mode) is refused, not half obeyed", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { k: 2, c: 3 });
  await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "hf" });
  const sound = await readJson(`${d}/ex/lotus.json`);
  for (
    const [field, value, want] of [
      ["K", 7, '"K" is 7, where its "lotus" section gives 2'],
      ["injection", "replace", '"injection" is "replace", where its "lotus" section gives "add"'],
      ["mode", "cot", '"mode" is "cot", where its "lotus" section gives "lotus"'],
    ] as const
  ) {
    await Deno.writeTextFile(`${d}/ex/lotus.json`, JSON.stringify({ ...sound, [field]: value }));
    const e = await assertRejects(() => readLotusJson(`${d}/ex`), ExportError);
    assert(e.message.startsWith(`${d}/ex/lotus.json: field ${want} (at `), e.message);
    assert(e.message.endsWith("export the checkpoint again with deno task export"), e.message);
    const problems = await checkExport(`${d}/ex`);
    assert(problems.some((p) => p.startsWith(`lotus.json: field ${want}`)), problems.join("\n"));
  }
});

Deno.test("export fails clearly for a checkpoint with a missing or wrong file", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`);
  const fresh = async (name: string) => {
    await Deno.mkdir(`${d}/${name}`);
    for (const e of Deno.readDirSync(`${d}/ck`)) {
      if (e.isFile) await Deno.copyFile(`${d}/ck/${e.name}`, `${d}/${name}/${e.name}`);
    }
    return `${d}/${name}`;
  };
  const fails = async (dir: string, ...parts: string[]) => {
    const e = await assertRejects(
      () => exportCheckpoint(dir, `${d}/out-${dir.length}`),
      ExportError,
    );
    for (const p of parts) assert(e.message.includes(p), `"${e.message}" lacks "${p}"`);
    await assertRejects(() => Deno.stat(`${d}/out-${dir.length}`));
  };

  await fails(`${d}/nothing-here`, "no config.json", "deno task train");
  const a = await fresh("no-weights");
  await Deno.remove(`${a}/model.safetensors`);
  await fails(a, `${a}/model.safetensors: missing; a save writes the checkpoint whole`);
  const b = await fresh("no-tokenizer");
  await Deno.remove(`${b}/tokenizer.json`);
  await fails(b, `${b}/tokenizer.json: missing`);
  const c = await fresh("bad-shape");
  const st = await readSafetensors(`${c}/model.safetensors`);
  const wpe = st.tensors["transformer.wpe.weight"];
  await writeSafetensors(`${c}/model.safetensors`, {
    ...st.tensors,
    "transformer.wpe.weight": { ...wpe, shape: [wpe.shape[0] / 2, wpe.shape[1] * 2] },
  }, { format: "pt" });
  await recordChecksums(c);
  await fails(c, `tensor "transformer.wpe.weight" has shape [64,32]`);
  const e = await fresh("bad-config");
  const cfg = await readJson(`${e}/config.json`);
  delete (cfg.lotus as Record<string, unknown>).special;
  await Deno.writeTextFile(`${e}/config.json`, JSON.stringify(cfg));
  await recordChecksums(e);
  await fails(e, `${e}/config.json: field "lotus.special"`);
  const f = await fresh("other-tokenizer");
  const tj = await readJson(`${f}/tokenizer.json`);
  const added = tj.added_tokens as { id: number; content: string }[];
  const lat = added.find((t) => t.content === "<|latent|>")!,
    eot = added.find((t) => t.content === "<|end-latent|>")!;
  [lat.content, eot.content] = [eot.content, lat.content];
  await Deno.writeTextFile(`${f}/tokenizer.json`, JSON.stringify(tj));
  await recordChecksums(f);
  await fails(f, `${f}/tokenizer.json: the EOT token has id`, `"lotus.special.eot"`);

  // an existing directory that is not an export is never replaced
  await Deno.mkdir(`${d}/mine`);
  await Deno.writeTextFile(`${d}/mine/notes.txt`, "keep me");
  const err = await assertRejects(() => exportCheckpoint(`${d}/ck`, `${d}/mine`), ExportError);
  assert(err.message.includes("is not an export"));
  assertEquals(await Deno.readTextFile(`${d}/mine/notes.txt`), "keep me");
  // nor is an earlier export beside which the user keeps a file of their own (a model card)
  await exportCheckpoint(`${d}/ck`, `${d}/card`, { format: "hf" });
  await Deno.writeTextFile(`${d}/card/README.md`, "# my model");
  const card = await assertRejects(
    () => exportCheckpoint(`${d}/ck`, `${d}/card`, { format: "hf" }),
    ExportError,
  );
  assertEquals(
    card.message,
    `${d}/card: holds README.md beside an earlier export; the export replaces the directory ` +
      "whole, which would delete it: move it elsewhere first, or choose another --out",
  );
  assertEquals(await Deno.readTextFile(`${d}/card/README.md`), "# my model");
  await Deno.remove(`${d}/card/README.md`);
  await exportCheckpoint(`${d}/ck`, `${d}/card`, { format: "hf" });
  // a file as --out, an export as the checkpoint, an unknown format: each named
  await assertRejects(
    () => exportCheckpoint(`${d}/ck`, `${d}/mine/notes.txt`),
    ExportError,
    "exists and is a file",
  );
  await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "hf" });
  await assertRejects(
    () => exportCheckpoint(`${d}/ex`, `${d}/ex2`),
    ExportError,
    `${d}/ex is an export (it holds lotus.json), not a checkpoint: export from ${d}/ck`,
  );
  // An earlier export named through "." or "..": replaced, as by its plain path (a
  // directory of the user's in it, as any entry an export does not write, is refused first).
  await Deno.mkdir(`${d}/ex/sub`);
  await assertRejects(
    () => exportCheckpoint(`${d}/ck`, `${d}/ex/sub/..`, { format: "onnx" }),
    ExportError,
    `${d}/ex: holds sub beside an earlier export`,
  );
  await Deno.remove(`${d}/ex/sub`);
  for (const out of [`${d}/ex/.`, `${d}/ex/sub/..`, `${d}/ex/./`]) {
    const r = await exportCheckpoint(`${d}/ck`, out, { format: "onnx" });
    assertEquals(r.dir, `${d}/ex`);
    assertEquals(await checkExport(`${d}/ex`), []);
    assert(r.files.includes("onnx/model.onnx") && !(await exists(`${d}/ex/model.safetensors`)));
    await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "hf" });
  }
  await assertRejects(
    () => exportCheckpoint(`${d}/ck`, `${d}/ex3`, { format: "xx" as never }),
    ExportError,
    "must be hf, onnx or both",
  );
});

Deno.test("an export to a link goes where the link points, and the link stays", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { mode: "cot" });
  await exportCheckpoint(`${d}/ck`, `${d}/target`, { format: "hf" });
  await Deno.symlink(`${d}/target`, `${d}/link`);
  for (const out of [`${d}/link`, `${d}/link/`]) {
    const r = await exportCheckpoint(`${d}/ck`, out, { format: "onnx" });
    assertEquals(r.dir, out);
    assert((await Deno.lstat(`${d}/link`)).isSymlink, "the link was replaced by a directory");
    assertEquals(await Deno.readLink(`${d}/link`), `${d}/target`);
    assert(
      await exists(`${d}/target/onnx/model.onnx`),
      "the directory linked to is not the export",
    );
    assert(!(await exists(`${d}/target/model.safetensors`)), "the earlier export is still there");
    assertEquals(await checkExport(out), []);
  }
  assertEquals((await Array.fromAsync(Deno.readDir(d))).map((x) => x.name).sort(), [
    "ck",
    "link",
    "target",
  ]);
  // A link into a directory that does not exist (a disk not mounted) is refused, naming where
  // it points; nothing is made there.
  await Deno.symlink(`${d}/unmounted/gone`, `${d}/dangling`);
  await assertRejects(
    () => exportCheckpoint(`${d}/ck`, `${d}/dangling`),
    ExportError,
    `${d}/dangling: is a link to ${d}/unmounted/gone, whose directory ${d}/unmounted does not exist`,
  );
  assert((await Deno.lstat(`${d}/dangling`)).isSymlink);
  assert(!(await exists(`${d}/unmounted`)));
  // A link to a directory not made yet, in one that exists: the export is made there.
  await Deno.symlink(`${d}/later`, `${d}/ahead`);
  await exportCheckpoint(`${d}/ck`, `${d}/ahead`, { format: "hf" });
  assert((await Deno.lstat(`${d}/ahead`)).isSymlink);
  assert(await exists(`${d}/later/model.safetensors`));
});

Deno.test("an export stopped by its signal mid-write leaves nothing beside --out and the earlier export whole", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`);
  await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "hf" });
  const before = await Deno.readFile(`${d}/ex/model.safetensors`);
  // Aborted at its fourth look: the export has written a few files of its new directory.
  let looks = 0;
  const signal = {
    get aborted() {
      return ++looks >= 4;
    },
    reason: "SIGINT",
  } as unknown as AbortSignal;
  const e = await assertRejects(
    () => exportCheckpoint(`${d}/ck`, `${d}/ex`, { signal }),
    ExportError,
    "was stopped (SIGINT) before it was complete",
  );
  assert(e.message.includes(`${d}/ex is as it was`), e.message);
  assert(looks >= 4, "the signal was looked at while the export wrote");
  assertEquals((await Array.fromAsync(Deno.readDir(d))).map((x) => x.name).sort(), ["ck", "ex"]);
  assertEquals(await Deno.readFile(`${d}/ex/model.safetensors`), before);
  assert(!(await exists(`${d}/ex/onnx`)), "the earlier hf export is the one in place");
  assertEquals(await checkExport(`${d}/ex`), []);
  // Aborted before it starts: nothing is written at all.
  await assertRejects(
    () => exportCheckpoint(`${d}/ck`, `${d}/new`, { signal: AbortSignal.abort("SIGTERM") }),
    ExportError,
    "stopped (SIGTERM)",
  );
  assert(!(await exists(`${d}/new`)));
});

Deno.test("ONNX codec: a graph round-trips, and weights are aligned in their file", () => {
  const w = new WeightFile("w.bin");
  w.add("a", [3], Float32Array.of(1, 2, 3));
  w.add("b", [2, 2], Float32Array.of(4, 5, 6, 7));
  assertEquals([w.entry("a")!.offset, w.entry("b")!.offset, w.size], [0, 4096, 4096 + 16]);
  assertThrows(() => w.add("c", [2], Float32Array.of(1)), RangeError, "do not fill");
  const g = new GraphBuilder("g");
  const x = g.input("x", DataType.FLOAT, ["n", 2]);
  g.output(g.op("MatMul", [x, g.weight(w, "b")], {}, "y"), DataType.FLOAT, ["n", 2]);
  g.op("Softmax", [x], { axis: { int: -1 } });
  const m = decodeModel(encodeModel(g.model({ opset: 17 })));
  assertEquals(m.graph.node.map((n) => n.opType), ["MatMul", "Softmax"]);
  assertEquals(m.graph.node[1].attribute![0].i, -1);
  assertEquals(m.graph.input[0].type.tensorType.shape.dim, [{ dimParam: "n" }, { dimValue: 2 }]);
  const init = m.graph.initializer[0];
  assertEquals([init.name, init.dims, init.dataLocation], ["b", [2, 2], 1]);
  assertEquals(init.externalData, [
    { key: "location", value: "w.bin" },
    { key: "offset", value: "4096" },
    { key: "length", value: "16" },
  ]);
});

Deno.test("export and infer command lines: defaults, and one-line errors", () => {
  assertEquals(parseExportArgs(["--out", "x"]), {
    checkpoint: "out/runs/default",
    out: "x",
    format: "both",
  });
  assertThrows(() => parseExportArgs([]), CliError, "--out");
  assertThrows(() => parseExportArgs(["--out", "x", "--format", "tf"]), CliError, "--format");
  const a = parseInferArgs(["--backend", "onnx", "--k", "2", "What is 2+2?"]);
  assert(a !== "help");
  assertEquals([a.backend, a.k, a.r, a.questions], ["onnx", 2, undefined, ["What is 2+2?"]]);
  assertThrows(() => parseInferArgs(["--backend", "tpu", "q"]), CliError, "--backend");
  assertThrows(() => parseInferArgs([]), CliError, "give at least one question");
});

Deno.test("a LOTUS-aux checkpoint exports its backbone only: the aux decoder is training-only", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { mode: "lotus-aux", model: { auxLayers: 1 } });
  assert(await Deno.stat(`${d}/ck/aux.safetensors`).then(() => true));
  await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "both" });
  assertEquals(await checkExport(`${d}/ex`), []);
  const st = await readSafetensors(`${d}/ex/model.safetensors`);
  assert(!Object.keys(st.tensors).some((n) => n.startsWith("aux.")));
  assertEquals((await readLotusJson(`${d}/ex`)).mode, "lotus");
});

Deno.test("a Llama checkpoint exports --format both: LlamaForCausalLM files and ONNX graphs with a KV-head cache", async () => {
  const d = await tempDir();
  const { cfg } = await tinyCheckpoint(`${d}/ck`, {
    model: { ...TINY_LLAMA, nKvHead: 2, tieEmbeddings: false },
  });
  const r = await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "both" });
  assert(r.files.includes("model.safetensors") && r.files.includes("onnx/model_embeds.onnx"));
  assertEquals(await checkExport(`${d}/ex`), []);
  const c = await readJson(`${d}/ex/config.json`);
  assertEquals([c.model_type, c.architectures, c.num_key_value_heads, c.tie_word_embeddings], [
    "llama",
    ["LlamaForCausalLM"],
    2,
    false,
  ]);
  assertEquals((c.rope_scaling as Record<string, unknown>).rope_type, "llama3");
  assertEquals(c["transformers.js_config"], {
    dtype: "fp32",
    use_external_data_format: { "model.onnx": 1 },
  });
  assert((await readLotusJson(`${d}/ex`)).onnx !== null);

  const C = cfg.dModel, HS = C / cfg.nHead, L = cfg.nLayer;
  const ids = decodeModel(await Deno.readFile(`${d}/ex/onnx/model.onnx`));
  const emb = decodeModel(await Deno.readFile(`${d}/ex/onnx/model_embeds.onnx`));
  for (const [m, first] of [[ids, "input_ids"], [emb, "inputs_embeds"]] as const) {
    assertEquals(m.graph.input.map((i) => i.name), [
      first,
      "attention_mask",
      "position_ids",
      ...Array.from(
        { length: L },
        (_, l) => [`past_key_values.${l}.key`, `past_key_values.${l}.value`],
      )
        .flat(),
      "num_logits_to_keep",
    ]);
    assertEquals(m.graph.output.map((o) => o.name), [
      "logits",
      "last_hidden_state",
      ...Array.from({ length: L }, (_, l) => [`present.${l}.key`, `present.${l}.value`]).flat(),
    ]);
    // The cache holds the 2 key/value heads, as the Hugging Face Llama's does.
    const dims = (v: (typeof m.graph.input)[number]) =>
      v.type.tensorType.shape.dim.map((x) => "dimParam" in x ? x.dimParam : x.dimValue);
    assertEquals(dims(m.graph.input[3]), ["batch_size", 2, "past_sequence_length", HS]);
    assertEquals(dims(m.graph.output[2]), ["batch_size", 2, "total_sequence_length", HS]);
    // Standard operators only (the default domain), the Llama block's among them.
    const ops = new Set(m.graph.node.map((n) => n.opType));
    assert(m.graph.node.every((n) => !n.domain), "a node outside the default domain");
    for (const op of ["ReduceMean", "Reciprocal", "Cos", "Sin", "Sigmoid", "Tile", "Gemm"]) {
      assert(ops.has(op), `no ${op} node`);
    }
    assert(!ops.has("LayerNormalization"), "a Llama has no LayerNorm");
  }
  const ext = (m: typeof ids) =>
    m.graph.initializer.filter((x) => x.dataLocation === 1).map((x) =>
      `${x.name}@${x.externalData!.find((e) => e.key === "offset")!.value}`
    ).sort();
  // The same weights at the same offsets; with an untied head, the embeddings graph reads no
  // token embedding at all.
  assertEquals(ext(emb), ext(ids).filter((w) => !w.startsWith("model.embed_tokens.weight@")));
  // embed_tokens, 6 per layer (q/k/v and gate/up fused), the final norm and the untied head.
  assertEquals(ext(ids).length, 1 + 6 * L + 1 + 1);

  // The fused q/k/v weight holds q_proj, k_proj and v_proj rows in that order.
  const st = await readSafetensors(`${d}/ex/model.safetensors`);
  const qkv = ids.graph.initializer.find((t) =>
    t.name === "model.layers.1.self_attn.qkv_proj.weight"
  )!;
  const kvRows = 2 * HS;
  assertEquals(qkv.dims, [C + 2 * kvRows, C]);
  const at = Number(qkv.externalData!.find((e) => e.key === "offset")!.value);
  const data = await Deno.readFile(`${d}/ex/onnx/model.onnx_data`);
  const fused = new Float32Array(data.buffer, at, (C + 2 * kvRows) * C);
  const part = (n: string) =>
    getTensor(st, `model.layers.1.self_attn.${n}.weight`, "F32", [n === "q_proj" ? C : kvRows, C]);
  assertEquals(
    Array.from(fused),
    [...part("q_proj"), ...part("k_proj"), ...part("v_proj")],
  );
});

// The official ONNX library's checker, where a python3 has it (Debian's python3-onnx, which
// .ci/run installs): the full check, with shape inference, on both graphs and their external
// weights.
const ONNX_PY = ["python3", "/usr/bin/python3"].find((exe) => {
  try {
    return new Deno.Command(exe, { args: ["-c", "import onnx"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
});
if (!ONNX_PY) {
  console.error("export_test: no python3 with the onnx package: the onnx.checker test is skipped");
}

for (const [name, model] of [["GPT-2", {}], ["Llama", TINY_LLAMA]] as const) {
  Deno.test({
    name: `the exported ONNX graphs pass onnx.checker's full check (${name})`,
    ignore: !ONNX_PY,
    fn: () => onnxChecker(model),
  });
}

async function onnxChecker(model: Partial<ModelConfig>): Promise<void> {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { k: 2, c: 3, model });
  await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "onnx" });
  const code = `
import sys, onnx
for name in ("model.onnx", "model_embeds.onnx"):
    path = sys.argv[1] + "/onnx/" + name
    onnx.checker.check_model(path, full_check=True)
    m = onnx.load(path)
    print(name, m.opset_import[0].version, len(m.graph.input), len(m.graph.output))
`;
  const out = new Deno.Command(ONNX_PY!, {
    args: ["-c", code, `${d}/ex`],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const dec = new TextDecoder();
  assert(out.success, dec.decode(out.stderr));
  const lines = dec.decode(out.stdout).trim().split("\n");
  assertEquals(lines.length, 2, dec.decode(out.stdout));
  for (const l of lines) assert(/ 17 \d+ \d+$/.test(l), `opset 17 with inputs and outputs: ${l}`);
}
