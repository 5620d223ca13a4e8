import { tempDir } from "./_tmp.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import { getEncoding } from "js-tiktoken";
import {
  findSpecialTokenText,
  fitCompactTokenizer,
  gpt2Tokenizer,
  LOTUS_TOKENS,
  type Tokenizer,
  tokenizerDifference,
  TokenizerError,
  tokenizerFromFile,
  tokenizerFromJson,
} from "../pipeline/tokenizer.ts";
import { BpeFitter, compactPreTokens } from "../pipeline/bpe_fit.ts";

const FIXTURES = new URL("../fixtures/default/", import.meta.url);

/** Every text the packer would encode from the default fixtures, both step forms. */
function fixtureTexts(): string[] {
  const out: string[] = [];
  for (const name of ["train.jsonl", "valid.jsonl"]) {
    const text = Deno.readTextFileSync(new URL(name, FIXTURES));
    for (const line of text.split("\n").filter(Boolean)) {
      const r = JSON.parse(line) as { question: string; answer: string };
      out.push(r.question + "\n");
      const [body, ans] = r.answer.split("\n#### ");
      for (const s of body.split("\n")) {
        out.push(s + "\n");
        for (const m of s.matchAll(/<<[^>]*>>/g)) out.push(m[0] + "\n");
      }
      out.push("### " + ans);
    }
  }
  return out;
}

const PARITY_STRINGS = [
  "",
  "Natalie sold 48 clips in April and half as many in May.\n",
  "<<48/2=24>>",
  "<<48/2=24>>\n",
  "<<0.5*1200=600>>\n",
  "She paid $1,200.50 for 3 chairs.",
  "$1,200.50",
  "### 72",
  "### 1,234",
  "12 + 7 = 19; 12*7=84; 100/4 = 25; 2^10 = 1024",
  "3/4 of 20 is 15, and 15% of 80 is 12.",
  "It's 5 o'clock, they're late, we'll go, I'd say, you've won, I'm here.",
  "Crème brûlée costs €4,50 — naïve café in Zürich; 東京 is 東京; emoji 🍎🍐 ok",
  "tabs\tand\t\ttabs",
  "spaces  between   words    here",
  "trailing spaces   ",
  "   leading spaces",
  "line one\nline two\n\nline four\r\nwindows\n",
  "\n\n\n",
  " ",
  "a",
  "1234567890123456789",
  "-5 degrees, +7 points, 3.14159, 1e6, 0x1F",
  "\u00a0non-breaking\u00a0space and \u2009thin space",
  "ALL CAPS SHOUTING AND MiXeD cAsE",
  "Ĝ and Ġ and Ċ look like byte-level chars",
];

function randomStrings(n: number, seed: number): string[] {
  // Small LCG: reproducible without a dependency.
  let s = seed >>> 0;
  const rnd = (k: number) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % k;
  };
  const pieces = [
    "the",
    " apples",
    " cost",
    " $",
    "12",
    ".",
    "50",
    ",",
    "<<",
    ">>",
    "=",
    "*",
    "/",
    "+",
    "-",
    " ",
    "  ",
    "\n",
    "\t",
    "é",
    "ß",
    "日本",
    "🙂",
    "'s",
    "'ll",
    " 7",
    "%",
    "#",
    "###",
    " km",
    "3/4",
    "1,000",
    "(",
    ")",
    "x",
    "\u00a0",
  ];
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    let t = "";
    const len = 1 + rnd(20);
    for (let j = 0; j < len; j++) t += pieces[rnd(pieces.length)];
    out.push(t);
  }
  return out;
}

Deno.test("gpt2: ids match js-tiktoken exactly on GSM8K-like, numeric, unicode and whitespace text", async () => {
  const tok = await gpt2Tokenizer();
  const ref = getEncoding("gpt2");
  const texts = [...PARITY_STRINGS, ...fixtureTexts(), ...randomStrings(2000, 7)];
  let checked = 0;
  for (const t of texts) {
    assertEquals(tok.encode(t), ref.encode(t), `encode(${JSON.stringify(t)})`);
    // Twice: the second call goes through the memo.
    assertEquals(tok.encode(t), ref.encode(t), `memoised encode(${JSON.stringify(t)})`);
    checked++;
  }
  assert(checked > 2000);
});

