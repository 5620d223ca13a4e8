import { problem } from "./_problem.ts";
import { assert, assertAlmostEquals, assertEquals, assertThrows } from "./_assert.ts";
import { type CotForm, REASONS, statusOf, validate } from "../pipeline/validate.ts";
import {
  compareStated,
  evaluateExpression,
  ExpressionError,
  NoFiniteValueError,
} from "../pipeline/arith.ts";
import { readNumber } from "../pipeline/numbers.ts";
import { segment } from "../pipeline/segment.ts";
import { detectFormat, readProblems } from "../pipeline/read.ts";
import type { ValidatedRecord } from "../pipeline/types.ts";
import { haveSharedData, SHARED_DATA } from "./_shared_data.ts";

/** Validates a chain of annotations (as iCoT would give it) under both forms. */
function chain(steps: string[], answer: string): Record<CotForm, ValidatedRecord> {
  const s = segment(problem({ mathSteps: steps.map((x) => `<<${x}>>`), answer }));
  return { math: validate(s, { cot: "math" }), nl: validate(s) && validate(s, { cot: "nl" }) };
}

function outcome(v: ValidatedRecord): [string, string[]] {
  return [v.validation.status, v.validation.reasons];
}

Deno.test("validate: a correct chain is ok under both forms", () => {
  const r = chain(["54/3=18", "54+18=72"], "72");
  assertEquals(outcome(r.math), ["ok", []]);
  assertEquals(outcome(r.nl), ["ok", []]);
  assertEquals(r.math.validation.details, []);
  assertEquals(validate(r.math).validation.status, "ok"); // default form is math
});

Deno.test("validate: a wrong stated value drops under both forms and says what it evaluates to", () => {
  const r = chain(["54/3=18", "54+18=70"], "70");
  assertEquals(outcome(r.math), ["dropped", ["wrong_value"]]);
  assertEquals(outcome(r.nl), ["dropped", ["wrong_value"]]);
  assertEquals(r.math.validation.details, ["step 2 <<54+18=70>>: evaluates to 72"]);
});

Deno.test("validate: expressions that do not evaluate are bad_expression, never run", () => {
  for (
    const expr of [
      "sqrt(16)",
      "2*y+5",
      "45*1/6=7.5",
      "2 3",
      "import('x')",
      "a=1",
      "5mm",
      "[1,2]",
      "1e3",
      "0x10",
      "3!",
      "",
    ]
  ) {
    const r = chain([`${expr}=4`], "4");
    assertEquals(outcome(r.math), ["dropped", ["bad_expression"]], expr);
    // The chain's NL steps are derived from it ("sqrt(16) = 4"): as bad as the math step.
    assertEquals(outcome(r.nl), ["dropped", ["bad_expression"]], expr);
    assertThrows(() => evaluateExpression(expr), ExpressionError);
  }
  // Prose around an annotation that cannot be checked may still be good NL: flagged only.
  const prose = segment(problem({
    rationale: "He rounds 26.67 up to <<round(26.67)=27>>27 boxes.",
    answer: "27",
  }));
  assertEquals(outcome(validate(prose, { cot: "math" })), ["dropped", ["bad_expression"]]);
  assertEquals(outcome(validate(prose, { cot: "nl" })), ["flagged", ["bad_expression"]]);
  assertThrows(
    () => evaluateExpression("round(2.71)"),
    ExpressionError,
    'character "r" is not allowed',
  );
  assertThrows(() => evaluateExpression("1/0"), NoFiniteValueError, "divides by zero");
  assertThrows(() => evaluateExpression("(1+2"), ExpressionError, "does not parse");
});

Deno.test("evaluateExpression: the forms the data uses", () => {
  const cases: [string, number][] = [
    ["54/3", 18],
    [".5*4", 2],
    ["18*.5", 9],
    ["(-12)+40", 28],
    ["-24/-3", 8],
    ["40--15", 55],
    ["4*+5", 20],
    ["60+-7", 53],
    ["720//12", 60],
    ["2^3", 8],
    ["2**3", 8],
    ["80,000*5/100", 4000],
    ["1,000,000/4", 250000],
    ["$12*3", 36],
    ["150÷5", 30],
    ["4×5", 20],
    ["10 − 4", 6],
    ["50%*200", 100],
    ["200*25%", 50],
    ["(20+30)%", 0.5],
    ["10%3", 1],
    ["10 % 4", 2],
    ["2(3+4)", 14],
  ];
  for (const [expr, value] of cases) {
    assertAlmostEquals(evaluateExpression(expr), value, 1e-12, expr);
  }
});

