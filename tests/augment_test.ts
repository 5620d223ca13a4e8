import { assert, assertEquals } from "./_assert.ts";
import {
  augment,
  type AugmentOptions,
  AugmentOptionsError,
  type AugmentOutcome,
  augmentProblem,
  AugmentReport,
  formatLike,
  verifyVariant,
} from "../pipeline/augment.ts";
import { AUGMENT_REASONS } from "../pipeline/augment/_plan.ts";
import { findNumbers, numberWords } from "../pipeline/augment/_numbers.ts";
import { excludeIndex, withVariants } from "../pipeline/augment_stream.ts";
import { NEAR_COPY_THRESHOLD, NgramIndex, ngrams, words } from "../pipeline/overlap.ts";
import { readProblems } from "../pipeline/read.ts";
import { segment } from "../pipeline/segment.ts";
import { validate } from "../pipeline/validate.ts";
import { readNumber } from "../pipeline/numbers.ts";
import type { Problem } from "../pipeline/types.ts";
import { haveSharedData, SHARED_DATA } from "./_shared_data.ts";

let line = 0;
/** A made-up GSM8K-style problem; the rationale's lines are joined with newlines. */
function problem(question: string, rationale: string[], answer: string): Problem {
  line++;
  return {
    id: `fixture:${line}`,
    source: { file: "fixture", line },
    question,
    rationale: rationale.join("\n"),
    mathSteps: null,
    answer,
  };
}

function run(p: Problem, opts: Partial<AugmentOptions> = {}) {
  return augmentProblem(p, { variants: 5, seed: 7, ...opts });
}

/** Checks every variant: ok in both forms, grounded, and different from the original. */
function checkVariants(p: Problem, variants: Problem[]) {
  assert(variants.length > 0, `${p.id}: no variants`);
  const seen = new Set<string>();
  variants.forEach((v, k) => {
    assertEquals(v.id, `${p.id}#aug${k + 1}`);
    assertEquals(v.source, p.source);
    assertEquals(verifyVariant(v), [], `${v.id}\n${v.question}\n${v.rationale}`);
    for (const cot of ["math", "nl"] as const) {
      assertEquals(validate(segment(v), { cot }).validation.status, "ok", v.id);
    }
    assert(v.question !== p.question, `${v.id}: question unchanged`);
    assert(!seen.has(v.question), `${v.id}: duplicate variant`);
    seen.add(v.question);
  });
}

const money = problem(
  "Priya has $2,000. She buys a used piano for $1,200 and pays $150 to have it tuned. How much money does she have left?",
  [
    "The piano and the tuning cost 1,200 + 150 = $<<1200+150=1350>>1,350.",
    "She has 2,000 - 1,350 = $<<2000-1350=650>>650 left.",
  ],
  "650",
);

Deno.test("augment: money with thousands commas keeps its commas and its arithmetic", () => {
  const { variants, outcome } = run(money);
  checkVariants(money, variants);
  assertEquals(outcome, { id: money.id, status: "augmented", variants: 5 });
  for (const v of variants) {
    const nums = findNumbers(v.question).map((n) => n);
    // $2,000 is drawn on its grid of thousands, $1,200 on hundreds; both keep their commas.
    const [total, piano, tune] = nums.map((n) => n.value);
    assert(nums[0].dollar && nums[0].style.commas && total % 1000 === 0, v.question);
    assert(nums[1].style.commas === piano >= 1000 && piano % 100 === 0, v.question);
    assert(tune % 50 === 0, v.question);
    assertEquals(readNumber(v.answer)!.value, total - piano - tune);
    assert(total - piano - tune > 0);
    // The rationale's prose restates the new numbers, with commas where they were.
    assert(v.rationale!.includes(`${nums[1].text} + ${nums[2].text}`), v.rationale!);
  }
});

