/**
 * `deno task infer`'s text report (formatAnswers): each question's answer, text and readout.
 */
import { assert, assertEquals } from "./_assert.ts";
import { formatAnswers } from "../cli/infer.ts";

const timings = { prefillMs: 1, thoughtMs: 2, decodeMs: 3, decodeSteps: 3, stepMs: [1, 1, 1] };

Deno.test("infer: an empty answer is shown as none, not as a blank line", () => {
  const text = formatAnswers(
    ["Ann has 2 pens and buys 3. How many?", "Bo has 4. How many?"],
    {
      answers: [
        { text: "### ", answer: "", tokens: [1, 2] },
        { text: "### 4", answer: "4", tokens: [1, 2, 3] },
      ],
      timings,
      K: 1,
      R: 1,
      c: 2,
    },
    [["2+3"], ["4"]],
    "cpu",
  );
  const answers = text.split("\n").filter((l) => l.startsWith("answer:"));
  assertEquals(answers, ["answer:   (none: no answer in the text)", "answer:   4"]);
  assert(text.includes('text:     "### "'), text);
});
