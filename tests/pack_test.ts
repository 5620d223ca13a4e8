import { assert, assertEquals, assertThrows } from "./_assert.ts";
import {
  checkPackOptions,
  IGNORE,
  PACK_REASONS,
  PackOptionsError,
  packRecord,
} from "../pipeline/pack.ts";
import { gpt2Tokenizer } from "../pipeline/tokenizer.ts";
import { REASONS } from "../pipeline/validate.ts";
import { charTokenizer, ids, record } from "./_fake_tokenizer.ts";

const tok = charTokenizer();
const [EOS, BOT, EOT, LAT] = [1000, 1001, 1002, 1003];
const X = IGNORE;

// Steps "ab", "cde", "f": with c = 3 the second step ("cde\n", 4 tokens) is too long.
const rec = record({ question: "Q?", math: ["ab", "cde", "f"], nl: ["x", "y"], answer: "7" });

Deno.test("pack: lotus layout is Q BOT LAT*(K*c) EOT S_K.. A with -100 through EOT", () => {
  const { packed, validation } = packRecord(rec, tok, {
    k: 2,
    c: 3,
    cot: "math",
    longStep: "truncate",
  });
  assert(packed);
  const Q = ids("Q?\n");
  const A = [...ids("### 7"), EOS];
  assertEquals(packed.question, Q);
  assertEquals(packed.steps, [ids("ab\n"), ids("cde\n"), ids("f\n")]);
  assertEquals(packed.answer, A);
  assertEquals(packed.lotusIds, [
    ...Q,
    BOT,
    LAT,
    LAT,
    LAT,
    LAT,
    LAT,
    LAT,
    EOT,
    ...ids("f\n"),
    ...A,
  ]);
  assertEquals(packed.lotusLabels, [X, X, X, X, X, X, X, X, X, X, X, ...ids("f\n"), ...A]);
  assertEquals(packed.lotusBot, 3);
  assertEquals(packed.lotusIds[packed.lotusBot], BOT);
  assertEquals(validation, {
    status: "flagged",
    reasons: ["step_truncated"],
    details: ["step 2: 4 tokens, c = 3"],
  });
});

Deno.test("pack: step targets are [k, j] = S_k[j], truncated to c, -100 elsewhere", () => {
  const { packed } = packRecord(rec, tok, { k: 2, c: 3, cot: "math", longStep: "truncate" });
  assertEquals(Array.from(packed!.stepTargets), [
    ...ids("ab\n"), // block 0: exactly c tokens
    ...ids("cde"), // block 1: "cde\n" cut to its first c
  ]);
  assertEquals(packed!.truncatedSteps, 1);
  // More blocks than steps: the extra blocks are all -100.
  const wide = packRecord(rec, tok, { k: 4, c: 5, cot: "math", longStep: "truncate" }).packed!;
  assertEquals(Array.from(wide.stepTargets), [
    ...ids("ab\n"),
    X,
    X,
    ...ids("cde\n"),
    X,
    ...ids("f\n"),
    X,
    X,
    X,
    X,
    X,
    X,
    X,
    X,
  ]);
  assertEquals(wide.truncatedSteps, 0);
  assertEquals(wide.lotusIds.filter((t) => t === LAT).length, 20);
  // All steps inside blocks: nothing between EOT and the answer.
  const eot = wide.lotusIds.indexOf(EOT);
  assertEquals(wide.lotusIds.slice(eot + 1), wide.answer);
});

Deno.test("pack: cot and nocot layouts, labels -100 on Q only", () => {
  const { packed } = packRecord(rec, tok, { k: 2, c: 3, cot: "math", longStep: "truncate" });
  const Q = ids("Q?\n");
  const A = [...ids("### 7"), EOS];
  const S = [...ids("ab\n"), ...ids("cde\n"), ...ids("f\n")];
  assertEquals(packed!.cotIds, [...Q, ...S, ...A]);
  assertEquals(packed!.cotLabels, [X, X, X, ...S, ...A]);
  assertEquals(packed!.nocotIds, [...Q, ...A]);
  assertEquals(packed!.nocotLabels, [X, X, X, ...A]);
});

Deno.test("pack: --cot nl uses the sentences", () => {
  const { packed, validation } = packRecord(rec, tok, {
    k: 1,
    c: 2,
    cot: "nl",
    longStep: "truncate",
  });
  assertEquals(packed!.steps, [ids("x\n"), ids("y\n")]);
  assertEquals(Array.from(packed!.stepTargets), ids("x\n"));
  assertEquals(validation.status, "ok");
  assertEquals(packed!.cotIds, [...ids("Q?\n"), ...ids("x\ny\n"), ...ids("### 7"), EOS]);
});

Deno.test("pack: --long-step drop drops the record as step_too_long; steps after K don't count", () => {
  const out = packRecord(rec, tok, { k: 2, c: 3, cot: "math", longStep: "drop" });
  assertEquals(out.packed, null);
  assertEquals(out.validation, {
    status: "dropped",
    reasons: ["step_too_long"],
    details: ["step 2: 4 tokens, c = 3"],
  });
  // K = 1: only "ab\n" (3 tokens) goes into a block; the long step stays explicit text.
  const k1 = packRecord(rec, tok, { k: 1, c: 3, cot: "math", longStep: "drop" });
  assertEquals(k1.validation.status, "ok");
  assert(k1.packed);
  assertEquals([PACK_REASONS.step_too_long.math, PACK_REASONS.step_too_long.nl], ["drop", "drop"]);
  assertEquals([PACK_REASONS.step_truncated.math, PACK_REASONS.step_truncated.nl], [
    "flag",
    "flag",
  ]);
  // No clash with the validator's codes.
  for (const code of Object.keys(PACK_REASONS)) assert(!(code in REASONS), code);
});

