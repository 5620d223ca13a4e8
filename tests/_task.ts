/**
 * A small two-step task for training tests: "x has a, gets b, then doubles" with single
 * digits (chance accuracy over the 37 possible answers is under 3%), built once per test
 * process into a dataset with K = 2 and c = 10.
 *
 * @module
 */
import { buildDataset } from "../pipeline/build.ts";
import { Rng } from "../base/rng.ts";
import { tempDir } from "./_tmp.ts";

/**
 * `n` GSM8K-format JSON lines of the task, from `seed`: "x has a pens and gets b more, then
 * doubles them" (`then: "double"`), or "... then c more" (`then: "more"`).
 */
export function fixtureTask(n: number, seed: number, then: "double" | "more" = "double"): string {
  const rng = new Rng(seed), names = ["Ann", "Bo", "Cy", "Di"], lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const who = names[rng.below(names.length)], a = rng.below(10), b = rng.below(10), s = a + b;
    const c = then === "more" ? rng.below(10) : 2;
    const [op, last, how] = then === "more"
      ? ["+", s + c, `${c} more`]
      : ["*", 2 * s, "doubles them"];
    const question = `${who} has ${a} pens and gets ${b} more, then ${how}. How many pens?`;
    const answer = `${who} has ${a}+${b}=<<${a}+${b}=${s}>>${s} pens.\n` +
      `Then ${s}${op}${c}=<<${s}${op}${c}=${last}>>${last} pens.\n#### ${last}`;
    lines.push(JSON.stringify({ question, answer }));
  }
  return lines.join("\n") + "\n";
}

let dataDir: Promise<string> | null = null;

/** The task's dataset directory (600 train, 60 valid records; compact tokenizer, K 2, c 10). */
export function fixtureData(): Promise<string> {
  dataDir ??= (async () => {
    const d = await tempDir();
    await Deno.writeTextFile(`${d}/train.jsonl`, fixtureTask(600, 1));
    await Deno.writeTextFile(`${d}/valid.jsonl`, fixtureTask(60, 2));
    await buildDataset({
      out: `${d}/data`,
      splits: [
        { name: "train", inputs: [`${d}/train.jsonl`] },
        { name: "valid", inputs: [`${d}/valid.jsonl`] },
      ],
      tokenizer: "compact",
      k: 2,
      c: 10,
    });
    return `${d}/data`;
  })();
  return dataDir;
}