Deno.test("gpt2: special ids, vocabulary size and round trip", async () => {
  const tok = await gpt2Tokenizer();
  assertEquals(tok.kind, "gpt2");
  assertEquals(tok.special, { eos: 50256, pad: 50256, bot: 50257, eot: 50258, lat: 50259 });
  assertEquals(tok.vocabSize, 50260);
  assertEquals(tok.encode(LOTUS_TOKENS.lat), [50259]);
  assertEquals(tok.encode("a<|start-latent|>b"), [64, 50257, 65]);
  assertEquals(
    tok.decode([50257, 50259, 50258, 50256]),
    "<|start-latent|><|latent|><|end-latent|><|endoftext|>",
  );
  for (const t of PARITY_STRINGS) assertEquals(tok.decode(tok.encode(t)), t);
  assertEquals(tok.decode([]), "");
  assertThrows(() => tok.decode([50260]), RangeError, "50260");
});

Deno.test("gpt2: tokenizer.json is deterministic and standard", async () => {
  const tok = await gpt2Tokenizer();
  const json = JSON.parse(tok.toJSON());
  assertEquals(json.model.type, "BPE");
  assertEquals(json.model.merges.length, 50000);
  assertEquals(Object.keys(json.model.vocab).length, 50257);
  assertEquals(json.model.merges[0], "Ġ t"); // GPT-2's first merge
  assertEquals(json.added_tokens.map((t: { id: number; content: string }) => [t.id, t.content]), [
    [50256, "<|endoftext|>"],
    [50257, "<|start-latent|>"],
    [50258, "<|end-latent|>"],
    [50259, "<|latent|>"],
  ]);
  // Reloading the text gives the same tokenizer and hash.
  const again = tokenizerFromJson(tok.toJSON(), "gpt2");
  assertEquals(again.sha256, tok.sha256);
  assertEquals(again.encode("Tom has 12 apples."), tok.encode("Tom has 12 apples."));
  assert(/^[0-9a-f]{64}$/.test(tok.sha256));
});

Deno.test("file: LOTUS tokens are appended when missing, kept when present", async () => {
  const dir = await tempDir();
  const base = fitCompactTokenizer(["hello world 123\n"], { maxVocab: 300 });
  const json = JSON.parse(base.toJSON());
  const eosId = base.special.eos;
  json.added_tokens = [{ id: eosId, content: "</s>", special: true }];
  delete json.model.vocab["<|endoftext|>"];
  json.model.vocab["</s>"] = eosId;
  await Deno.writeTextFile(`${dir}/t.json`, JSON.stringify(json));
  const tok = await tokenizerFromFile(`${dir}/t.json`);
  assertEquals(tok.kind, "file");
  assertEquals(tok.special, {
    eos: eosId,
    pad: eosId,
    bot: eosId + 1,
    eot: eosId + 2,
    lat: eosId + 3,
  });
  assertEquals(tok.vocabSize, eosId + 4);
  assertEquals(tok.encode("hello<|latent|>"), [...tok.encode("hello"), eosId + 3]);

  // Its own output already has them: nothing changes.
  await Deno.writeTextFile(`${dir}/t2.json`, tok.toJSON());
  const tok2 = await tokenizerFromFile(`${dir}/t2.json`);
  assertEquals(tok2.toJSON(), tok.toJSON());
  assertEquals(tok2.special, tok.special);
});

Deno.test("file: no EOS, bad JSON and missing file give errors that say what to do", async () => {
  const dir = await tempDir();
  const json = JSON.parse(fitCompactTokenizer(["abc"], { maxVocab: 300 }).toJSON());
  json.added_tokens = [];
  delete json.model.vocab["<|endoftext|>"];
  await Deno.writeTextFile(`${dir}/noeos.json`, JSON.stringify(json));
  await assertRejects(() => tokenizerFromFile(`${dir}/noeos.json`), TokenizerError, "no EOS token");
  await Deno.writeTextFile(`${dir}/bad.json`, "{not json");
  await assertRejects(() => tokenizerFromFile(`${dir}/bad.json`), TokenizerError, "not valid JSON");
  await Deno.writeTextFile(`${dir}/shape.json`, JSON.stringify({ added_tokens: 3, model: {} }));
  await assertRejects(() => tokenizerFromFile(`${dir}/shape.json`), TokenizerError, "added_tokens");
  await assertRejects(() => tokenizerFromFile(`${dir}/none.json`), TokenizerError, "--tokenizer");
  // A built-in tokenizer's name in capitals is no file: the message gives its spelling.
  for (const [typed, name] of [["GPT2", "gpt2"], ["GPT-2", "gpt2"], ["Compact", "compact"]]) {
    await assertRejects(
      () => tokenizerFromFile(typed),
      TokenizerError,
      `check the --tokenizer path (the built-in tokenizer is --tokenizer ${name}, in lower case)`,
    );
  }
});

