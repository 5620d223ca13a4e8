import { assert, assertEquals, assertThrows } from "./_assert.ts";
import {
  FAMILIES,
  type Family,
  generate,
  generateRecords,
  otherFamilies,
  resolveSyntheticOptions,
  type SyntheticOptions,
  SyntheticOptionsError,
  type SyntheticRecord,
} from "../pipeline/synthetic.ts";
import { Rng } from "../base/rng.ts";
import { segment } from "../pipeline/segment.ts";
import { validate } from "../pipeline/validate.ts";
import { readNumber } from "../pipeline/numbers.ts";

function records(opts: SyntheticOptions): SyntheticRecord[] {
  return [...generateRecords(opts)];
}

/** The operands of an annotation's expression, as written. */
function operands(expr: string): string[] {
  return expr.split(/[-+*/()]/).map((s) => s.trim()).filter((s) => s !== "");
}

Deno.test("synthetic: every record validates ok in both CoT forms, over many seeds, families and lengths", () => {
  let n = 0;
  const perFamily = new Map<Family, number>();
  const perSteps = new Map<number, number>();
  for (let seed = 0; seed < 24; seed++) {
    for (const r of generateRecords({ n: 250, seed, minSteps: 1, maxSteps: 12 })) {
      const s = segment(r.problem);
      assertEquals(s.math.length, r.steps, r.problem.id);
      assertEquals(s.nl.length, r.steps, `${r.problem.id}: one NL line per step`);
      assert(!s.nlDerived, r.problem.id);
      for (const cot of ["math", "nl"] as const) {
        const v = validate(s, { cot });
        assertEquals(v.validation, { status: "ok", reasons: [], details: [] }, r.problem.id);
      }
      perFamily.set(r.family, (perFamily.get(r.family) ?? 0) + 1);
      perSteps.set(r.steps, (perSteps.get(r.steps) ?? 0) + 1);
      n++;
    }
  }
  assertEquals(n, 6000);
  assertEquals([...perFamily.keys()].sort(), [...FAMILIES].sort());
  for (let k = 1; k <= 12; k++) assert((perSteps.get(k) ?? 0) > 300, `steps ${k}`);
});

Deno.test("synthetic: values stay within maxValue, non-negative, whole except money with cents", () => {
  for (const [maxValue, digits] of [[100, 1], [1000, 2], [100_000, 4]]) {
    for (const r of generateRecords({ n: 700, seed: 5, maxSteps: 10, maxValue, digits })) {
      const s = segment(r.problem);
      for (const m of s.math) {
        const v = readNumber(m.value)!;
        assert(v.value >= 0 && v.value <= maxValue, `${r.problem.id} ${m.text} > ${maxValue}`);
        if (r.family !== "shopping" && r.family !== "cooking") {
          assert(Number.isInteger(v.value), `${r.problem.id} ${m.text}: not whole`);
        } else {
          assert(v.decimals! <= 2 && Number.isInteger(Math.round(v.value * 100)), m.text);
        }
      }
      assert(s.answerValue !== null && s.answerValue <= maxValue, r.problem.id);
    }
  }
});

Deno.test("synthetic: steps form one chain; the answer is the last value", () => {
  for (const r of generateRecords({ n: 2000, seed: 11, minSteps: 2, maxSteps: 10 })) {
    const math = segment(r.problem).math;
    // Every result but the last is an operand of a later step: no dangling facts.
    for (let i = 0; i < math.length - 1; i++) {
      const used = math.slice(i + 1).some((m) => operands(m.expr).includes(math[i].value));
      assert(used, `${r.problem.id}: step ${i + 1} ${math[i].text} is never used`);
    }
    // Every step but the first uses an earlier result, or feeds the very next step.
    for (let i = 1; i < math.length; i++) {
      const earlier = math.slice(0, i).map((m) => m.value);
      const usesEarlier = operands(math[i].expr).some((o) => earlier.includes(o));
      const feedsNext = i + 1 < math.length &&
        operands(math[i + 1].expr).includes(math[i].value);
      assert(usesEarlier || feedsNext, `${r.problem.id}: step ${i + 1} stands alone`);
    }
    assertEquals(readNumber(r.problem.answer)!.value, readNumber(math.at(-1)!.value)!.value);
  }
});

Deno.test("synthetic: the same seed gives the same records; other seeds differ", () => {
  const a = records({ n: 300, seed: 42 });
  const b = records({ n: 300, seed: 42 });
  assertEquals(a, b);
  const c = records({ n: 300, seed: 43 });
  const same = a.filter((r, i) => r.problem.question === c[i].problem.question).length;
  assert(same < 5, `${same} of 300 questions equal across seeds`);
  assertEquals(a[0].problem.id, "synthetic:42:1");
  assertEquals(a[0].problem.source, { file: "synthetic", line: 1 });
  assertEquals(new Set(a.map((r) => r.problem.id)).size, 300);
  // Record n depends only on (seed, n): a run can start anywhere.
  assertEquals(records({ n: 50, seed: 42, start: 101 }), a.slice(100, 150));
  // Questions are varied: few repeats in a run.
  assert(new Set(a.map((r) => r.problem.question)).size >= 295);
});

