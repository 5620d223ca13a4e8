// The check of a whole-number option: its message shows the value as given.
import { assertEquals, assertThrows } from "./_assert.ts";
import { checkWhole } from "../base/whole.ts";

Deno.test("whole: a value that is no number is shown quoted, with its type", () => {
  const message = (v: unknown) =>
    assertThrows(() => checkWhole("openInference: threads", v as number, 0), RangeError).message;
  // A string "1" printed bare read as a valid value.
  assertEquals(
    message("1"),
    'openInference: threads = "1": must be a whole number, at least 0 (given a string)',
  );
  assertEquals(
    message(null),
    "openInference: threads = null: must be a whole number, at least 0 (given null)",
  );
  assertEquals(
    message(true),
    "openInference: threads = true: must be a whole number, at least 0 (given a boolean)",
  );
  assertEquals(
    message({ n: 1 }),
    "openInference: threads = {…}: must be a whole number, at least 0 (given an object)",
  );
  // Numbers read as before.
  assertEquals(message(1.5), "openInference: threads = 1.5: must be a whole number, at least 0");
  assertEquals(message(NaN), "openInference: threads = NaN: must be a whole number, at least 0");
  assertEquals(message(-1), "openInference: threads = -1: must be a whole number, at least 0");
});
