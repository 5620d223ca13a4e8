// "Did you mean": the name suggested for a mistyped option or flag.
import { assertEquals } from "./_assert.ts";
import { editDistance, nearestName } from "../base/suggest.ts";
import { refuseUnknownOptions } from "../base/options.ts";

Deno.test("suggest: a name that differs only in case, _ or - is the one suggested", () => {
  // "R" is one edit from both "k" and "r"; the option is "r".
  assertEquals(nearestName("R", ["k", "r", "maxNewTokens"]), "r");
  assertEquals(nearestName("K", ["k", "r"]), "k");
  // Python's spelling of a camelCase option, which no edit-distance bound reaches.
  assertEquals(nearestName("max_new_tokens", ["k", "r", "maxNewTokens"]), "maxNewTokens");
  assertEquals(nearestName("eval_examples", ["evalExamples", "epochs"]), "evalExamples");
  assertEquals(nearestName("maxnewtokens", ["max-new-tokens", "k"]), "max-new-tokens");
  // Two characters swapped is one edit.
  assertEquals(editDistance("trian", "train"), 1);
  assertEquals(nearestName("trian", ["train", "valid"]), "train");
  assertEquals(nearestName("lamdba", ["lambda", "lr"]), "lambda");
  // Typos are still found by edit distance, and far names are still not suggested.
  assertEquals(nearestName("stepz", ["steps", "seed"]), "steps");
  assertEquals(nearestName("colour", ["steps", "seed"]), undefined);
});

Deno.test("suggest: an options object with a misspelt key names the right option", () => {
  const known = { k: true, r: true, maxNewTokens: true, latentLogits: true } as const;
  for (
    const [key, near] of [["R", "r"], ["max_new_tokens", "maxNewTokens"]] as const
  ) {
    let message = "";
    try {
      refuseUnknownOptions("answer()", { [key]: 2 }, known);
    } catch (e) {
      message = (e as Error).message;
    }
    assertEquals(message, `answer(): "${key}" is not an option (did you mean "${near}"?)`);
  }
});
