/**
 * An explicit-CoT checkpoint exported with --format both runs as it is in
 * `@huggingface/transformers`: its tokenizer encodes as ours does, and its `text-generation`
 * pipeline (onnx/model.onnx on onnxruntime-node) continues greedily with exactly the tokens
 * the native CPU engine generates. Both backbones: GPT-2, and a Llama with grouped-query
 * attention and an untied head (its cache has the key/value heads, which the library sizes
 * from `num_key_value_heads`).
 */
// First: onnxruntime-node, which @huggingface/transformers loads, with its telemetry off.
import "../infer/ort_env.ts";
import { assert, assertEquals } from "./_assert.ts";
import { tempDir } from "./_tmp.ts";
import {
  FIXTURE_QUESTIONS,
  recordChecksums,
  TINY_LLAMA,
  tinyCheckpoint,
} from "./_export_fixture.ts";
import { exportCheckpoint } from "../export/export.ts";
import { openInference } from "../infer/inference.ts";
import type { ModelConfig } from "../model/config.ts";

const CASES: [string, Partial<ModelConfig>][] = [
  ["GPT-2", {}],
  ["Llama", { ...TINY_LLAMA, nKvHead: 1, tieEmbeddings: false }],
];

for (const [name, model] of CASES) {
  Deno.test(
    `@huggingface/transformers loads the export (${name}) and continues greedily as the engine does`,
    () => continuesAsTheEngine(model),
  );
}

async function continuesAsTheEngine(shape: Partial<ModelConfig>): Promise<void> {
  const { AutoModelForCausalLM, AutoTokenizer, env, pipeline } = await import(
    "@huggingface/transformers"
  );
  // Everything is local: never reach for the Hub.
  env.allowRemoteModels = false;
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { mode: "cot", seed: 5, model: shape });
  await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "both" });
  const n = 16;
  const engine = await openInference(`${d}/ck`, { backend: "cpu", threads: 2 });
  const load = { local_files_only: true, dtype: "fp32", device: "cpu" } as const;
  const tok = await AutoTokenizer.from_pretrained(`${d}/ex`, load);
  const model = await AutoModelForCausalLM.from_pretrained(`${d}/ex`, load);
  const gen = await pipeline("text-generation", `${d}/ex`, load);
  try {
    let long = 0;
    for (const q of FIXTURE_QUESTIONS) {
      const prompt = q + "\n";
      const ours = (await engine.answer([q], { maxNewTokens: n })).answers[0].tokens;
      if (ours.length >= 4) long++;
      const enc = tok(prompt);
      const ids = Array.from(enc.input_ids.data as BigInt64Array, Number);
      assertEquals(ids, engine.tokenizer.encode(prompt), `tokenizer on ${JSON.stringify(q)}`);
      const out = await model.generate({ ...enc, max_new_tokens: n, do_sample: false });
      const all = Array.from((out as { data: BigInt64Array }).data, Number).slice(ids.length);
      // transformers.js keeps the EOS that ended generation; ours drops it.
      const theirs = all[all.length - 1] === engine.tokenizer.special.eos ? all.slice(0, -1) : all;
      assertEquals(theirs, ours, `greedy continuation of ${JSON.stringify(q)}`);
      const [res] = await gen(prompt, {
        max_new_tokens: n,
        do_sample: false,
        return_full_text: false,
      }) as {
        generated_text: string;
      }[];
      const special = new Set(Object.values(engine.tokenizer.special));
      const text = engine.tokenizer.decode(ours.filter((t) => !special.has(t)));
      assertEquals(res.generated_text, text, `pipeline text for ${JSON.stringify(q)}`);
    }
    assert(long >= 2, "the continuations are too short to prove anything");
  } finally {
    await engine.close();
    await model.dispose();
    await gen.dispose();
  }
}

Deno.test("an export's tokenizer.json drops a template that adds a BOS, so @huggingface/transformers encodes as the engine does", async () => {
  const { AutoTokenizer, env } = await import("@huggingface/transformers");
  env.allowRemoteModels = false;
  const d = await tempDir();
  const { tok } = await tinyCheckpoint(`${d}/ck`, { mode: "cot", seed: 5, model: TINY_LLAMA });
  // Llama 3's post-processing: a special token (here EOS's) before every text.
  const bos = tok.decode([tok.special.eos]);
  const path = `${d}/ck/tokenizer.json`;
  const json = JSON.parse(await Deno.readTextFile(path));
  json.post_processor = {
    type: "Sequence",
    processors: [
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false },
      {
        type: "TemplateProcessing",
        single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
        pair: [{ Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
        special_tokens: { [bos]: { id: bos, ids: [tok.special.eos], tokens: [bos] } },
      },
    ],
  };
  await Deno.writeTextFile(path, JSON.stringify(json));
  // The save's record of its files, taken again for the edited tokenizer.json.
  await recordChecksums(`${d}/ck`);
  await exportCheckpoint(`${d}/ck`, `${d}/ex`, { format: "hf" });
  const exported = JSON.parse(await Deno.readTextFile(`${d}/ex/tokenizer.json`));
  assertEquals(exported.post_processor.processors.map((p: { type: string }) => p.type), [
    "ByteLevel",
  ]);
  const theirs = await AutoTokenizer.from_pretrained(`${d}/ex`, { local_files_only: true });
  for (const q of FIXTURE_QUESTIONS) {
    const ids = Array.from(theirs(q + "\n").input_ids.data as BigInt64Array, Number);
    assertEquals(ids, tok.encode(q + "\n"), q);
  }
});