Deno.test("rounding rule: equal, rounded (kept, flagged) and wrong", () => {
  const cases: [number, string, string][] = [
    [0.1 + 0.2, "0.3", "equal"],
    [24, "24.00", "equal"],
    [1080, "1,080", "equal"],
    [6, "$6", "equal"],
    [0.75, "3/4", "equal"],
    [10 / 3, "3.33", "rounded"],
    [10 / 3, "3.34", "rounded"], // rounded up, as "needs 4 buses" does
    [10 / 3, "3.3", "rounded"],
    [10 / 3, "3", "rounded"],
    [7 / 2, "3", "rounded"], // truncation to an integer
    [7 / 2, "4", "rounded"],
    [10 / 3, "3.5", "wrong"],
    [10 / 3, "3.32", "wrong"],
    [8, "7.5", "wrong"],
    [0.7, "2/3", "wrong"], // a stated fraction only matches exactly
    [20, "20%", "equal"],
    [0.2, "20%", "equal"],
    [0.205, "20%", "rounded"],
  ];
  for (const [x, stated, want] of cases) {
    assertEquals(compareStated(x, readNumber(stated)!), want, `${x} vs ${stated}`);
  }
  const r = chain(["10/3=3.33"], "3.33");
  assertEquals(outcome(r.math), ["flagged", ["rounded_value"]]);
  assertEquals(r.math.validation.details, ["step 1 <<10/3=3.33>>: evaluates to 3.33333333333"]);
});

Deno.test("rounding rule: one full unit of the last digit off is wrong, whatever the float noise", () => {
  // In binary floating point 5.1 − 5 is just under 0.1 and 49.1 − 49 just over: both are wrong.
  for (const step of ["2+3=5.1", "2+3=4.9", "3*3=8.9", "2+2=4.01", "100+1=101.1", "7*7=49.1"]) {
    const r = chain([step], step.split("=")[1]);
    assertEquals(outcome(r.math), ["dropped", ["wrong_value"]], step);
  }
  const cases: [number, string, string][] = [
    [0.1 + 0.2, "0.4", "wrong"], // x is 0.30000000000000004
    [0.1 + 0.2, "0.2", "wrong"],
    [1000000 + 0.1, "1000000.2", "wrong"],
    [123456789.01, "123456789.02", "wrong"], // within 1e-9 relative, yet a unit off: not equal
    [1e12 + 0.5, "1000000000000.6", "wrong"],
    [0.21, "20%", "wrong"], // one unit off as a hundredth
    [21, "20%", "wrong"],
    // Genuine roundings still pass: rounded half up, truncated, rounded up.
    [10 / 3, "3.33", "rounded"],
    [2 / 3, "0.67", "rounded"],
    [1 / 8, "0.13", "rounded"],
    [1 / 8, "0.12", "rounded"],
    [0.999, "1", "rounded"],
    [1234567.899, "1234567.89", "rounded"],
    // A round-up just under a unit away: the margin is float error's, not a part of the unit.
    [2001 / 1000, "3", "rounded"],
    [10001 / 10000, "2", "rounded"],
    [5.0001, "5.1", "rounded"],
    [3.0001, "3.01", "rounded"],
  ];
  for (const [x, stated, want] of cases) {
    assertEquals(compareStated(x, readNumber(stated)!), want, `${x} vs ${stated}`);
  }
  // Every whole number and a value one unit of 1, 2 or 3 decimals off it, either way.
  for (let a = 0; a <= 1000; a++) {
    for (const d of [1, 2, 3]) {
      for (const sign of [-1, 1]) {
        const stated = ((a * 10 ** d + sign) / 10 ** d).toFixed(d);
        assertEquals(compareStated(a, readNumber(stated)!), "wrong", `${a} vs ${stated}`);
        const half = (a * 10 ** d + sign / 2) / 10 ** d; // half a unit off: rounded
        assertEquals(compareStated(half, readNumber(stated)!), "rounded", `${half} vs ${stated}`);
      }
    }
  }
  const ok = chain(["1/8=0.13"], "0.13");
  assertEquals(outcome(ok.math), ["flagged", ["rounded_value"]]);
});