const percent = problem(
  "A jacket costs $80. The store takes 25% off. Sam also pays $6 for a belt. How much does Sam pay?",
  [
    "The discount is 80 * 25/100 = $<<80*25/100=20>>20.",
    "The jacket costs 80 - 20 = $<<80-20=60>>60.",
    "With the belt Sam pays 60 + 6 = $<<60+6=66>>66.",
  ],
  "66",
);

Deno.test("augment: a percentage stays a round percentage below 100, written with %", () => {
  const { variants } = run(percent, { variants: 8 });
  checkVariants(percent, variants);
  const pcts = new Set<number>();
  for (const v of variants) {
    const p = findNumbers(v.question).find((n) => n.percent)!;
    assert(p.value % 5 === 0 && p.value > 0 && p.value < 100, v.question);
    pcts.add(p.value);
    const price = findNumbers(v.question)[0].value;
    const belt = findNumbers(v.question)[2].value;
    assertEquals(readNumber(v.answer)!.value, price - price * p.value / 100 + belt);
    assert(v.rationale!.includes(`* ${p.value}/100`), v.rationale!);
  }
  assert(pcts.size > 1, "the percentage is drawn too");
});

const percentForms = problem(
  "Of 40 apples in a crate, 25% are red and the rest are green. Mia buys all the green ones at $2 each. How much does she pay?",
  [
    "75% of the apples are green, so there are 40 * 0.75 = <<40*0.75=30>>30 green apples.",
    "She pays 30 * 2 = $<<30*2=60>>60.",
  ],
  "60",
);

Deno.test("augment: a percentage used as its complement (1 - 25% = 0.75) is rewritten everywhere", () => {
  const { variants } = run(percentForms);
  checkVariants(percentForms, variants);
  for (const v of variants) {
    const [apples, pct, price] = findNumbers(v.question).map((n) => n.value);
    const rest = 100 - pct;
    assert(v.rationale!.startsWith(`${rest}% of the apples`), v.rationale!);
    assert(
      v.rationale!.includes(
        `${apples} * ${formatLike(rest / 100, { commas: false, decimals: 2, bare: false })}`,
      ),
    );
    assertEquals(readNumber(v.answer)!.value, apples * rest / 100 * price);
  }
});

const fraction = problem(
  "Leo has 36 marbles. He gives 1/3 of them to his sister and then buys 8 more. How many marbles does he have?",
  [
    "He gives away 36 * 1/3 = <<36*1/3=12>>12 marbles.",
    "He has 36 - 12 = <<36-12=24>>24 marbles left.",
    "After buying more he has 24 + 8 = <<24+8=32>>32 marbles.",
  ],
  "32",
);

Deno.test("augment: fractions stay as written; the numbers they divide stay divisible", () => {
  const { variants } = run(fraction);
  checkVariants(fraction, variants);
  for (const v of variants) {
    assert(v.question.includes("1/3 of them"), v.question);
    const n = findNumbers(v.question)[0].value;
    assert(n % 3 === 0 && n !== 36, v.question);
    assert(v.rationale!.includes(`${n} * 1/3 = <<${n}*1/3=${n / 3}>>${n / 3} marbles`));
  }
});

const decimals = problem(
  "Ana buys 4 notebooks for $2.50 each and a pen for $1.25. How much does she spend?",
  [
    "The notebooks cost 4 * 2.50 = $<<4*2.50=10>>10.",
    "In all she spends 10 + 1.25 = $<<10+1.25=11.25>>11.25.",
  ],
  "11.25",
);

Deno.test("augment: money with cents stays on its grid and keeps two decimals", () => {
  const { variants } = run(decimals);
  checkVariants(decimals, variants);
  for (const v of variants) {
    const [k, price, pen] = findNumbers(v.question);
    assert(Number.isInteger(k.value), v.question);
    // 2.50 is on a grid of 0.5 and written with two decimals; 1.25 on a grid of 0.25.
    assert(price.value * 2 === Math.round(price.value * 2), v.question);
    assert(price.style.decimals === 2 || Number.isInteger(price.value), v.question);
    assert(Math.abs(pen.value * 4 - Math.round(pen.value * 4)) < 1e-9, v.question);
    assertEquals(
      readNumber(v.answer)!.value,
      Math.round((k.value * price.value + pen.value) * 100) / 100,
    );
  }
});