Deno.test("synthetic: held-out split by family: only the listed families, disjoint questions", () => {
  const train: Family[] = ["shopping", "sharing", "earnings", "schedule"];
  const test = otherFamilies(train);
  assertEquals(test, ["travel", "ages", "cooking"]);
  const a = records({ n: 1500, seed: 1, families: train });
  const b = records({ n: 1500, seed: 1, families: test });
  for (const r of a) assert(train.includes(r.family), r.family);
  for (const r of b) assert(test.includes(r.family), r.family);
  assertEquals(new Set(b.map((r) => r.family)).size, 3);
  const qa = new Set(a.map((r) => r.problem.question));
  assert(b.every((r) => !qa.has(r.problem.question)));
});

Deno.test("synthetic: held-out split by step count: every record above the training maximum", () => {
  const a = records({ n: 1500, seed: 2, minSteps: 1, maxSteps: 4 });
  const b = records({ n: 1500, seed: 2, minSteps: 5, maxSteps: 8 });
  const stepsOf = (r: SyntheticRecord) => segment(r.problem).math.length;
  assert(a.every((r) => stepsOf(r) >= 1 && stepsOf(r) <= 4));
  assert(b.every((r) => stepsOf(r) >= 5 && stepsOf(r) <= 8));
  assertEquals(new Set(b.map(stepsOf)), new Set([5, 6, 7, 8]));
  const qa = new Set(a.map((r) => r.problem.question));
  assert(b.every((r) => !qa.has(r.problem.question)));
});

Deno.test("synthetic: digits and maxValue control the size of the numbers", () => {
  const mean = (opts: SyntheticOptions) => {
    const rs = records(opts);
    return rs.reduce((s, r) => s + Number(r.problem.answer), 0) / rs.length;
  };
  const small = mean({ n: 1000, seed: 3, digits: 1, maxValue: 100 });
  const normal = mean({ n: 1000, seed: 3 });
  const big = mean({ n: 1000, seed: 3, digits: 4, maxValue: 1_000_000 });
  assert(small < normal && normal * 5 < big, `${small} ${normal} ${big}`);
  for (const r of generateRecords({ n: 500, seed: 3, digits: 1, maxValue: 100 })) {
    // One-digit operands, except the few fixed constants of the templates (track lengths...).
    const big = segment(r.problem).math.flatMap((m) => operands(m.expr)).filter((o) =>
      Number(o) > 100
    );
    assertEquals(big, [], r.problem.id);
  }
});

Deno.test("synthetic: options are checked and name the field", () => {
  const bad: [SyntheticOptions, string][] = [
    [{ n: 1, minSteps: 5, maxSteps: 3 }, "minSteps"],
    [{ n: 1, maxSteps: 0 }, "maxSteps"],
    [{ n: 1, maxSteps: 21 }, "maxSteps"],
    [{ n: 1, maxValue: 50 }, "maxValue"],
    [{ n: 1, digits: 0 }, "digits"],
    [{ n: 1, families: [] }, "families"],
    [{ n: 1, families: ["pirates" as Family] }, "families.0"],
    [{ n: -1 }, "n"],
  ];
  for (const [opts, field] of bad) {
    const e = assertThrows(() => resolveSyntheticOptions(opts), SyntheticOptionsError);
    assertEquals((e as SyntheticOptionsError).field, field);
    assert((e as Error).message.startsWith(`synthetic option ${field}: `), (e as Error).message);
  }
  assertEquals(resolveSyntheticOptions({ n: 2 }).families, [...FAMILIES]);
  assertEquals([...generate({ n: 0 })], []);
});

Deno.test("rng: seeded, uniform enough, streams independent", () => {
  const a = new Rng(1, 7);
  const b = new Rng(1, 7);
  const xs = Array.from({ length: 1000 }, () => a.next());
  assertEquals(xs, Array.from({ length: 1000 }, () => b.next()));
  const c = new Rng(1, 8);
  assert(xs.slice(0, 10).some((x) => x !== c.next()));
  const counts = [0, 0, 0, 0, 0, 0];
  const r = new Rng(9);
  for (let i = 0; i < 60_000; i++) counts[r.int(1, 6) - 1]++;
  for (const k of counts) assert(Math.abs(k - 10_000) < 500, String(counts));
  assertEquals(new Rng(3).sample([1, 2, 3, 4], 4).sort(), [1, 2, 3, 4]);
});
