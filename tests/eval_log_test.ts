/**
 * The run's log never blocks evaluating a checkpoint: `deno task eval` reads log.jsonl (or
 * log.csv) for the training curves, and a log that cannot be read, holds a line of another
 * kind, or records a run that diverged after the checkpoint was written gives a one-line
 * note and the curves it can draw, never an error.
 */
import { assert, assertEquals } from "./_assert.ts";
import { tempDir } from "./_tmp.ts";
import { FIXTURE_QUESTIONS, tinyCheckpoint } from "./_export_fixture.ts";
import { evalCommand, parseEvalArgs } from "../cli/eval.ts";
import { readTrainLog } from "../train/run_log.ts";
import { exists } from "../base/exists.ts";

/** A train record of step `step` with total loss `loss` (null: not finite, as JSON writes it). */
function trainRec(step: number, loss: number | null) {
  return {
    kind: "train",
    step,
    epoch: 0,
    stage: 2,
    K: 2,
    R: 2,
    lr: 1e-3,
    loss,
    ansLoss: loss,
    stepLoss: loss,
    auxLoss: 0,
    gradNorm: loss === null ? null : 1.5,
    tokensPerSec: 1000,
    seconds: step / 10,
  };
}
const evalRec = (step: number, acc: number | null) => ({
  kind: "eval",
  step,
  epoch: 0,
  stage: 2,
  K: 2,
  R: 2,
  valLoss: acc === null ? null : 1,
  valAccuracy: acc,
  valExamples: 4,
  seconds: step / 10,
});
const jsonl = (recs: unknown[]) => recs.map((r) => JSON.stringify(r) + "\n").join("");

let shared: Promise<{ run: string; data: string }> | null = null;
/** A run directory holding a tiny checkpoint, and a file of questions. */
function setup() {
  shared ??= (async () => {
    const d = await tempDir();
    await tinyCheckpoint(`${d}/run/checkpoint`, { k: 2, c: 3 });
    const data = `${d}/questions.jsonl`;
    await Deno.writeTextFile(
      data,
      FIXTURE_QUESTIONS.map((q) => JSON.stringify({ question: q, answer: "#### 24" })).join("\n"),
    );
    return { run: `${d}/run`, data };
  })();
  return shared;
}

/** Evaluate the checkpoint with `files` as its run's log; the lines it logged, its outputs. */
async function evalWithLog(files: Record<string, string>) {
  const { run, data } = await setup();
  for (const f of ["log.jsonl", "log.csv"]) await Deno.remove(`${run}/${f}`).catch(() => {});
  for (const [name, text] of Object.entries(files)) {
    await Deno.writeTextFile(`${run}/${name}`, text);
  }
  const out = await tempDir();
  const a = parseEvalArgs([
    "--checkpoint",
    `${run}/checkpoint`,
    "--data",
    data,
    "--out",
    out,
    "--max-new-tokens",
    "8",
    "--threads",
    "1",
  ]);
  assert(a !== "help");
  const lines: string[] = [];
  await evalCommand(a, (s) => lines.push(s));
  assert(await exists(`${out}/summary.json`), "the evaluation was written");
  return {
    lines,
    notes: lines.filter((l) => l.includes("log.")),
    lossCurve: await exists(`${out}/training_loss.svg`),
    accuracyCurve: await exists(`${out}/training_accuracy.svg`),
  };
}

Deno.test("eval goes on without the curves when the run's log cannot be read", async () => {
  const good = jsonl([trainRec(1, 3), trainRec(2, 2)]);
  for (
    const [what, files, parts] of [
      ["a damaged line", { "log.jsonl": good + "{not json\n" + jsonl([trainRec(3, 1)]) }, [
        "log.jsonl:3",
        "invalid JSON",
        "mend it from its record in log.csv",
        "or delete it",
      ]],
      ["a record of another kind", {
        "log.jsonl": good + jsonl([{ ...trainRec(3, 1), kind: "note" }]),
      }, ["log.jsonl:3", `field "kind"`]],
      ["a record without a step", {
        "log.jsonl": good + jsonl([{ ...trainRec(3, 1), step: null }]),
      }, ["log.jsonl:3", `field "step"`]],
      ["a CSV with a bad column", { "log.csv": "kind,step,epoch\ntrain,x,0\n" }, ["log.csv:2"]],
    ] as const
  ) {
    const r = await evalWithLog(files);
    assertEquals(r.notes.length, 1, `${what}: ${r.lines.join("\n")}`);
    for (const p of [...parts, "without the training curves"]) {
      assert(r.notes[0].includes(p), `${what}: "${r.notes[0]}" lacks ${JSON.stringify(p)}`);
    }
    assert(!r.notes[0].includes("not written by deno task train"), r.notes[0]);
    assert(!r.lossCurve && !r.accuracyCurve, what);
  }
});

Deno.test("eval of a run that diverged late: the curves up to the divergence, why", async () => {
  // Finite up to step 6, then non-finite losses (written as null), as --on-non-finite skip
  // logs them; the checkpoint holds the last good step.
  const recs = [
    ...[1, 2, 3, 4, 5, 6].map((s) => trainRec(s, 4 - s / 2)),
    evalRec(5, 0.25),
    ...[7, 8, 9, 10].map((s) => trainRec(s, null)),
    evalRec(10, null),
  ];
  const r = await evalWithLog({ "log.jsonl": jsonl(recs) });
  assertEquals(r.notes.length, 1, r.lines.join("\n"));
  for (const p of ["log.jsonl", "4 of 10 training records", "from step 7", "left out"]) {
    assert(r.notes[0].includes(p), `"${r.notes[0]}" lacks ${JSON.stringify(p)}`);
  }
  assert(r.lossCurve && r.accuracyCurve);

  // Diverged from the first step: there is no loss curve to draw, and the note says so.
  const all = await evalWithLog({ "log.jsonl": jsonl([1, 2, 3].map((s) => trainRec(s, null))) });
  assertEquals(all.notes.length, 1, all.lines.join("\n"));
  assert(all.notes[0].includes("no training record has a finite loss"), all.notes[0]);
  assert(!all.lossCurve);

  // A sound log: curves and no note.
  const ok = await evalWithLog({ "log.jsonl": jsonl([trainRec(1, 3), trainRec(2, 2)]) });
  assertEquals(ok.notes, []);
  assert(ok.lossCurve);
});

Deno.test("log.csv: an infinite gradient norm, as the trainer writes it, reads back", async () => {
  const d = await tempDir();
  const cols = ["kind", "step", "epoch", "stage", "K", "R", "loss", "gradNorm", "seconds"];
  await Deno.writeTextFile(
    `${d}/log.csv`,
    [cols.join(","), "train,1,0,0,0,0,3.5,Infinity,1", "train,2,0,0,0,0,NaN,-Infinity,2"]
      .join("\n") + "\n",
  );
  const log = await readTrainLog(d);
  assertEquals(log.map((r) => r.gradNorm), [Infinity, -Infinity]);
  assert(Number.isNaN(log[1].loss));
  const r = await evalWithLog({ "log.csv": await Deno.readTextFile(`${d}/log.csv`) });
  assertEquals(r.notes.length, 1, r.lines.join("\n"));
  assert(r.notes[0].includes("1 of 2 training records"), r.notes[0]);
  assert(r.lossCurve);
});
