/**
 * The analysis half of augmentation: turn a problem into a computation graph whose leaves are
 * question numbers, earlier results or constants, and find every place in the question, the
 * annotations, the prose and the answer that writes one of them. Drawing and rewriting
 * (pipeline/augment.ts) then only fill in new values.
 *
 * **Operands.** Each number in an annotation's expression is matched by value against the
 * earlier steps' results, the question's changeable numbers (as written, or for a percentage
 * also as its hundredth: `25%` is 25 or 0.25), and the constants the text explains
 * (pipeline/augment/_numbers.ts). Failing those, a percentage's complement (`100-25`,
 * `1-0.25`) is tried. A value that matches more than one of these is ambiguous: which one the
 * writer meant cannot be known, so the plan records that they must stay equal, and a draw
 * that separates them is refused. A question number tied to a constant therefore never
 * changes; a result tied to a question number must come out equal to its new value.
 *
 * **Prose.** The numbers just before an annotation that repeat its operands in order
 * (`48/2 = <<48/2=24>>`) and the number just after it that repeats its result are matched by
 * position. Every other prose number is matched by value: first against the annotations next
 * to it on its line, then against all results, then against the question's numbers; one that
 * matches none and is no constant is unexplained, and one that matches two values that may
 * come apart is ambiguous.
 *
 * A problem that cannot be analysed safely gets a reason code instead of a plan
 * ({@linkcode AUGMENT_REASONS}).
 *
 * @module
 */
import { type EvalFunction, type MathNode, parse } from "mathjs";
import { readNumber, sameNumber } from "../numbers.ts";
import type { Problem } from "../types.ts";
import {
  contextConstants,
  findNumbers,
  type FoundNumber,
  type NumberStyle,
  numberWords,
  styleOf,
} from "./_numbers.ts";

/** Why a problem cannot be augmented: every reason code and its meaning. */
export const AUGMENT_REASONS = {
  near_copy_of_excluded: "the question is a near copy of an excluded (evaluation) question",
  no_annotation: "the problem has no calculator annotations: no chain to recompute",
  original_not_ok: "the original does not validate ok in both CoT forms",
  unmapped_operand:
    "an operand is not a question number, an earlier result or a constant the text explains",
  no_question_number: "the chain uses no question number that may change",
  unannotated_computation: "the prose computes something outside an annotation",
  unexplained_prose_number: "a number in the prose is none of the chain's values",
  ambiguous_prose_number: "a number in the prose could stand for two values that may differ",
  no_valid_draw: "no draw of new numbers kept every result whole, positive and in range",
  rejected_by_validator: "every variant failed validation",
} as const;

/** A reason code of {@linkcode AUGMENT_REASONS}. */
export type AugmentReason = keyof typeof AUGMENT_REASONS;

/** How a question number appears in the chain: as written, its hundredth, or a complement. */
export type VarForm = "raw" | "scaled" | "complement" | "complement100";

/** What a number in the chain stands for. */
export type Entity =
  | { kind: "var"; id: number; form: VarForm }
  | { kind: "result"; step: number }
  | { kind: "const"; value: number };

/** A question number that augmentation may change (all occurrences of one value). */
export interface Var {
  /** The original value. */
  value: number;
  /** Written as a percentage somewhere in the question. */
  percent: boolean;
  /** Whether the chain uses it (only used variables change). */
  used: boolean;
  /** Tied to a constant by an ambiguous operand: never changes. */
  frozen: boolean;
}

/** Where a text is: the question, the rationale, the answer, or math step i. */
export type Host = "question" | "rationale" | "answer" | number;

/** A place in a text that writes a value of the chain, to be rewritten. */
export interface Slot {
  /** The text it is in. */
  host: Host;
  /** Start of the digits. */
  start: number;
  /** End of the digits. */
  end: number;
  /** What it stands for. */
  entity: Entity;
  /** How it is written. */
  style: NumberStyle;
  /** Written as a percentage of the value (`75%` for 0.75): the value times 100. */
  percentOf?: boolean;
}

/** One calculator step of the chain. */
export interface StepPlan {
  /** The expression as written. */
  expr: string;
  /** The stated value, read. */
  value: number;
  /** Digits after the point in the stated value. */
  decimals: number;
  /** The expression with its leaves as symbols `v<i>` (variables) and `r<j>` (results). */
  template: string;
  /** The compiled template. */
  run: EvalFunction;
}

