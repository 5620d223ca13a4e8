import { problem } from "./_problem.ts";
import { assert, assertEquals } from "./_assert.ts";
import { isSocratic, mathStep, segment, stripSocratic } from "../pipeline/segment.ts";
import { scanAnnotations } from "../pipeline/annotations.ts";
import { splitSentences } from "../pipeline/sentences.ts";
import { answerNumber, numbersInText, readNumber } from "../pipeline/numbers.ts";
import { readProblems } from "../pipeline/read.ts";

Deno.test("segment: one math step per annotation of the rationale, split at the last =", () => {
  const r = segment(problem({
    rationale: "A third is 54/3 = <<54/3=18>>18 cups.\nTogether 54+18 = <<54+18=72>>72.",
    answer: "72",
  }));
  assertEquals(r.math, [
    { expr: "54/3", value: "18", text: "<<54/3=18>>" },
    { expr: "54+18", value: "72", text: "<<54+18=72>>" },
  ]);
  assertEquals(mathStep("45*1/6=7.5=8"), {
    expr: "45*1/6=7.5",
    value: "8",
    text: "<<45*1/6=7.5=8>>",
  });
  assertEquals(mathStep("12*3"), { expr: "12*3", value: "", text: "<<12*3>>" });
  assertEquals(r.unbalancedAnnotations, 0);
});

Deno.test("segment: math steps given by the format win over the rationale", () => {
  const r = segment(problem({ mathSteps: ["<<4*25=100>>", "<<100+10=110>>"], answer: "110" }));
  assertEquals(r.math.map((s) => s.text), ["<<4*25=100>>", "<<100+10=110>>"]);
  assertEquals(r.nl, ["4*25 = 100", "100+10 = 110"]);
  assertEquals(r.nlDerived, true);
});

Deno.test("segment: unbalanced << and >> are counted, good annotations still taken", () => {
  const r = segment(problem({
    rationale: "He pays 3*4 = <<3*4=12 dollars.\nThen 12+1 = <<12+1=13>>13 and 2>>.",
  }));
  assertEquals(r.math.map((s) => s.text), ["<<12+1=13>>"]);
  assertEquals(r.unbalancedAnnotations, 2);
  assertEquals(r.nl, ["He pays 3*4 = 3*4=12 dollars.", "Then 12+1 = 13 and 2."]);
  assertEquals(scanAnnotations("a >> b").unbalanced, 1);
  assertEquals(scanAnnotations("<<a<<b=1>>").inner, ["b=1"]);
  assertEquals(scanAnnotations("<<a<<b=1>>").unbalanced, 1);
});

Deno.test("segment: NL steps are lines without annotations, trimmed, blanks dropped", () => {
  const r = segment(problem({
    rationale:
      "Ivo makes 9/30 = $<<9/30=0.3>>0.3 a second.\n\n  In 40 seconds,   he makes $<<0.3*40=12>>12.  \n<<1+1=2>>",
  }));
  assertEquals(r.nl, [
    "Ivo makes 9/30 = $0.3 a second.",
    "In 40 seconds, he makes $12.",
  ]);
  assertEquals(r.nlDerived, false);
  assertEquals(r.math.length, 3);
});

Deno.test("segment: socratic prefixes are stripped or kept, detected per line", async () => {
  const [p] = await Array.fromAsync(readProblems("fixtures/pipeline/gsm8k_socratic.jsonl"));
  assertEquals(segment(p).nl, [
    "She reads 20 * 3 = 60 pages.",
    "In all she reads 60 + 10 = 70 pages.",
  ]);
  assertEquals(segment(p, { socratic: "keep" }).nl, [
    "How many pages in 3 days? ** She reads 20 * 3 = 60 pages.",
    "How many pages in all? ** In all she reads 60 + 10 = 70 pages.",
  ]);
  assertEquals(segment(p).math.length, 2);
  assertEquals(stripSocratic("Name the unknown ** Let x be the cost."), "Let x be the cost.");
  assertEquals(stripSocratic("So x = 2 ** 3 = 8"), "So x = 2 ** 3 = 8");
  assertEquals(stripSocratic("<<2*3=6>> ** odd"), "<<2*3=6>> ** odd");
});

Deno.test("segment: Python's ** in prose is a power, not a socratic prefix", () => {
  const r = segment(problem({
    question: "A square garden has sides of 5 feet. What is its area?",
    rationale: "The area is 5 ** 2 = <<5**2=25>>25 square feet.",
    answer: "25",
  }));
  assertEquals(r.nl, ["The area is 5 ** 2 = 25 square feet."]);
  const two = segment(problem({
    rationale: "The area is 5 ** 2 = <<5**2=25>>25.\nThe volume is x ** 3 = <<5**3=125>>125.",
    answer: "125",
  }));
  assertEquals(two.nl, ["The area is 5 ** 2 = 25.", "The volume is x ** 3 = 125."]);
  assertEquals(stripSocratic("He gets 2 ** 10 = 1024 bytes."), "He gets 2 ** 10 = 1024 bytes.");
  // A sub-question that asks is one wherever it stands.
  assertEquals(stripSocratic("What is 5 squared? ** 5 ** 2 = 25."), "5 ** 2 = 25.");
  assertEquals(isSocratic(["The area is 5 ** 2 = 25."]), false);
  // Socratic GSM8K also writes imperative sub-questions, some of them before a number: the
  // rationale as a whole decides.
  const socratic = segment(problem({
    rationale: "Define a variable ** Let x be the cost.\nSubtract 15 ** 11x = <<286=286>>286\n" +
      "Divide by 11 ** x = <<286/11=26>>26",
    answer: "26",
  }));
  assertEquals(socratic.nl, ["Let x be the cost.", "11x = 286", "x = 26"]);
  assertEquals(
    segment(problem({ rationale: socratic.rationale }), { socratic: "keep" }).nl[1],
    "Subtract 15 ** 11x = 286",
  );
});

