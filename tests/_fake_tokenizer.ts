/**
 * A character-level tokenizer for tests: each UTF-16 unit is its own id, so expected layouts
 * can be written out by hand. EOS 1000, BOT 1001, EOT 1002, LAT 1003.
 *
 * @module
 */
import type { Tokenizer } from "../pipeline/tokenizer.ts";
import type { ValidatedRecord } from "../pipeline/types.ts";

/** The character-level test tokenizer. */
export function charTokenizer(): Tokenizer {
  const special = { eos: 1000, pad: 1000, bot: 1001, eot: 1002, lat: 1003 };
  const names: Record<number, string> = {
    1000: "<|endoftext|>",
    1001: "<|start-latent|>",
    1002: "<|end-latent|>",
    1003: "<|latent|>",
  };
  const json = JSON.stringify({ kind: "char" });
  return {
    kind: "file",
    vocabSize: 1004,
    special,
    specialTokens: new Map(Object.entries(names).map(([id, t]) => [t, Number(id)])),
    encode: (t) => Array.from(t, (_, i) => t.charCodeAt(i)),
    decode: (ids) => Array.from(ids, (i) => names[i] ?? String.fromCharCode(i)).join(""),
    toJSON: () => json,
    sha256: "0".repeat(64),
  };
}

/** The ids of `s` under {@linkcode charTokenizer}. */
export function ids(s: string): number[] {
  return Array.from(s, (_, i) => s.charCodeAt(i));
}

/** A hand-made validated record with the given steps (math and NL forms differ). */
export function record(opts: {
  id?: string;
  line?: number;
  question?: string;
  math?: string[];
  nl?: string[];
  answer?: string;
  status?: "ok" | "flagged" | "dropped";
  reasons?: string[];
}): ValidatedRecord {
  const math = (opts.math ?? ["<<2*3=6>>", "<<6+1=7>>"]).map((text) => {
    const m = /^<<(.*)=([^=]*)>>$/.exec(text);
    return { expr: m ? m[1] : text, value: m ? m[2] : "", text };
  });
  return {
    id: opts.id ?? `fixture:${opts.line ?? 1}`,
    source: { file: "fixture.jsonl", line: opts.line ?? 1 },
    question: opts.question ?? "Two times three, plus one?",
    rationale: null,
    mathSteps: math.map((s) => s.text),
    answer: opts.answer ?? "7",
    answerValue: Number(opts.answer ?? "7"),
    math,
    nl: opts.nl ?? ["Two times three is six.", "Six plus one is seven."],
    validation: { status: opts.status ?? "ok", reasons: opts.reasons ?? [] },
  };
}