Deno.test("validate: stated values with commas, money and signs; a non-number is bad_value", () => {
  assertEquals(outcome(chain(["70,000+7,000=77,000"], "77,000").math), ["ok", []]);
  assertEquals(outcome(chain(["4*2=$8"], "$8").math), ["ok", []]);
  assertEquals(outcome(chain(["4-9=-5"], "-5").math), ["ok", []]);
  for (const v of ["~11.67", "6.66...", "3:15", ""]) {
    const r = chain([`50/3=${v}`], "17");
    assertEquals(outcome(r.math), ["dropped", ["bad_value"]], v);
    assertEquals(outcome(r.nl), ["dropped", ["bad_value"]], v);
  }
  const prose = segment(
    problem({ rationale: "Each gets 50/3 = <<50/3=~17>>about 17.", answer: "17" }),
  );
  assertEquals(outcome(validate(prose, { cot: "nl" })), ["flagged", ["bad_value"]]);
});

Deno.test("validate: NL derived from a bad math chain drops under nl too", () => {
  // Coconut and iCoT chains have no prose: their NL steps restate the annotations, so an
  // annotation that cannot be checked gives an NL step stating garbled arithmetic.
  for (
    const [step, reasons] of [
      ["36*1/5=7.2=7", ["bad_expression"]],
      ["10*.01*72=7.2=", ["bad_expression", "bad_value"]],
      ["26.67.round=27", ["bad_expression"]],
      ["3*3=10000000000000000001", ["number_too_large", "wrong_value"]],
    ] as const
  ) {
    const r = chain([step], "27");
    assertEquals(r.nl.nlDerived, true);
    assertEquals(r.nl.validation.status, "dropped", step);
    for (const reason of reasons) assert(r.nl.validation.reasons.includes(reason), step);
  }
  const derived = chain(["36*1/5=7.2=7"], "7");
  assertEquals(derived.nl.nl, ["36*1/5=7.2 = 7"]);
  // The same reasons on prose NL only flag; the decision follows the form that wrote the NL.
  assertEquals(statusOf(["bad_expression"], "nl", true), "dropped");
  assertEquals(statusOf(["bad_expression"], "nl", false), "flagged");
  assertEquals(statusOf(["bad_expression"], "math", false), "dropped");
  assertEquals(statusOf(["rounded_value"], "nl", true), "flagged");
});