Deno.test("compact: at most 4096 tokens, digits single, round trip on every fixture text", () => {
  const texts = fixtureTexts();
  const tok = fitCompactTokenizer(texts);
  assertEquals(tok.kind, "compact");
  assert(tok.vocabSize <= 4096, `vocabSize ${tok.vocabSize}`);
  assertEquals(tok.special.lat, tok.vocabSize - 1);
  assertEquals(tok.special.pad, tok.special.eos);
  const json = JSON.parse(tok.toJSON());
  for (const t of Object.keys(json.model.vocab)) {
    assert(!/[0-9]/.test(t) || t.length === 1, `token ${JSON.stringify(t)} merges a digit`);
  }
  for (const t of texts) {
    const ids = tok.encode(t);
    assertEquals(tok.decode(ids), t);
    for (const m of t.matchAll(/[0-9]+/g)) {
      // Each digit run shows up as one id per digit, in order.
      const digitIds = [...m[0]].map((d) => tok.encode(d)[0]);
      const s = ids.join(",");
      assert(s.includes(digitIds.join(",")), `digits of ${m[0]} in ${JSON.stringify(t)}`);
    }
  }
  assertEquals(tok.encode("9876543210").length, 10);
  // Characters never seen still round-trip through the byte alphabet.
  for (const t of PARITY_STRINGS) assertEquals(tok.decode(tok.encode(t)), t);
});

Deno.test("compact: deterministic, independent of text order, respects maxVocab", () => {
  const texts = fixtureTexts();
  const a = fitCompactTokenizer(texts);
  const b = fitCompactTokenizer([...texts].reverse());
  assertEquals(a.sha256, b.sha256);
  assertEquals(a.toJSON(), b.toJSON());
  const small = fitCompactTokenizer(texts, { maxVocab: 300 });
  assertEquals(small.vocabSize, 300);
  assertThrows(() => fitCompactTokenizer(texts, { maxVocab: 5000 }), TokenizerError, "4096");
});

Deno.test("compact: pre-tokens isolate digits and follow GPT-2's pattern elsewhere", () => {
  assertEquals(compactPreTokens("I paid $12.50 today"), [
    "I",
    " paid",
    " $",
    "1",
    "2",
    ".",
    "5",
    "0",
    " today",
  ]);
  assertEquals(compactPreTokens("<<3*4=12>>\n"), ["<<", "3", "*", "4", "=", "1", "2", ">>", "\n"]);
  const f = new BpeFitter();
  f.add("aaa aaa aaa");
  const { tokens, merges } = f.fit({ maxTokens: 300 });
  assertEquals(merges[0], ["a", "a"]); // most frequent pair first
  assert(tokens.includes("Ġaaa"));
});

