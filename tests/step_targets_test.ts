import { assertEquals, assertThrows } from "./_assert.ts";
import {
  blockTargets,
  slotTargets,
  stepTargetWidth,
  supervisedLength,
} from "../pipeline/step_targets.ts";
import { checkPackOptions, PackOptionsError, packRecord } from "../pipeline/pack.ts";
import { charTokenizer, ids, record } from "./_fake_tokenizer.ts";

const X = -100;
const tok = charTokenizer();
const [a, b, cc, d, e, f, g, , nl] = ids("abcdefgh\n");

Deno.test("step targets: width is c, or K*c + 1 under spill", () => {
  assertEquals(stepTargetWidth(6, 13, "truncate"), 13);
  assertEquals(stepTargetWidth(6, 13, "drop"), 13);
  assertEquals(stepTargetWidth(6, 13, "spill"), 79);
  // Block k holds at most (K - k)*c + 1 targets under spill: the last block c + 1.
  assertEquals(supervisedLength(5, 40, 6, 13, "spill"), 14);
  assertEquals(supervisedLength(0, 40, 6, 13, "spill"), 40);
  assertEquals(supervisedLength(0, 100, 6, 13, "spill"), 79);
  assertEquals(supervisedLength(0, 40, 6, 13, "truncate"), 13);
});

Deno.test("step targets: truncate keeps j < c in the block's own slots, one layer", () => {
  // K = 2, c = 3: rows 0..6 (BOT + 6 latents). S_1 = "cdefgh\n" is 7 tokens.
  const steps = [ids("ab\n"), ids("cdefgh\n")];
  const s = slotTargets(steps, 2, 3, "truncate");
  assertEquals(s.layers.length, 1);
  assertEquals(Array.from(s.layers[0]), [a, b, nl, cc, d, e, X]);
  assertEquals(Array.from(s.blocks[0]), [0, 0, 0, 1, 1, 1, -1]);
  assertEquals(s.count, 6);
  assertEquals(s.unsupervised, 4);
  assertEquals(Array.from(blockTargets(steps, 2, 3, "truncate")), [a, b, nl, cc, d, e]);
});

Deno.test("step targets: spill runs on to the last row K*c, and cuts what lies beyond", () => {
  // Block 1 starts at row 3 and may reach row 6 (= K*c): c + 1 = 4 targets; g, h, \n are cut.
  const steps = [ids("ab\n"), ids("cdefgh\n")];
  const s = slotTargets(steps, 2, 3, "spill");
  assertEquals(s.layers.length, 2);
  assertEquals(Array.from(s.layers[0]), [a, b, nl, cc, d, e, X]);
  assertEquals(Array.from(s.layers[1]), [X, X, X, X, X, X, f]);
  assertEquals(Array.from(s.blocks[0]), [0, 0, 0, 1, 1, 1, -1]);
  assertEquals(Array.from(s.blocks[1]), [-1, -1, -1, -1, -1, -1, 1]);
  assertEquals(s.count, 7);
  assertEquals(s.unsupervised, 3);
  // [K, W] with W = K*c + 1 = 7: block k's j-th target is row k*c + j.
  assertEquals(Array.from(blockTargets(steps, 2, 3, "spill")), [
    ...[a, b, nl, X, X, X, X],
    ...[cc, d, e, f, X, X, X],
  ]);
});

Deno.test("step targets: spilled and own targets share a row, each in its layer", () => {
  // K = 3, c = 2, rows 0..6. S_0 = "abcd\n" (5) reaches row 4; S_1 = "ef\n" (3) rows 2..4;
  // S_2 = "g\n" rows 4..5. Row 4 carries three targets: S_0[4], S_1[2] and S_2[0].
  const steps = [ids("abcd\n"), ids("ef\n"), ids("g\n")];
  const s = slotTargets(steps, 3, 2, "spill");
  assertEquals(s.layers.length, 3);
  assertEquals(Array.from(s.layers[0]), [a, b, e, f, g, nl, X]);
  assertEquals(Array.from(s.layers[1]), [X, X, cc, d, nl, X, X]);
  assertEquals(Array.from(s.layers[2]), [X, X, X, X, nl, X, X]);
  assertEquals(Array.from(s.blocks[0]), [0, 0, 1, 1, 2, 2, -1]);
  assertEquals(Array.from(s.blocks[1]), [-1, -1, 0, 0, 1, -1, -1]);
  assertEquals(Array.from(s.blocks[2]), [-1, -1, -1, -1, 0, -1, -1]);
  assertEquals(s.count, 10);
  assertEquals(s.unsupervised, 0);
  // The same layout seen block by block: [3, 7].
  assertEquals(Array.from(blockTargets(steps, 3, 2, "spill")), [
    ...[a, b, cc, d, nl, X, X],
    ...[e, f, nl, X, X, X, X],
    ...[g, nl, X, X, X, X, X],
  ]);
  // Fewer steps than blocks: the missing blocks have no targets; steps past K are not here.
  const two = slotTargets([ids("ab\n")], 3, 2, "spill");
  assertEquals(Array.from(two.layers[0]), [a, b, X, X, X, X, X]);
  assertEquals(Array.from(two.layers[1]), [X, X, nl, X, X, X, X]);
});

Deno.test("pack: --long-step spill flags the record and stores the [K, K*c+1] targets", () => {
  const rec = record({ question: "Q?", math: ["ab", "cdefgh", "x"], answer: "7" });
  const { packed, validation } = packRecord(rec, tok, {
    k: 2,
    c: 3,
    cot: "math",
    longStep: "spill",
  });
  assertEquals(validation.status, "flagged");
  assertEquals(validation.reasons, ["step_spilled", "step_spill_cut"]);
  assertEquals(validation.details, [
    "step 2: 7 tokens, c = 3",
    "step 2: 3 of 7 tokens past slot K*c",
  ]);
  assertEquals(Array.from(packed!.stepTargets), [
    ...[a, b, nl, X, X, X, X],
    ...[cc, d, e, f, X, X, X],
  ]);
  assertEquals(packed!.truncatedSteps, 1);
  assertEquals(packed!.unsupervisedTokens, 3);
  // The explicit part after EOT is the same as under truncate: S_K onwards, then A.
  const eot = packed!.lotusIds.indexOf(1002);
  assertEquals(packed!.lotusIds.slice(eot + 1, eot + 3), ids("x\n"));
  // A spill that fits the loop region is flagged step_spilled only.
  const fits = packRecord(rec, tok, { k: 3, c: 3, cot: "math", longStep: "spill" });
  assertEquals(fits.validation.reasons, ["step_spilled"]);
  assertEquals(fits.packed!.unsupervisedTokens, 0);
});

Deno.test("pack: an unknown long-step policy names the three", () => {
  assertThrows(
    // deno-lint-ignore no-explicit-any
    () => checkPackOptions({ k: 1, c: 1, cot: "math", longStep: "wrap" as any }),
    PackOptionsError,
    `"truncate", "drop", "spill"`,
  );
});