Deno.test("segment: a one-paragraph rationale is split into sentences", () => {
  const r = segment(problem({
    rationale:
      "Mr. Lee buys 2 kites at $3.50 each, so he pays 2 * 3.50 = $7.00. Ms. Ray pays 1.5 times that: 1.5 * 7 = $10.5 The total is 7 + 10.5 = $17.5.",
  }));
  assertEquals(r.nl, [
    "Mr. Lee buys 2 kites at $3.50 each, so he pays 2 * 3.50 = $7.00.",
    "Ms. Ray pays 1.5 times that: 1.5 * 7 = $10.5",
    "The total is 7 + 10.5 = $17.5.",
  ]);
});

Deno.test("splitSentences: decimals, money, abbreviations, names and quotes", () => {
  assertEquals(splitSentences("It costs $1.50. Then 3.5 more."), [
    "It costs $1.50.",
    "Then 3.5 more.",
  ]);
  assertEquals(splitSentences("Dr. Ngo met St. Clair vs. Mrs. Ode."), [
    "Dr. Ngo met St. Clair vs. Mrs. Ode.",
  ]);
  assertEquals(splitSentences("He lives at No. 5 Elm Road. It is far!"), [
    "He lives at No. 5 Elm Road.",
    "It is far!",
  ]);
  // A name after a number is not a sentence start; a full stop before a digit is.
  assertEquals(splitSentences("She gives 4 Odile and 2 Sam. 6 are gone."), [
    "She gives 4 Odile and 2 Sam.",
    "6 are gone.",
  ]);
  assertEquals(splitSentences('He said "Go." Then he left.'), ['He said "Go."', "Then he left."]);
  assertEquals(splitSentences("It is 9:40 a.m. The ferry is late."), [
    "It is 9:40 a.m.",
    "The ferry is late.",
  ]);
  assertEquals(splitSentences("Zoë’s café sells 3 crêpes. Each costs €2."), [
    "Zoë’s café sells 3 crêpes.",
    "Each costs €2.",
  ]);
  assertEquals(splitSentences("   "), []);
});

Deno.test("splitSentences: an ordinal's suffix is not an abbreviation", () => {
  // "1st." is not "St.": the letters follow a digit.
  assertEquals(splitSentences("He won 1st. Then he won 2nd."), ["He won 1st.", "Then he won 2nd."]);
  assertEquals(splitSentences("Ann came 21st. Bob came 3rd."), ["Ann came 21st.", "Bob came 3rd."]);
  assertEquals(splitSentences("They met on 1st St. Clair Road."), [
    "They met on 1st St. Clair Road.",
  ]);
});

Deno.test("segment: records without CoT, and NL derived from math", () => {
  const empty = segment(problem({ mathSteps: [], answer: "13" }));
  assertEquals([empty.math, empty.nl, empty.nlDerived], [[], [], false]);
  const prose = segment(problem({ rationale: "", answer: "1" }));
  assertEquals([prose.math, prose.nl], [[], []]);
  const derived = segment(problem({ mathSteps: ["<<54/3=18>>"], answer: "18" }));
  assertEquals(derived.nl, ["54/3 = 18"]);
});

Deno.test("segment: answerValue from commas, money, signs, decimals, fractions, percent", () => {
  const cases: [string, number | null][] = [
    ["1,080", 1080],
    ["$5.50", 5.5],
    ["-3", -3],
    ["-$3", -3],
    ["\u22127", -7],
    [" 7 ", 7],
    ["3.5", 3.5],
    [".5", 0.5],
    ["15.", 15],
    ["3/4", 0.75],
    ["-1/2", -0.5],
    ["1 1/2", 1.5],
    ["25%", 25],
    ["$1,234,567.5", 1234567.5],
    ["1,5", null],
    ["five", null],
    ["3:15", null],
    ["~7.2", null],
    ["", null],
    ["3/0", null],
    // Thousands groups may be spaced; two numbers side by side are not one.
    ["1 234", 1234],
    ["1\u00a0234", 1234],
    ["12 345 678", 12345678],
    ["+5", 5],
    ["$-4", -4],
    ["5 €", 5],
    ["5 6", null],
    ["1 2345", null],
    ["12 34", null],
    ["-+5", null],
    ["5$6", null],
  ];
  for (const [text, value] of cases) {
    assertEquals(segment(problem({ answer: text })).answerValue, value, text);
    assertEquals(answerNumber(text), value, text);
  }
  assertEquals(readNumber("3.50"), { value: 3.5, decimals: 2, percent: false });
  assertEquals(readNumber("3/4"), { value: 0.75, decimals: null, percent: false });
  assertEquals(readNumber("20%"), { value: 20, decimals: 0, percent: true });
});

Deno.test("numbersInText: magnitudes, commas, percent and fractions", () => {
  const ns = numbersInText("She pays $1,200 plus 20% and 3/4 of -5.5, i.e. .5 more");
  for (const n of [1200, 20, 0.2, 3, 4, 0.75, 5.5, 0.5]) assert(ns.includes(n), `${n} in ${ns}`);
});