Deno.test("augment: number words and constants never change", () => {
  const q = problem(
    "Ivan walks 3 miles a day and twice as far on Sundays. How far does he walk on a Sunday and a Monday?",
    ["On Sunday he walks 3 * 2 = <<3*2=6>>6 miles.", "Together that is 6 + 3 = <<6+3=9>>9 miles."],
    "9",
  );
  const r = run(q);
  checkVariants(q, r.variants);
  for (const v of r.variants) {
    assert(v.question.includes("twice as far"), v.question);
    const d = findNumbers(v.question)[0].value;
    assert(v.rationale!.includes(`${d} * 2 = <<${d}*2=${d * 2}>>`), v.rationale!);
  }
  assertEquals(numberWords("twice as far, half of a dozen"), [2, 2, 0.5, 12]);
});

Deno.test("augment: problems that cannot be mapped get their reason code", () => {
  const cases: [Problem, string][] = [
    [
      problem("Sam has 4 tricycles. How many wheels do they have?", [
        "They have 4 * 3 = <<4*3=12>>12 wheels.",
      ], "12"),
      "unmapped_operand",
    ],
    [
      problem(
        "Sam has 4 cats and 5 dogs. How many pets?",
        ["He has 4 + 5 = <<4+5=10>>10 pets."],
        "10",
      ),
      "original_not_ok",
    ],
    [
      problem(
        "How many hours are in a week?",
        ["There are 24 * 7 = <<24*7=168>>168 hours."],
        "168",
      ),
      "no_question_number",
    ],
    [
      problem("Sam has 4 bags of 6 apples. How many apples?", [
        "He has 4 * 6 = <<4*6=24>>24 apples.",
        "That is 24 / 2 = 12 pairs.",
      ], "24"),
      "unannotated_computation",
    ],
    [
      problem("Sam has 4 bags of 6 apples. How many apples?", [
        "He has 4 * 6 = <<4*6=24>>24 apples, 17 of them red.",
      ], "24"),
      "unexplained_prose_number",
    ],
  ];
  for (const [p, reason] of cases) {
    const { variants, outcome } = run(p);
    assertEquals(variants, [], p.question);
    assert(outcome.status === "skipped" && outcome.reason === reason, JSON.stringify(outcome));
    assert(reason in AUGMENT_REASONS);
    assert(outcome.detail.length > 0);
  }
  // No annotation at all (a prose-only CoT): no_annotation, before any validation.
  const prose = problem("Sam has 4 cats. How many cats?", ["He has 4 cats."], "4");
  const o = run(prose).outcome;
  assert(o.status === "skipped" && o.reason === "no_annotation", JSON.stringify(o));
});

Deno.test("augment: a wrong rewrite is caught by the validator and the grounding check", () => {
  const old = findNumbers(money.question)[1].text; // "1,200"
  const v = run(money).variants.find((v) => findNumbers(v.question)[1].text !== old)!;
  assertEquals(verifyVariant(v), []);
  const now = findNumbers(v.question)[1].text;

  // A step whose stated value was not recomputed.
  const stale = v.rationale!.replace(/=(\d+)>>/, "=999>>");
  assert(verifyVariant({ ...v, rationale: stale }).includes("wrong_value"));

  // Prose that still carries the old result instead of the new one (the last line's).
  const staleProse = v.rationale!.replace(/>>([\d,]+) left\./, ">>650 left.");
  assert(staleProse !== v.rationale && v.answer !== "650");
  assert(verifyVariant({ ...v, rationale: staleProse }).includes("nl_missing_number"));

  // A question number left unchanged while the chain changed.
  const staleQuestion = v.question.replace(`$${now}`, `$${old}`);
  assert(staleQuestion !== v.question);
  assert(verifyVariant({ ...v, question: staleQuestion }).includes("unmapped_operand"));
});

