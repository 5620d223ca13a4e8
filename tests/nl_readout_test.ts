/**
 * The readout of models trained with spilled step targets, and the NL form of the
 * alternative-intermediate detector, on hand-made inputs.
 */
import { assert, assertEquals } from "./_assert.ts";
import { readoutIds, readoutRows, readoutTexts, scoreReadout } from "../infer/readout.ts";
import { classifyNlStep, nlCalculation, validNlValue } from "../eval/alternatives.ts";

function logitsOf(rows: number[][]): Float32Array {
  return Float32Array.from(rows.flat());
}
/** A row whose argmax is `id` (V = 6). */
const one = (id: number) => [0, 1, 2, 3, 4, 5].map((v) => (v === id ? 9 : 0));

Deno.test("spill readout: block k reads (K - k)*c + 1 rows from row k*c", () => {
  assertEquals(readoutRows(0, 2, 3, false), 3);
  assertEquals(readoutRows(0, 2, 3, true), 7);
  assertEquals(readoutRows(1, 2, 3, true), 4);
  // V = 6 (id 0 is "\n"), K = 2, c = 3: rows 0..6. Block 0 writes 1 2 3 4 then "\n" at row 4.
  const rows = [one(1), one(2), one(3), one(4), one(0), one(5), one(5)];
  const logits = logitsOf(rows);
  assertEquals(readoutIds(logits, 2, 3, 6), [[1, 2, 3], [4, 0, 5]]);
  assertEquals(readoutIds(logits, 2, 3, 6, true), [[1, 2, 3, 4, 0, 5, 5], [4, 0, 5, 5]]);
  const names = ["\n", "a", "b", "c", "d", "e"];
  const decode = (ids: number[]) => ids.map((i) => names[i]).join("");
  assertEquals(readoutTexts(logits, 2, 3, 6, decode), ["abc", "d"]);
  assertEquals(readoutTexts(logits, 2, 3, 6, decode, true), ["abcd", "d"]);
  // Scoring runs over the gold step's whole length when it spills: S_0 = a b c d \n.
  const s = scoreReadout(logits, 2, 3, 6, [[1, 2, 3, 4, 0], [4, 0]], true);
  assertEquals(s[0].top1, [true, true, true, true, true]);
  assertEquals(s[1].top1, [true, true]);
  // Without spill the same gold is scored on c slots only.
  assertEquals(scoreReadout(logits, 2, 3, 6, [[1, 2, 3, 4, 0]])[0].top1.length, 3);
});

Deno.test("nlCalculation: the last expr = value an NL step writes", () => {
  assertEquals(nlCalculation("He pays 3 * $12 = $36."), { expr: "3 * 12", value: "36" });
  assertEquals(nlCalculation("Natalia sold 48/2 = 24 clips in May."), {
    expr: "48/2",
    value: "24",
  });
  assertEquals(nlCalculation("It costs $1,200 + $300 = $1,500 in all"), {
    expr: "1200 + 300",
    value: "1500",
  });
  assertEquals(nlCalculation("(3+4) x 2 = 14 apples"), { expr: "(3+4) * 2", value: "14" });
  assertEquals(nlCalculation("First 2+2 = 4, then 4*3 = 12."), { expr: "4*3", value: "12" });
  assertEquals(nlCalculation("She has 12 apples."), null);
  assertEquals(validNlValue("So 7*8 = 56 cards."), 56);
  assertEquals(validNlValue("So 7*8 = 54 cards."), null);
});

Deno.test("classifyNlStep: gold, gold-elsewhere, alternative, invalid, and unjudged", () => {
  const ctx = (block: number, earlierResults: number[] = []) => ({
    question: "Ann buys 3 boxes with 12 eggs each. She uses 5 eggs. An hour has 60 minutes.",
    goldNl: ["She buys 3*12 = 36 eggs.", "She has 36-5 = 31 eggs left."],
    goldMath: ["<<3*12=36>>", "<<36-5=31>>"],
    block,
    earlierResults,
  });
  const kind = (t: string, b = 0, e: number[] = []) => classifyNlStep(t, ctx(b, e))?.kind;
  assertEquals(kind("She buys 3*12 = 36 eggs."), "gold");
  assertEquals(kind("Ann gets 3 x 12 = 36 eggs in all."), "gold", "same calculation, new words");
  assertEquals(kind("She has 36-5 = 31 eggs left."), "gold-elsewhere");
  assertEquals(kind("That leaves 36 - 5 = 31."), "gold-elsewhere");
  assertEquals(kind("That is 3*60 = 180 minutes."), "alternative");
  assertEquals(kind("That is 3*60 = 170 minutes."), "invalid");
  const v = classifyNlStep("That is 7*60 = 420 minutes.", ctx(0));
  assertEquals(v?.kind, "invalid");
  assert(v?.reason?.includes("operand 7"), v?.reason);
  // An earlier block's valid reading grounds a later one.
  assertEquals(kind("She has 180-5 = 175.", 1, [180]), "alternative");
  // Numbers without a calculation: the block's value is gold, another block's elsewhere.
  assertEquals(kind("She has 36 eggs.", 0), "gold");
  assertEquals(kind("She has 31 eggs.", 0), "gold-elsewhere");
  assertEquals(kind("She has 29 eggs.", 0), "invalid");
  // No number: not judged.
  assertEquals(classifyNlStep("She goes home.", ctx(0)), null);
  // Without gold math (a source with prose only), calculations are still checked.
  const bare = { ...ctx(0), goldMath: null };
  assertEquals(classifyNlStep("That is 3*12 = 36 eggs.", bare)?.kind, "alternative");
  assertEquals(classifyNlStep("That is 3*12 = 35 eggs.", bare)?.kind, "invalid");
});