Deno.test("findSpecialTokenText: the text of EOS and the LOTUS tokens, which encode would read as the tokens", async () => {
  const gpt2 = await gpt2Tokenizer();
  const compact = fitCompactTokenizer(["Ann has 3 pens.\n"]);
  for (const tok of [gpt2, compact]) {
    const { eos, bot, eot, lat } = tok.special;
    assertEquals(
      [...tok.specialTokens],
      [["<|endoftext|>", eos], [LOTUS_TOKENS.bot, bot], [LOTUS_TOKENS.eot, eot], [
        LOTUS_TOKENS.lat,
        lat,
      ]],
    );
    for (const [text, id] of tok.specialTokens) {
      // What the check is for: the text alone encodes as the special id.
      assertEquals(tok.encode(`a ${text} b`).includes(id), true, text);
      const hit = findSpecialTokenText(`Ann has ${text} 3 pens.`, tok);
      assertEquals([hit?.token, hit?.id, hit?.index], [text, id, 8]);
      assertEquals(
        hit?.problem,
        `holds ${JSON.stringify(text)}, which the tokenizer reads as its special token ${id}, ` +
          "not as text",
      );
    }
    // The first in the text, whatever the order of the specials.
    assertEquals(findSpecialTokenText("<|latent|> then <|endoftext|>", tok)?.token, "<|latent|>");
    for (const text of ["Ann has 3 pens.", "<|", "<|latent", "|latent|>", "<latent>", ""]) {
      assertEquals(findSpecialTokenText(text, tok), null, text);
    }
  }
  // Of two at one place the longer; a token's characters are matched as text, never as a
  // pattern; 300 specials (a Llama tokenizer has over 250) are found as well as one.
  const many = new Map([["<s>", 1], ["<s>x", 2], ["[a](b).*", 3], ["a+", 4]]);
  for (let i = 0; i < 300; i++) many.set(`<|reserved_${i}|>`, 10 + i);
  const one = (text: string) => {
    const hit = findSpecialTokenText(text, { specialTokens: many });
    return hit && [hit.token, hit.id, hit.index];
  };
  assertEquals(one("q <s>x r"), ["<s>x", 2, 2]);
  assertEquals(one("q <s>y"), ["<s>", 1, 2]);
  assertEquals(one("[a](b).* and aa"), ["[a](b).*", 3, 0]);
  assertEquals(one("ab aaa"), null);
  assertEquals(one("xx <|reserved_299|>"), ["<|reserved_299|>", 309, 3]);
  assertEquals(findSpecialTokenText("<s>", { specialTokens: new Map() }), null);
  // A token added to the map after a search is found by the next one.
  many.set("<b>", 500);
  assertEquals(one("a <b> c"), ["<b>", 500, 2]);
  // A tokenizer made by hand without the map is told so, not a TypeError from inside.
  assertThrows(
    () => findSpecialTokenText("abc", {} as Pick<Tokenizer, "specialTokens">),
    TypeError,
    "the tokenizer has no specialTokens map",
  );
  // A tokenizer.json's own special tokens count; its ordinary added tokens (a run of spaces,
  // read as the text it spells) do not.
  const json = JSON.parse(compact.toJSON());
  const next = compact.vocabSize;
  json.added_tokens.push(
    { id: next, content: "<|eot_id|>", special: true },
    { id: next + 1, content: "   ", special: false },
  );
  const file = tokenizerFromJson(JSON.stringify(json), "file");
  assertEquals(file.specialTokens.get("<|eot_id|>"), next);
  assertEquals(file.specialTokens.has("   "), false);
  assertEquals(findSpecialTokenText("Ann<|eot_id|>", file)?.id, next);
  assertEquals(findSpecialTokenText("Ann   has 3 pens.", file), null);
});

Deno.test("tokenizerDifference: a tokenizer extending another's ids passes; a missing or renumbered token is named", async () => {
  const gpt2 = await gpt2Tokenizer();
  assertEquals(tokenizerDifference(gpt2.toJSON(), gpt2, "gpt2"), null);
  const base = fitCompactTokenizer(["Ann has 3 pens.\n", "Bob has 4 cups.\n"]);
  // The same tokenizer loaded again (its LOTUS tokens already there) extends it.
  assertEquals(
    tokenizerDifference(base.toJSON(), tokenizerFromJson(base.toJSON(), "file"), "m"),
    null,
  );
  const json = JSON.parse(base.toJSON());
  const [token, id] = Object.entries(json.model.vocab as Record<string, number>)[5];
  // The base with one of its tokens at another id: the dataset's tokenizer numbers it otherwise.
  const moved = {
    ...json,
    model: { ...json.model, vocab: { ...json.model.vocab, [token]: id + 1000 } },
  };
  assertEquals(
    tokenizerDifference(JSON.stringify(moved), base, "m.json"),
    `token ${JSON.stringify(token)} is id ${id + 1000} in m.json, ${id} in the dataset's tokenizer`,
  );
  const extra = { ...json, model: { ...json.model, vocab: { ...json.model.vocab, "zzq": 9999 } } };
  assertEquals(
    tokenizerDifference(JSON.stringify(extra), base, "m.json"),
    `token "zzq" (id 9999 in m.json) is not in the dataset's tokenizer`,
  );
});