Deno.test("pack: validation status and reasons carry through", () => {
  const dropped = record({ status: "dropped", reasons: ["bad_arithmetic"] });
  assertEquals(packRecord(dropped, tok, { k: 2, c: 3, cot: "math", longStep: "truncate" }), {
    validation: { status: "dropped", reasons: ["bad_arithmetic"] },
    packed: null,
  });
  const flagged = record({ math: ["abcdef"], status: "flagged", reasons: ["x"] });
  const out = packRecord(flagged, tok, { k: 1, c: 2, cot: "math", longStep: "truncate" });
  assertEquals(out.validation.status, "flagged");
  assertEquals(out.validation.reasons, ["x", "step_truncated"]);
  const drop = packRecord(flagged, tok, { k: 1, c: 2, cot: "math", longStep: "drop" });
  assertEquals(drop.validation.status, "dropped");
  assertEquals(drop.validation.reasons, ["x", "step_too_long"]);
});

Deno.test("pack: K = 0 gives Q BOT EOT S_0.. A", () => {
  const { packed } = packRecord(rec, tok, { k: 0, c: 3, cot: "math", longStep: "drop" });
  const S = [...ids("ab\n"), ...ids("cde\n"), ...ids("f\n")];
  assertEquals(packed!.lotusIds, [...ids("Q?\n"), BOT, EOT, ...S, ...ids("### 7"), EOS]);
  assertEquals(packed!.stepTargets.length, 0);
});

Deno.test("pack: options are checked", () => {
  assertThrows(
    () => checkPackOptions({ k: -1, c: 3, cot: "math", longStep: "drop" }),
    PackOptionsError,
    "k = -1",
  );
  assertThrows(
    () => checkPackOptions({ k: 6, c: 0, cot: "math", longStep: "drop" }),
    PackOptionsError,
    "c = 0",
  );
  assertThrows(
    () => checkPackOptions({ k: 6, c: 1, cot: "xx" as "math", longStep: "drop" }),
    PackOptionsError,
    "cot",
  );
});

Deno.test("pack: with GPT-2, step targets decode back to the step text", async () => {
  const gpt2 = await gpt2Tokenizer();
  const r = record({ math: ["<<48/2=24>>", "<<48+24=72>>"], answer: "72" });
  const { packed } = packRecord(r, gpt2, { k: 6, c: 13, cot: "math", longStep: "truncate" });
  for (let k = 0; k < 2; k++) {
    const slot = Array.from(packed!.stepTargets.subarray(k * 13, (k + 1) * 13)).filter((t) =>
      t !== X
    );
    assertEquals(gpt2.decode(slot), r.math[k].text + "\n");
  }
  assertEquals(gpt2.decode(packed!.answer), "### 72<|endoftext|>");
});

Deno.test("pack: text holding a special token's text drops the record as special_token_text, unencoded", async () => {
  const gpt2 = await gpt2Tokenizer();
  const opts = { k: 2, c: 13, cot: "math" as const, longStep: "truncate" as const };
  assertEquals([PACK_REASONS.special_token_text.math, PACK_REASONS.special_token_text.nl], [
    "drop",
    "drop",
  ]);
  const holds = (text: string, id: number) =>
    `holds ${
      JSON.stringify(text)
    }, which the tokenizer reads as its special token ${id}, not as text`;
  // Encoded, the question would get a latent slot inside it.
  assert(gpt2.encode("Ann has <|latent|> 3 pens.").includes(gpt2.special.lat));
  const q = record({ question: "Ann has <|latent|> 3 pens. How many?", math: ["<<3=3>>"] });
  assertEquals(packRecord(q, gpt2, opts), {
    validation: {
      status: "dropped",
      reasons: ["special_token_text"],
      details: [`question ${holds("<|latent|>", 50259)}`],
    },
    packed: null,
  });
  // Every text packing may encode, both step forms whichever is built, each named.
  const all = record({
    math: ["<<2*3=6>>", "<<6+1=7>><|end-latent|>"],
    nl: ["<|start-latent|>Two times three is six.", "Six plus one is seven."],
    answer: "7<|endoftext|>",
  });
  for (const cot of ["math", "nl"] as const) {
    const out = packRecord(all, gpt2, { ...opts, cot });
    assertEquals(out.packed, null);
    assertEquals(out.validation.reasons, ["special_token_text"]);
    assertEquals(out.validation.details, [
      `math step 2 ${holds("<|end-latent|>", 50258)}`,
      `NL step 1 ${holds("<|start-latent|>", 50257)}`,
      `answer ${holds("<|endoftext|>", 50256)}`,
    ]);
  }
  // A record validation dropped gets the reason too; a flagged one is dropped by it.
  const dropped = record({ question: "<|latent|>?", status: "dropped", reasons: ["wrong_value"] });
  assertEquals(packRecord(dropped, gpt2, opts).validation.reasons, [
    "wrong_value",
    "special_token_text",
  ]);
  const flagged = record({
    question: "<|latent|>?",
    status: "flagged",
    reasons: ["final_mismatch"],
  });
  assertEquals(packRecord(flagged, gpt2, opts).validation.status, "dropped");
  // The same words without the token's exact text pack as usual.
  const near = record({ question: "Ann has <|latent| > 3 pens (latent)." });
  assertEquals(packRecord(near, gpt2, opts).validation.status, "ok");
  // The tokenizer's specials decide: the character tokenizer's are the same four texts.
  assertEquals(packRecord(q, tok, opts).validation.reasons, ["special_token_text"]);
});