/** The analysis of a problem that can be augmented. */
export interface Plan {
  /** The question numbers that may change. */
  vars: Var[];
  /** The chain, in order. */
  steps: StepPlan[];
  /** Every place to rewrite: question numbers, operands, stated values, prose, answer. */
  slots: Slot[];
  /** Groups of entities that must keep equal values (from ambiguous operands). */
  ties: Entity[][];
}

/** A problem that cannot be augmented, and why. */
export interface Unusable {
  /** The reason code. */
  reason: AugmentReason;
  /** Which step or number, for people. */
  detail: string;
}

/** The value an entity has, given variable and result values. */
export function valueOf(e: Entity, vars: readonly number[], results: readonly number[]): number {
  if (e.kind === "result") return results[e.step];
  if (e.kind === "const") return e.value;
  const v = vars[e.id];
  switch (e.form) {
    case "raw":
      return v;
    case "scaled":
      return v / 100;
    case "complement":
      return 1 - v / 100;
    case "complement100":
      return 100 - v;
  }
}

const SYMBOL: Record<VarForm, (id: number) => string> = {
  raw: (id) => `v${id}`,
  scaled: (id) => `(v${id}/100)`,
  complement: (id) => `(1-v${id}/100)`,
  complement100: (id) => `(100-v${id})`,
};

const ALLOWED_OPS = new Set(["add", "subtract", "multiply", "divide", "pow", "mod", "unaryMinus"]);
const LEAF = /\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d*\.\d+|\d+/g;
const DIGITS = /\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d*\.\d+|\d+/;
const ANNOTATION = /<<([^<>]*)>>/g;
// A computation written in prose with no annotation after its `=` (`5 + 3 = 8`). The `=`
// before an annotation (`48/2 = <<48/2=24>>24`) is fine: annotations are masked as `@`.
const PROSE_COMPUTATION =
  /\d[\d,.]*\s*%?\s*\)?\s*(?:[-+*/×÷x]\s*\(?\s*\$?\d[\d,.]*\s*%?\s*\)?\s*)+=\s*\$?\s*\d/;

function checkTree(node: MathNode): boolean {
  switch (node.type) {
    case "ConstantNode":
    case "SymbolNode":
      return true;
    case "ParenthesisNode":
      return checkTree((node as unknown as { content: MathNode }).content);
    case "OperatorNode": {
      const op = node as unknown as { fn: string; args: MathNode[] };
      return ALLOWED_OPS.has(op.fn) && op.args.every(checkTree);
    }
    default:
      return false;
  }
}

/** A short key that identifies an entity. */
export function entityKey(e: Entity): string {
  if (e.kind === "var") return `v${e.id}:${e.form}`;
  return e.kind === "result" ? `r${e.step}` : `c${e.value}`;
}

interface Annotation {
  host: Host;
  start: number;
  end: number;
  expr: string;
  exprStart: number;
  valueText: string;
  valueStart: number;
  line: number;
  /** The operands' entities, in order, and the result's. */
  leaves: Entity[];
  leafValues: number[];
}

function annotationsOf(text: string, host: Host): Annotation[] {
  const out: Annotation[] = [];
  for (const m of text.matchAll(ANNOTATION)) {
    const inner = m[1];
    const eq = inner.lastIndexOf("=");
    if (eq === -1) continue;
    const innerStart = m.index! + 2;
    out.push({
      host,
      start: m.index!,
      end: m.index! + m[0].length,
      expr: inner.slice(0, eq),
      exprStart: innerStart,
      valueText: inner.slice(eq + 1),
      valueStart: innerStart + eq + 1,
      line: text.slice(0, m.index!).split("\n").length,
      leaves: [],
      leafValues: [],
    });
  }
  return out;
}

/** Union-find over entity keys, for ties. */
class Ties {
  #parent = new Map<string, string>();
  find(k: string): string {
    const p = this.#parent.get(k);
    if (p === undefined || p === k) return k;
    const r = this.find(p);
    this.#parent.set(k, r);
    return r;
  }
  union(a: string, b: string): void {
    this.#parent.set(this.find(a), this.find(b));
  }
}

/**
 * Analyses a problem for augmentation: a {@linkcode Plan}, or the reason it cannot be
 * augmented (rules in the module doc). The caller checks that the original validates ok.
 */