Deno.test("augment: deterministic per seed and problem; other seeds give other variants", () => {
  const a = run(percent).variants;
  assertEquals(run(percent).variants, a);
  const b = run(percent, { seed: 8 }).variants;
  assert(a.some((v, i) => v.question !== b[i]?.question));
  // The generator's return value is the outcome.
  const it = augment(fraction, { variants: 2, seed: 1 });
  let r = it.next();
  let n = 0;
  while (!r.done) {
    n++;
    r = it.next();
  }
  assertEquals(r.value, { id: fraction.id, status: "augmented", variants: n });
});

Deno.test("augment: options are checked; the report counts outcomes and reasons", () => {
  for (
    const [opts, field] of [[{ variants: -1, seed: 0 }, "variants"], [
      { variants: 1, seed: 1.5 },
      "seed",
    ]] as const
  ) {
    let caught: unknown = null;
    try {
      [...augment(money, opts)];
    } catch (e) {
      caught = e;
    }
    assert(caught instanceof AugmentOptionsError && caught.message.includes(field));
  }
  const report = new AugmentReport();
  const outcomes: AugmentOutcome[] = [money, percent, fraction].map((p) => run(p).outcome);
  outcomes.push(run(problem("How many hours are in a day?", ["24 = <<24=24>>24"], "24")).outcome);
  outcomes.forEach((o) => report.add(o));
  const s = report.summary();
  assertEquals([s.problems, s.augmented, s.variants], [4, 3, 15]);
  assertEquals(s.share, 0.75);
  assertEquals(s.reasons, { no_question_number: 1 });
});

Deno.test("overlap: words, n-grams, containment; near copies of excluded questions are refused", () => {
  assertEquals(words("It's $1,200.50 today!"), ["it's", "#", "today"]);
  assertEquals(words("Buy 3 pens", { maskNumbers: false }), ["buy", "3", "pens"]);
  assertEquals(ngrams("one two three", { n: 8 }), new Set(["one two three"]));
  const test =
    "Dana has 24 plums. She gives a third of them to her cousin and eats 2. How many plums are left?";
  const index = new NgramIndex();
  index.add("eval:1", test);
  index.add(
    "eval:2",
    "A bus carries 40 people on each trip and makes 6 trips a day. How many people ride?",
  );
  assertEquals(index.size, 2);
  const copy = problem(
    "Dana has 36 plums. She gives a third of them to her cousin and eats 5. How many plums are left?",
    ["She gives 36/3 = <<36/3=12>>12 plums.", "She has 36 - 12 - 5 = <<36-12-5=19>>19 left."],
    "19",
  );
  assertEquals(index.nearest(copy.question)!.id, "eval:1");
  assertEquals(index.nearest(copy.question)!.containment, 1);
  const o = run(copy, { exclude: index }).outcome;
  assert(o.status === "skipped" && o.reason === "near_copy_of_excluded", JSON.stringify(o));
  // Without the index the same problem augments, and its variants are near copies too: the
  // check has teeth.
  const { variants } = run(copy);
  assert(variants.length > 0);
  for (const v of variants) assert(index.nearest(v.question)!.containment >= NEAR_COPY_THRESHOLD);
  // A different problem passes.
  const r = run(money, { exclude: index });
  assertEquals(r.outcome.status, "augmented");
  for (const v of r.variants) {
    assert((index.nearest(v.question)?.containment ?? 0) < NEAR_COPY_THRESHOLD);
  }
});

const DATA = `${SHARED_DATA}gsm8k/`;
const HAVE_DATA = haveSharedData("gsm8k/", "augment_test", "the GSM8K augmentation tests");