Deno.test("validate: an unbalanced iCoT chain drops under nl: its NL keeps a garbled step", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/aug.txt`, "Q2?||<<2*3=6>> 6+1=7>> #### 7\n");
    const [p] = await Array.fromAsync(readProblems(`${dir}/aug.txt`));
    const s = segment(p);
    assertEquals(s.nl, ["6+1=7"]); // the first step is lost, the second half kept
    assertEquals(outcome(validate(s, { cot: "nl" })), [
      "dropped",
      ["unbalanced_annotation", "final_mismatch"],
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("validate: a division by zero is no_finite_value and drops under both forms", () => {
  const s = segment(
    problem({ rationale: "He has 5/0 = <<5/0=0>>0 apples.", answer: "0" }),
  );
  assertEquals(s.nl, ["He has 5/0 = 0 apples."]);
  for (const cot of ["math", "nl"] as const) {
    const v = validate(s, { cot });
    assertEquals(outcome(v), ["dropped", ["no_finite_value"]], cot);
    assertEquals(v.validation.details, [
      'step 1 <<5/0=0>>: expression "5/0": has no finite value (5 / 0 divides by zero)',
    ]);
  }
  assertThrows(() => evaluateExpression("0/0"), NoFiniteValueError);
  assertThrows(() => evaluateExpression("(-8)^(1/3)"), NoFiniteValueError);
  assertThrows(() => evaluateExpression("2*(3-3)/(4-4)"), NoFiniteValueError);
});

Deno.test("validate: a modulo by zero is no_finite_value, as a division by zero is", () => {
  // mathjs gives x mod 0 = x, which would let <<5%0=5>> pass.
  for (const step of ["5%0=5", "5 % 0=5", "7%(2-2)=7", "0%0=0"]) {
    const r = chain([step], step.split("=")[1]);
    assertEquals(outcome(r.math), ["dropped", ["no_finite_value"]], step);
    assertEquals(outcome(r.nl), ["dropped", ["no_finite_value"]], step);
  }
  assertThrows(() => evaluateExpression("5%0"), NoFiniteValueError, "5 mod 0 divides by zero");
  assertEquals(evaluateExpression("5%3"), 2); // a modulo by anything else still evaluates
});

Deno.test("validate: a stated value beyond 2^53 is still compared", () => {
  const wrong = segment(
    problem({ rationale: "He has <<2*3=10000000000000001>>10000000000000001.", answer: "6" }),
  );
  for (const cot of ["math", "nl"] as const) {
    const v = validate(wrong, { cot });
    assertEquals(v.validation.status, "dropped", cot);
    assertEquals(v.validation.reasons.slice(0, 2), ["number_too_large", "wrong_value"]);
    assert(v.validation.details?.includes("step 1 <<2*3=10000000000000001>>: evaluates to 6"));
  }
  // An expression too large to check exactly is compared in floating point: far off is wrong.
  const far = segment(problem({ rationale: "<<99999999999*99999999999=5>>5", answer: "5" }));
  assertEquals(validate(far, { cot: "nl" }).validation.reasons, [
    "number_too_large",
    "wrong_value",
  ]);
  const close = segment(problem({
    rationale: "<<99999999999*99999999999=9999999999800000000001>>9999999999800000000001",
    answer: "9999999999800000000001",
  }));
  assertEquals(outcome(validate(close, { cot: "nl" })), ["flagged", ["number_too_large"]]);
});

Deno.test("validate: no_annotation drops under math, flags under nl; empty_cot drops both", () => {
  const prose = segment(problem({ rationale: "She has 5 - 2 = 3 left.", answer: "3" }));
  assertEquals(outcome(validate(prose, { cot: "math" })), ["dropped", ["no_annotation"]]);
  assertEquals(outcome(validate(prose, { cot: "nl" })), ["flagged", ["no_annotation"]]);
  const empty = segment(problem({ mathSteps: [], answer: "13" }));
  assertEquals(outcome(validate(empty, { cot: "math" })), ["dropped", ["empty_cot"]]);
  assertEquals(outcome(validate(empty, { cot: "nl" })), ["dropped", ["empty_cot"]]);
});

Deno.test("validate: unbalanced annotations drop under both forms", () => {
  const s = segment(
    problem({ rationale: "3*4 = <<3*4=12 eggs.\nThen 12+1 = <<12+1=13>>13.", answer: "13" }),
  );
  // The unclosed annotation's text is left in the NL step.
  assertEquals(s.nl[0], "3*4 = 3*4=12 eggs.");
  assertEquals(outcome(validate(s, { cot: "math" })), ["dropped", ["unbalanced_annotation"]]);
  assertEquals(outcome(validate(s, { cot: "nl" })), ["dropped", ["unbalanced_annotation"]]);
});

Deno.test("validate: final_mismatch and answer_not_number flag", () => {
  const r = chain(["2*3=6", "6+1=7"], "6");
  assertEquals(outcome(r.math), ["flagged", ["final_mismatch"]]);
  assertEquals(r.math.validation.details, ['last step gives 7, answer is "6"']);
  assertEquals(outcome(chain(["2*3=6"], "$6").math), ["ok", []]);
  assertEquals(outcome(chain(["2*3=6"], "6.0").math), ["ok", []]);
  assertEquals(outcome(chain(["2*3=6"], "six").math), ["flagged", ["answer_not_number"]]);
});

Deno.test("validate: NL steps must carry the numbers the math produces", () => {
  const ok = segment(problem({
    rationale:
      "A third is 54/3 = <<54/3=18>>18.\nThe price is $<<1000+80=1080>>1,080 or 20% = <<20/100=0.2>>0.2.",
    answer: "0.2",
  }));
  assertEquals(outcome(validate(ok)), ["ok", []]);
  const lost = segment(problem({
    rationale: "A third of the 54 is <<54/3=18>>eighteen.\nAdd 1: <<18+1=19>>19.",
    answer: "19",
  }));
  const v = validate(lost, { cot: "nl" });
  assertEquals(outcome(v), ["flagged", ["nl_missing_number", "nl_step_mismatch"]]);
  assertEquals(v.validation.details, [
    "NL steps lack 18",
    `NL step 1 "A third of the 54 is eighteen." does not state 18, the value of math step 1 ` +
    "<<54/3=18>>",
  ]);
  // Derived NL carries its numbers by construction and is not checked.
  assertEquals(outcome(chain(["54/3=18"], "18").nl), ["ok", []]);
});

Deno.test("validate: each NL step states the value mathjs computes for its line's math step", () => {
  // A line that states its value anywhere in its text passes.
  const swapped = segment(problem({
    rationale: "She has 54/3 = <<54/3=18>>18 pens.\nThen 6*4 = <<6*4=24>>18 pens... so 24 in all.",
    answer: "24",
  }));
  assertEquals(swapped.nlOfMath, [0, 1]);
  assertEquals(outcome(validate(swapped, { cot: "nl" })), ["ok", []]);
  // Here line 2 states 18 (a value of the chain, so nl_missing_number is silent, and 24 is on
  // line 3), but its own calculation 6*4 is 24: the NL step does not say what it computes.
  const wrong = segment(problem({
    rationale: "She has 54/3 = <<54/3=18>>18 pens.\nShe buys 6*4 = <<6*4=24>> more, 18 in all.\n" +
      "So 24 pens.",
    answer: "24",
  }));
  assertEquals(wrong.nlOfMath, [0, 1]);
  const v = validate(wrong, { cot: "nl" });
  assertEquals(outcome(v), ["flagged", ["nl_step_mismatch"]]);
  assertEquals(v.validation.details, [
    `NL step 2 "She buys 6*4 = more, 18 in all." does not state 24, the value of math step 2 ` +
    "<<6*4=24>>",
  ]);
  // The stated value of a rounded step counts: 10/3 computes 3.333..., the prose says 3.33.
  const rounded = segment(
    problem({ rationale: "Each gets 10/3 = <<10/3=3.33>>3.33.", answer: "3.33" }),
  );
  assertEquals(validate(rounded).validation.reasons, ["rounded_value"]);
  // A single paragraph is split into sentences: which sentence holds which step is unknown.
  const para = segment(problem({
    rationale: "He has 2*3 = <<2*3=6>>6. Then 6+1 = <<6+1=7>>7.",
    answer: "7",
  }));
  assertEquals(para.nlOfMath, [null, null]);
  assertEquals(validate(para).validation.reasons, []);
});

Deno.test("validate: reasons come once each, in the order found; details keep every step", () => {
  const r = chain(["1+1=3", "sqrt(4)=2", "2+2=5"], "9");
  assertEquals(r.math.validation.reasons, ["wrong_value", "bad_expression", "final_mismatch"]);
  assertEquals(r.math.validation.details?.length, 4);
});

Deno.test("REASONS: every reason validate emits is documented, and statusOf follows it", () => {
  for (const [code, info] of Object.entries(REASONS)) {
    assert(info.description.length > 10, code);
    assert(["drop", "flag"].includes(info.math) && ["drop", "flag"].includes(info.nl), code);
  }
  assertEquals(REASONS.no_annotation.math, "drop");
  assertEquals(REASONS.no_annotation.nl, "flag");
  assertEquals(statusOf([], "math"), "ok");
  assertEquals(statusOf(["final_mismatch"], "nl"), "flagged");
  assertEquals(statusOf(["final_mismatch", "bad_expression"], "math"), "dropped");
  assertEquals(statusOf(["final_mismatch", "bad_expression"], "nl"), "flagged");
  const seen = new Set<string>();
  for (
    const v of [
      chain(["1+1=3"], "x"),
      chain(["sqrt(4)=2", "1/3=0.33"], "~"),
      chain(["2=~2"], "3"),
      chain([], "3"),
      chain(["1+1=2"], "3"),
    ]
  ) for (const r of [...v.math.validation.reasons, ...v.nl.validation.reasons]) seen.add(r);
  for (const r of seen) assert(r in REASONS, r);
  assertEquals(seen.size, 7, [...seen].join());
});

// --- the real GSM8K, when present --------------------------------------------------------

const DATA = `${SHARED_DATA}gsm8k/`;
const HAVE_DATA = haveSharedData("gsm8k/", "validate_test", "the GSM8K count tests");

interface Counts {
  records: number;
  mathSteps: number;
  nlSteps: number;
  reasons: Record<string, number>;
  math: Record<string, number>;
  nl: Record<string, number>;
}

async function countFile(path: string): Promise<Counts> {
  const c: Counts = { records: 0, mathSteps: 0, nlSteps: 0, reasons: {}, math: {}, nl: {} };
  for await (const p of readProblems(path)) {
    c.records++;
    const s = segment(p);
    c.mathSteps += s.math.length;
    c.nlSteps += s.nl.length;
    for (const cot of ["math", "nl"] as const) {
      const v = validate(s, { cot });
      c[cot][v.validation.status] = (c[cot][v.validation.status] ?? 0) + 1;
      if (cot === "math") {
        for (const r of v.validation.reasons) c.reasons[r] = (c.reasons[r] ?? 0) + 1;
      }
    }
  }
  return c;
}

Deno.test({
  name: "GSM8K (real): records, annotations, no_annotation and final_mismatch counts",
  ignore: !HAVE_DATA,
  fn: async () => {
    // Measured on openai/grade-school-math. train: 95/7473 = 1.3% without annotation,
    // 377/7473 = 5.0% ending on a value other than the answer; no arithmetic errors, no
    // rounded values, all NL steps carry the math results. Socratic gives the same counts once
    // its sub-questions are stripped.
    const expected: Record<string, Counts> = {
      "train.jsonl": {
        records: 7473,
        mathSteps: 23716,
        nlSteps: 26720,
        reasons: { final_mismatch: 377, no_annotation: 95 },
        math: { ok: 7001, flagged: 377, dropped: 95 },
        nl: { ok: 7001, flagged: 472 },
      },
      "test.jsonl": {
        records: 1319,
        mathSteps: 4282,
        nlSteps: 4819,
        reasons: { final_mismatch: 93, no_annotation: 18 },
        math: { ok: 1208, flagged: 93, dropped: 18 },
        nl: { ok: 1208, flagged: 111 },
      },
    };
    expected["train_socratic.jsonl"] = expected["train.jsonl"];
    expected["test_socratic.jsonl"] = expected["test.jsonl"];
    for (const [file, want] of Object.entries(expected)) {
      assertEquals(await detectFormat(`${DATA}${file}`), "gsm8k");
      assertEquals(await countFile(`${DATA}${file}`), want, file);
    }
  },
});

Deno.test({
  name: "GSM8K socratic (real): strip removes every sub-question, keep keeps them",
  ignore: !HAVE_DATA,
  fn: async () => {
    let strips = 0;
    let keeps = 0;
    for await (const p of readProblems(`${DATA}test_socratic.jsonl`)) {
      const strip = segment(p).nl;
      const keep = segment(p, { socratic: "keep" }).nl;
      for (const line of keep) assert(line.includes(" **"), line);
      for (const line of strip) assert(!line.includes(" **"), line);
      assert(strip.every((line) => keep.some((k) => k.endsWith(line))), p.id);
      strips += strip.length;
      keeps += keep.length;
    }
    // Two sub-questions in the test split have no answer: kept, they are steps; stripped,
    // nothing is left of them. Stripped, the NL steps match the main split's line count.
    assertEquals([strips, keeps], [4819, 4821]);
  },
});