export function planOf(p: Problem): Plan | Unusable {
  const anns: Annotation[] = [];
  if (p.mathSteps !== null) p.mathSteps.forEach((s, i) => anns.push(...annotationsOf(s, i)));
  else if (p.rationale !== null) anns.push(...annotationsOf(p.rationale, "rationale"));
  if (anns.length === 0) return { reason: "no_annotation", detail: "no <<expr=value>>" };

  // Question numbers: the changeable ones grouped by value into variables; the rest constants.
  const qnums = findNumbers(p.question);
  const vars: Var[] = [];
  const varOf = new Map<number, number>();
  const constants: number[] = [0];
  const questionFractions = new Set<string>();
  for (const q of qnums) {
    if (q.den !== null) {
      constants.push(q.value, q.den, q.value / q.den, 1 - q.value / q.den);
      questionFractions.add(`${q.value}/${q.den}`);
    } else if (q.fixed) {
      constants.push(q.value);
    } else {
      let id = varOf.get(q.value);
      if (id === undefined) {
        id = vars.length;
        varOf.set(q.value, id);
        vars.push({ value: q.value, percent: false, used: false, frozen: false });
      }
      if (q.percent) vars[id].percent = true;
    }
  }
  const prose = p.rationale ?? "";
  constants.push(...numberWords(p.question), ...numberWords(prose));
  constants.push(...contextConstants(`${p.question}\n${prose}`));
  const isConstant = (x: number) => constants.some((c) => sameNumber(c, x));

  const direct = (x: number, percentSign: boolean): Entity[] => {
    const out: Entity[] = [];
    vars.forEach((v, id) => {
      if (sameNumber(v.value, x)) out.push({ kind: "var", id, form: "raw" });
      else if (v.percent && !percentSign && sameNumber(v.value / 100, x)) {
        out.push({ kind: "var", id, form: "scaled" });
      }
    });
    return out;
  };
  const complements = (x: number): Entity[] => {
    const out: Entity[] = [];
    vars.forEach((v, id) => {
      if (!v.percent || v.value >= 100) return;
      if (sameNumber(100 - v.value, x)) out.push({ kind: "var", id, form: "complement100" });
      else if (sameNumber(1 - v.value / 100, x)) out.push({ kind: "var", id, form: "complement" });
    });
    return out;
  };

  const ties: Entity[][] = [];
  const tieSets = new Ties();
  const tie = (members: Entity[]) => {
    ties.push(members);
    for (const m of members.slice(1)) tieSets.union(entityKey(members[0]), entityKey(m));
    if (members.some((m) => m.kind === "const")) {
      for (const m of members) if (m.kind === "var") vars[m.id].frozen = true;
    }
  };

  const steps: StepPlan[] = [];
  const slots: Slot[] = [];
  const results: number[] = [];
  for (const [i, a] of anns.entries()) {
    const at = `step ${i + 1} <<${a.expr}=${a.valueText}>>`;
    const stated = readNumber(a.valueText);
    const vd = DIGITS.exec(a.valueText);
    if (stated === null || vd === null || stated.percent) {
      return { reason: "original_not_ok", detail: `${at}: stated value is not a plain number` };
    }
    let template = "";
    let last = 0;
    for (const m of a.expr.matchAll(LEAF)) {
      const x = Number(m[0].replaceAll(",", ""));
      const rest = a.expr.slice(m.index! + m[0].length);
      const percentSign = /^\s*%(?!\s*[\d.(])/.test(rest);
      const fromResults: Entity[] = [];
      results.forEach((r, j) => {
        if (sameNumber(r, x)) fromResults.push({ kind: "result", step: j });
      });
      let members = [...fromResults, ...direct(x, percentSign)];
      if (isConstant(x)) members.push({ kind: "const", value: x });
      if (members.length === 0) members = complements(x);
      if (members.length === 0) {
        return { reason: "unmapped_operand", detail: `${at}: where does ${m[0]} come from?` };
      }
      if (members.length > 1) tie(members);
      // The latest result if any (the usual reading), else the question number, else the
      // constant; the tie makes the others agree with it.
      const entity = fromResults.at(-1) ?? members.find((e) => e.kind === "var") ?? members[0];
      if (entity.kind === "var") vars[entity.id].used = true;
      a.leaves.push(entity);
      a.leafValues.push(x);
      template += a.expr.slice(last, m.index!);
      if (entity.kind === "const") {
        template += String(x);
      } else {
        template += entity.kind === "var" ? SYMBOL[entity.form](entity.id) : `r${entity.step}`;
        slots.push({
          host: a.host,
          start: a.exprStart + m.index!,
          end: a.exprStart + m.index! + m[0].length,
          entity,
          style: styleOf(m[0]),
        });
      }
      last = m.index! + m[0].length;
    }
    template += a.expr.slice(last);
    // The normalization of pipeline/arith.ts, on symbols instead of numbers.
    template = template
      .replace(/×/g, "*")
      .replace(/÷/g, "/")
      .replace(/[\u2212\u2013]/g, "-")
      .replace(/[$€£]/g, "")
      .replace(/\/\//g, "/")
      .replace(/\*\*/g, "^")
      .replace(/%(?=\s*[\d.(vr])/g, " mod ")
      .replace(/([\w.]+)\s*%/g, "($1/100)")
      .replace(/\)\s*%/g, ")/100");
    let run: EvalFunction;
    try {
      const node = parse(template);
      if (!checkTree(node)) throw new Error("operator not allowed");
      run = node.compile();
    } catch (e) {
      return { reason: "original_not_ok", detail: `${at}: ${(e as Error).message}` };
    }
    steps.push({
      expr: a.expr,
      value: stated.value,
      decimals: stated.decimals ?? 0,
      template,
      run,
    });
    slots.push({
      host: a.host,
      start: a.valueStart + vd.index,
      end: a.valueStart + vd.index + vd[0].length,
      entity: { kind: "result", step: i },
      style: styleOf(vd[0]),
    });
    results.push(stated.value);
  }
  if (!vars.some((v) => v.used && !v.frozen)) {
    return {
      reason: "no_question_number",
      detail: "every operand is a result, a constant, or a question number tied to a constant",
    };
  }

  for (const q of qnums) {
    const id = q.den === null && !q.fixed ? varOf.get(q.value) : undefined;
    if (id === undefined || !vars[id].used || vars[id].frozen) continue;
    const entity: Entity = { kind: "var", id, form: "raw" };
    slots.push({ host: "question", start: q.start, end: q.end, entity, style: q.style });
  }

  if (p.rationale !== null) {
    const r = proseSlots(p.rationale, p.mathSteps === null ? anns : [], {
      questionFractions,
      isConstant,
      results,
      direct,
      sameTie: (es) =>
        es.every((e) => tieSets.find(entityKey(e)) === tieSets.find(entityKey(es[0]))),
      vars,
    });
    if ("reason" in r) return r;
    slots.push(...r);
  }

  // The answer is the last step's value (the original validated ok, so they agree).
  const ad = DIGITS.exec(p.answer);
  if (ad !== null) {
    slots.push({
      host: "answer",
      start: ad.index,
      end: ad.index + ad[0].length,
      entity: { kind: "result", step: steps.length - 1 },
      style: styleOf(ad[0]),
    });
  }
  return { vars, steps, slots, ties };
}

interface ProseContext {
  questionFractions: Set<string>;
  isConstant: (x: number) => boolean;
  results: number[];
  direct: (x: number, percentSign: boolean) => Entity[];
  sameTie: (es: Entity[]) => boolean;
  vars: Var[];
}

/** The numbers of a prose text, with `a/b` split in two unless the question has that fraction. */
function proseNumbers(text: string, from: number, to: number, fractions: Set<string>) {
  const out: FoundNumber[] = [];
  for (const n of findNumbers(text.slice(from, to), { years: false })) {
    const s = { ...n, start: n.start + from, end: n.end + from, denStart: n.denStart + from };
    if (n.den === null || fractions.has(`${n.value}/${n.den}`)) {
      out.push(s);
      continue;
    }
    const d = String(n.den);
    out.push({ ...s, den: null, percent: false, fixed: n.value === 0 || n.value === 1 });
    out.push({
      ...s,
      start: s.denStart,
      end: s.denStart + d.length,
      text: d,
      value: n.den,
      style: styleOf(d),
      dollar: false,
      den: null,
      fixed: n.den === 0 || n.den === 1,
    });
  }
  return out;
}

function proseSlots(text: string, anns: Annotation[], c: ProseContext): Slot[] | Unusable {
  const masked = text.replace(ANNOTATION, "@");
  const computation = PROSE_COMPUTATION.exec(masked);
  if (computation !== null) {
    return { reason: "unannotated_computation", detail: JSON.stringify(computation[0]) };
  }
  const lineOf = (pos: number) => text.slice(0, pos).split("\n").length;
  const numbers: FoundNumber[] = [];
  const gapOf: number[] = []; // for each number, the index of the annotation after its gap
  let from = 0;
  anns.forEach((a, i) => {
    for (const n of proseNumbers(text, from, a.start, c.questionFractions)) {
      numbers.push(n);
      gapOf.push(i);
    }
    from = a.end;
  });
  for (const n of proseNumbers(text, from, text.length, c.questionFractions)) {
    numbers.push(n);
    gapOf.push(anns.length);
  }

  const assigned = new Map<number, Entity>();
  // By position: the numbers right before an annotation that restate its operands in order,
  // and the first number after it on its line when it restates the result.
  anns.forEach((a, i) => {
    const gap = numbers.map((n, k) => ({ n, k })).filter(({ n, k }) =>
      gapOf[k] === i && lineOf(n.start) === a.line
    );
    const tail = gap.slice(-a.leafValues.length);
    if (
      a.leafValues.length > 0 && tail.length === a.leafValues.length &&
      tail.every(({ n }, j) => sameNumber(n.value, a.leafValues[j]))
    ) {
      tail.forEach(({ k }, j) => assigned.set(k, a.leaves[j]));
    }
    const nextIdx = numbers.findIndex((n, k) => gapOf[k] === i + 1 && n.start >= a.end);
    if (nextIdx !== -1 && lineOf(numbers[nextIdx].start) === a.line) {
      if (sameNumber(numbers[nextIdx].value, c.results[i])) {
        assigned.set(nextIdx, { kind: "result", step: i });
      }
    }
  });

  const slots: Slot[] = [];
  for (const [k, n] of numbers.entries()) {
    if (n.den !== null || n.fixed) continue;
    let entity = assigned.get(k);
    let percentOf = false;
    const at = `prose ${JSON.stringify(text.slice(n.start, n.end))} in line ${lineOf(n.start)}`;
    if (entity === undefined) {
      const line = lineOf(n.start);
      const near: Entity[] = [];
      const before = anns.map((a, i) => ({ a, i })).filter(({ a }) =>
        a.line === line && a.end <= n.start
      ).at(-1);
      const after = anns.map((a, i) => ({ a, i })).find(({ a }) =>
        a.line === line && a.start >= n.end
      );
      for (const x of [before, after]) {
        if (x === undefined) continue;
        near.push(...x.a.leaves, { kind: "result", step: x.i });
      }
      const direct = (e: Entity) =>
        sameNumber(valueOf(e, c.vars.map((v) => v.value), c.results), n.value);
      const hundredth = (e: Entity) =>
        n.percent && sameNumber(valueOf(e, c.vars.map((v) => v.value), c.results), n.value / 100);
      const valueMatch = (e: Entity) => direct(e) || hundredth(e);
      const unique = (es: Entity[]) => {
        const seen = new Set<string>();
        return es.filter((e) => !seen.has(entityKey(e)) && seen.add(entityKey(e)) !== undefined);
      };
      const allResults = c.results.map((_, step): Entity => ({ kind: "result", step }));
      const tiers = [
        unique(near.filter(valueMatch)),
        unique(allResults.filter(valueMatch)),
        c.direct(n.value, n.percent),
      ];
      const hit = tiers.find((t) => t.length > 0);
      if (hit === undefined) {
        if (c.isConstant(n.value)) continue;
        return { reason: "unexplained_prose_number", detail: at };
      }
      const moving = hit.filter((e) => e.kind !== "const");
      if (moving.length === 0) continue;
      if (moving.length < hit.length || (moving.length > 1 && !c.sameTie(moving))) {
        // A constant and a changing value, or two values that may come apart.
        if (!c.sameTie(hit)) return { reason: "ambiguous_prose_number", detail: at };
      }
      entity = moving[0];
      percentOf = !direct(entity);
    }
    if (entity.kind === "const") continue;
    if (entity.kind === "var" && (!c.vars[entity.id].used || c.vars[entity.id].frozen)) continue;
    slots.push({
      host: "rationale",
      start: n.start,
      end: n.end,
      entity,
      style: n.style,
      percentOf,
    });
  }
  return slots;
}