Deno.test({
  name: "augment (real GSM8K): share, reasons, and no test question or near copy in the output",
  ignore: !HAVE_DATA,
  fn: async () => {
    const index = new NgramIndex();
    const testQuestions = new Set<string>();
    for await (const p of readProblems(`${DATA}test.jsonl`)) {
      index.add(p.id, p.question);
      testQuestions.add(p.question);
    }
    const report = new AugmentReport();
    let nearCopiesWithoutExclusion = 0;
    let checked = 0;
    const output: Problem[] = [];
    for await (const p of readProblems(`${DATA}train.jsonl`)) {
      const { variants, outcome } = augmentProblem(p, { variants: 2, seed: 1, exclude: index });
      report.add(outcome);
      const near = (index.nearest(p.question)?.containment ?? 0) >= NEAR_COPY_THRESHOLD;
      // The originals that are near copies are exactly the ones refused.
      assertEquals(
        outcome.status === "skipped" && outcome.reason === "near_copy_of_excluded",
        near,
      );
      if (near) {
        nearCopiesWithoutExclusion += augmentProblem(p, { variants: 2, seed: 1 }).variants.length;
      } else {
        output.push(p);
      }
      output.push(...variants);
      // Spot-check the variants with the validator (each one already passed it).
      if (p.source.line % 50 === 0) {
        for (const v of variants) {
          assertEquals(validate(segment(v), { cot: "math" }).validation.status, "ok");
          checked++;
        }
      }
    }
    const s = report.summary();
    assertEquals(s.problems, 7473);
    // Measured: 4,814 of 7,473 (64.4%) augmented with 2 variants asked; docs/pipeline.md.
    assert(s.share > 0.6 && s.share < 0.7, `share ${s.share}`);
    assertEquals(s.reasons.near_copy_of_excluded, 7);
    // GSM8K's 95 records without annotations, then the 383 others that are not ok.
    assertEquals(s.reasons.no_annotation, 95);
    assert(s.reasons.original_not_ok! >= 383, JSON.stringify(s.reasons));
    assert(checked > 100);
    assert(nearCopiesWithoutExclusion > 0, "without exclusion, near copies would be produced");
    let worst = 0;
    for (const p of output) {
      assert(!testQuestions.has(p.question), p.id);
      worst = Math.max(worst, index.nearest(p.question)?.containment ?? 0);
    }
    assert(worst < NEAR_COPY_THRESHOLD, `max containment ${worst}`);
  },
});

Deno.test("withVariants: originals then their variants, decontaminated, every outcome counted", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const evalFile = `${dir}/eval.jsonl`;
    const evalQuestion =
      "Dana has 24 plums. She gives a third of them to her cousin and eats 2. How many plums are left?";
    await Deno.writeTextFile(
      evalFile,
      JSON.stringify({
        question: evalQuestion,
        answer: "24/3 = <<24/3=8>>8\n24-8-2=<<24-8-2=14>>14\n#### 14",
      }) + "\n",
    );
    const index = await excludeIndex([evalFile]);
    assertEquals(index.size, 1);
    const copy = problem(
      "Dana has 36 plums. She gives a third of them to her cousin and eats 5. How many plums are left?",
      ["She gives 36/3 = <<36/3=12>>12 plums.", "She has 36 - 12 - 5 = <<36-12-5=19>>19 left."],
      "19",
    );
    const input = [money, copy, fraction];
    const report = new AugmentReport();
    const out: string[] = [];
    for await (const p of withVariants(input, { variants: 2, seed: 3, exclude: index }, report)) {
      out.push(p.id);
    }
    assertEquals(out, [
      money.id,
      `${money.id}#aug1`,
      `${money.id}#aug2`,
      fraction.id,
      `${fraction.id}#aug1`,
      `${fraction.id}#aug2`,
    ]);
    assertEquals(report.summary().reasons, { near_copy_of_excluded: 1 });
    assertEquals([report.summary().problems, report.summary().variants], [3, 4]);
    // Kept originals when asked; no variants: a pass-through that still decontaminates.
    const kept: string[] = [];
    const r2 = new AugmentReport();
    for await (
      const p of withVariants(
        input,
        { variants: 0, seed: 3, exclude: index, dropExcluded: false },
        r2,
      )
    ) {
      kept.push(p.id);
    }
    assertEquals(kept, input.map((p) => p.id));
    assertEquals(r2.summary().problems, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
