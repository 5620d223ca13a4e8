// The GPU benchmark's own logic (bench/gpu_bench.ts), on the CPU: its arithmetic against the
// reference's published figures, target judging, the table, and a whole dry run end to end
// at a small shape, whose results must say that nothing was judged.
import { assert, assertEquals } from "./_assert.ts";
import { tempDir } from "./_tmp.ts";
import { runDeno } from "./_run.ts";
import {
  type BenchRow,
  formatBenchTable,
  judge,
  lotusPositions,
  median,
  mfu,
  randomExample,
  specialsOf,
} from "../check/measure.ts";
import { Rng } from "../base/rng.ts";
import { suffixOf } from "../train/batch.ts";

Deno.test("gpu bench: positions and MFU reproduce the reference's 13% of the bf16 peak", () => {
  // 60-token question, K = R = 6, c = 13, EOT + 8 answer tokens.
  assertEquals(lotusPositions(60, 6, 13, 6, 9), 60 + 7 * 79 + 9);
  // The reference implementation's measured 229 examples/s at 623 positions each, GPT-2
  // small (124.4M parameters).
  const m = mfu(124.44e6, 229 * 623);
  assert(m > 0.13 && m < 0.14, `${m}`);
});

Deno.test("gpu bench: median, judging and a seeded generator", () => {
  assertEquals(median([3, 1, 2]), 2);
  assertEquals(median([4, 1, 3, 2]), 2.5);
  assertEquals(judge(3.9, "<= 4"), true);
  assertEquals(judge(4.1, "<= 4"), false);
  assertEquals(judge(700, ">= 690"), true);
  assertEquals(judge(null, ">= 690"), null);
  assertEquals(judge(Number.NaN, ">= 1"), null);
  assertEquals(judge(5, ""), null);
  const a = new Rng(7), b = new Rng(7);
  const xs = Array.from({ length: 100 }, () => a.below(10));
  assertEquals(xs, Array.from({ length: 100 }, () => b.below(10)));
  assert(xs.every((x) => Number.isInteger(x) && x >= 0 && x < 10));
  assert(new Set(xs).size > 5, "draws vary");
});

Deno.test("gpu bench: random examples have the reference's shape", () => {
  const V = 100, sp = specialsOf(V);
  const ex = randomExample(new Rng(1), V, { question: 60, answer: 8, K: 6, c: 13 }, 0);
  assertEquals(ex.q.length, 60);
  assertEquals(ex.steps.length, 6);
  assert(ex.steps.every((s) => s.length === 13), "every latent slot has a target");
  assertEquals(ex.ans.length, 8);
  assertEquals(ex.ans[7], sp.eos);
  assert([...ex.q, ...ex.ans.subarray(0, 7)].every((t) => t < V - 4), "no special id drawn");
  assertEquals(suffixOf(ex, 6, sp.eot).length, 9);
});

Deno.test("gpu bench: the table gives verdicts only where judged", () => {
  const rows: BenchRow[] = [
    { section: "train", name: "ex/s", value: 700, unit: "ex/s", target: ">= 690", met: true },
    { section: "infer", name: "thought", value: 5, unit: "ms", target: "<= 4", met: false },
    { section: "infer", name: "dry", value: 5, unit: "ms", target: "<= 4", met: null },
    { section: "torch", name: "ref", value: null, unit: "", target: "", met: null, note: "x" },
  ];
  const t = formatBenchTable(rows).split("\n");
  assertEquals(t.length, 6);
  assert(t[2].includes("met") && !t[2].includes("MISSED"), t[2]);
  assert(t[3].includes("MISSED"), t[3]);
  assert(t[4].includes("not judged"), t[4]);
  assert(t[5].includes(" - ") && t[5].endsWith("x"), t[5]);
});

Deno.test({
  name: "gpu bench: a dry run on the CPU runs every section and judges nothing",
  async fn() {
    const out = await tempDir();
    const script = new URL("../bench/gpu_bench.ts", import.meta.url).pathname;
    const r = await runDeno([
      "run",
      "--allow-all",
      script,
      "--backend",
      "cpu",
      "--skip-check",
      // The PyTorch section runs, and finds no interpreter: a skipped row per mode.
      "--python",
      "no-such-python",
      "--batch",
      "2",
      "--steps",
      "1",
      "--runs",
      "1",
      "--eval-questions",
      "5",
      "--eval-batch",
      "2",
      "--k",
      "2",
      "--c",
      "3",
      "--vocab",
      "300",
      "--out",
      out,
    ]);
    assertEquals(r.code, 0, r.stderr);
    const report = JSON.parse(await Deno.readTextFile(`${out}/gpu_bench.json`));
    assertEquals(report.dry, true);
    assertEquals(report.backend, "cpu");
    const rows = report.rows as BenchRow[];
    for (const s of ["train", "infer", "eval", "torch"]) {
      assert(rows.some((x) => x.section === s), `section ${s}`);
    }
    const torch = rows.filter((x) => x.section === "torch");
    assert(torch.some((x) => x.note?.includes("no-such-python")), JSON.stringify(torch));
    assert(rows.every((x) => x.met === null), "a dry run judges no target");
    const exs = rows.find((x) => x.name.endsWith("examples/s"))!;
    assert(exs.value! > 0 && Number.isFinite(exs.value!), `${exs.value}`);
    const th = rows.find((x) => x.name.startsWith("thought phase"))!;
    assert(th.value! > 0, "thought phase timed");
    const plain = rows.find((x) => x.name.startsWith("thought phase without CUDA graphs"))!;
    assert(plain.value! > 0, "the thought phase without graphs timed");
    assertEquals(report.detail.eval.questions, 5);
    const lines = (await Deno.readTextFile(`${out}/rows.jsonl`)).trim().split("\n");
    assertEquals(lines.length, rows.length, "every row was also written as it came");
    assert(r.stdout.trimEnd().endsWith("no target judged)"), "the summary line comes last");
  },
});

Deno.test({
  name: "gpu all: without a GPU the one command still runs every step and leaves its twelve " +
    "files; a baseline library adds the baseline and current variants, and a missing one is refused",
  async fn() {
    const root = new URL("..", import.meta.url).pathname;
    const missing = await new Deno.Command("bash", {
      args: ["bench/gpu_all.sh", "--quick", "--baseline-lib", "build/no-such-library.so"],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(missing.code, 2);
    assert(
      new TextDecoder().decode(missing.stderr).includes("no-such-library.so: no such file"),
    );
    const out = await tempDir();
    // A dry run never loads the library (the CPU engine stands in); any file will do.
    const lib = `${await tempDir()}/baseline.so`;
    Deno.writeTextFileSync(lib, "");
    const r = await new Deno.Command("bash", {
      args: ["bench/gpu_all.sh", "--quick", "--baseline-lib", lib, out],
      cwd: root,
      env: { DENO: Deno.execPath(), NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(r.stderr);
    assertEquals(r.code, 0, err);
    const files = [...Deno.readDirSync(out)].map((e) => e.name).sort();
    assertEquals(files, [
      "bench.json",
      "bench.txt",
      "check.json",
      "check.txt",
      "predictions.json",
      "predictions.txt",
      "preflight.txt",
      "profile.json",
      "profile.txt",
      "run.log",
      "sanitize.txt",
      "variants.txt",
    ]);
    const log = Deno.readTextFileSync(`${out}/run.log`);
    // No GPU: no preflight, and nothing turned off.
    assertEquals(
      Deno.readTextFileSync(`${out}/preflight.txt`),
      "preflight: not run (no GPU); every step runs as started (settings: the defaults)\n",
    );
    // The check fails without a GPU; the later steps run anyway.
    assert(/check exit [1-9]/.test(log), log.slice(0, 2000));
    assert(log.includes("bench exit 0") && log.includes("profile exit 0"), log.slice(-2000));
    assert(Deno.readTextFileSync(`${out}/bench.txt`).includes("DRY RUN"));
    assert(Deno.readTextFileSync(`${out}/profile.txt`).includes("training step:"));
    const variants = Deno.readTextFileSync(`${out}/variants.txt`);
    assert(variants.startsWith("== default\n"), variants.slice(0, 200));
    assert(variants.includes("== heuristic-gemm"), variants.slice(0, 400));
    assert(variants.includes("== gemm-skinny-rows"), variants.slice(0, 400));
    assert(variants.includes("== separate-gelu-fwd"), variants.slice(0, 400));
    const b = variants.indexOf("== baseline"), c = variants.indexOf("== current");
    assert(b > 0 && c > b, "baseline, then current, after the other variants");
    assert(log.includes("variant baseline exit 0") && log.includes("variant current exit 0"));
    // Each change's prediction beside its variant's figures (a dry run's, here).
    assert(log.includes("predictions exit 0"), log.slice(-2000));
    const predictions = Deno.readTextFileSync(`${out}/predictions.txt`);
    assert(predictions.includes("29. programmatic dependent launch"), predictions);
    assert(predictions.includes("31. GELU's forward formed"), predictions);
    // Without a GPU the log says so, and no prediction is judged from the CPU's figures.
    if (log.includes("DRY RUN")) {
      assert(predictions.includes("not judged (no GPU)"), predictions);
      assert(!/as predicted|beyond \(saved more\)| short /.test(predictions), predictions);
    }
    // The sanitizer's stage runs last, and says why it checked nothing here.
    assert(log.includes("6. kernel tour under compute-sanitizer (memcheck,racecheck)"));
    assert(/sanitize exit [12]/.test(log), log.slice(-2000));
    const sanitize = Deno.readTextFileSync(`${out}/sanitize.txt`);
    assert(sanitize.startsWith("sanitize"), sanitize);
    // A run that ends removes its working files.
    assert(![...Deno.readDirSync(out)].some((e) => e.name === "gpu_all.work"), "work left");
  },
});

/** bench/gpu_all.sh --preflight-only with `stand` in place of the preflight: what it wrote. */
async function preflightSearch(stand: string): Promise<{ verdict: string; tries: number }> {
  const out = await tempDir();
  const r = await new Deno.Command("bash", {
    args: ["bench/gpu_all.sh", "--quick", "--preflight-only", out],
    cwd: new URL("..", import.meta.url).pathname,
    env: { DENO: Deno.execPath(), NO_COLOR: "1", GPU_ALL_PREFLIGHT: stand },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const verdict = Deno.readTextFileSync(`${out}/preflight.txt`);
  // Exit status 1 when the preflight failed with the settings it was started with.
  assertEquals(r.code, verdict.startsWith("preflight: passed as started") ? 0 : 1, verdict);
  const log = Deno.readTextFileSync(`${out}/run.log`);
  assert(!log.includes("1. correctness check"), "--preflight-only stops after the preflight");
  return {
    verdict: Deno.readTextFileSync(`${out}/preflight.txt`),
    tries: log.split("\n").filter((l) => l.includes("preflight try")).length,
  };
}

Deno.test({
  name: "gpu all: a failing preflight finds the change to turn off, in a few tries, or says " +
    "that turning every change off does not help",
  sanitizeResources: false,
  async fn() {
    const off = (k: string, v = "0") => `[ "\${${k}:-}" = ${v} ]`;
    assertEquals(
      (await preflightSearch("true")).verdict,
      "preflight: passed as started (settings: the defaults)\n",
    );
    // One failing change, wherever it is among the thirteen: found by halving.
    for (
      const [k, v] of [["LOTUS_PDL", "0"], ["LOTUS_BF16_FCH", "0"], ["LOTUS_TC_ATTENTION", "0"]]
    ) {
      const { verdict, tries } = await preflightSearch(off(k, v));
      assert(
        verdict.startsWith(
          `preflight: failed as started (settings: the defaults), passed with ${k}=${v} (`,
        ),
        verdict,
      );
      assert(tries <= 10, `${k}: ${tries} tries`);
    }
    // Two, in different halves: each change left is then turned back on where it can be.
    const two = await preflightSearch(`${off("LOTUS_PDL")} && ${off("LOTUS_TC_ATTENTION")}`);
    assert(two.verdict.includes("passed with LOTUS_PDL=0 "), two.verdict);
    assert(two.verdict.includes("LOTUS_TC_ATTENTION=0 ("), two.verdict);
    assert(!two.verdict.includes("LOTUS_TC_AHEAD"), two.verdict);
    assertEquals(two.tries, 10, "the search stops at ten tries");
    const none = await preflightSearch("false");
    assert(none.verdict.includes("every switchable change turned off"), none.verdict);
    assertEquals(none.tries, 2);
  },
});

Deno.test({
  name: "gpu check: --preflight checks the ops and the LOTUS steps, and nothing a bf16 " +
    "benchmark does not rely on",
  sanitizeResources: false,
  async fn() {
    const out = await tempDir();
    const r = await runDeno([
      "run",
      "-A",
      "check/gpu_check.ts",
      "--preflight",
      "--cpu-only",
      "--out",
      out,
    ]);
    assertEquals(r.code, 0, r.stderr.slice(-2000));
    const rows = Deno.readTextFileSync(`${out}/rows.jsonl`).trim().split("\n").map((l) =>
      JSON.parse(l) as { section: string; name: string }
    );
    const sections = new Set(rows.map((r) => r.section));
    assert(sections.has("ops") && sections.has("lotus step"), [...sections].join(","));
    for (const s of ["training", "memory", "torch"]) assert(!sections.has(s), s);
  },
});

Deno.test({
  name: "gpu all: after a failing preflight the benchmark runs with the change turned off, the " +
    "check and the sanitizer with the caller's settings, and only the default variant",
  sanitizeResources: false,
  async fn() {
    const out = await tempDir();
    const r = await new Deno.Command("bash", {
      args: ["bench/gpu_all.sh", "--quick", out],
      cwd: new URL("..", import.meta.url).pathname,
      env: {
        DENO: Deno.execPath(),
        NO_COLOR: "1",
        // The caller's own setting of a switch the search turns off, and of one it leaves.
        LOTUS_TC_AHEAD: "1",
        LOTUS_GEMV: "1",
        GPU_ALL_PREFLIGHT: '[ "${LOTUS_TC_AHEAD:-}" = 0 ]',
      },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const log = Deno.readTextFileSync(`${out}/run.log`);
    assertEquals(r.code, 0, log.slice(-2000));
    assert(
      Deno.readTextFileSync(`${out}/preflight.txt`).includes("passed with LOTUS_TC_AHEAD=0 ("),
    );
    const line = (start: string) => log.split("\n").find((l) => l.includes(start)) ?? "";
    assert(
      line("2. benchmark").includes("settings: LOTUS_GEMV=1 LOTUS_TC_AHEAD=0"),
      line("2. benchmark"),
    );
    assert(
      line("6. kernel tour").includes("settings: LOTUS_GEMV=1 LOTUS_TC_AHEAD=1"),
      line("6. kernel tour"),
    );
    const variants = log.split("\n").filter((l) => /gpu-all: variant \S+$/.test(l));
    assertEquals(variants, ["gpu-all: variant default"]);
  },
});

/** A process as ps lists it. */
interface Proc {
  pid: number;
  ppid: number;
  zombie: boolean;
  args: string;
}

/**
 * Every process, from ps (reading /proc/<pid> would need Deno's --allow-all), command lines
 * whole (-ww); a listing that fails, or lacks this process, is an error, not an empty list.
 */
async function processes(): Promise<Proc[]> {
  const r = await new Deno.Command("ps", {
    args: ["-e", "-ww", "-o", "pid=,ppid=,stat=,args="],
    stdout: "piped",
  }).output();
  const out: Proc[] = [];
  for (const l of new TextDecoder().decode(r.stdout).split("\n")) {
    const m = /^\s*(\d+)\s+(\d+)\s+(\S+)\s*(.*)$/.exec(l);
    if (m) out.push({ pid: +m[1], ppid: +m[2], zombie: m[3].startsWith("Z"), args: m[4] });
  }
  assert(r.success && out.some((p) => p.pid === Deno.pid), "ps listed no processes");
  return out;
}

/** The processes below `pid` in `all`. */
function descendantsOf(all: Proc[], pid: number): Proc[] {
  const found: Proc[] = [];
  for (const p of all.filter((q) => q.ppid === pid)) found.push(p, ...descendantsOf(all, p.pid));
  return found;
}

/**
 * `bash ARGS` (a GPU script) in a process group of its own, with `env`; once a process whose
 * command line has `waitFor` runs below it, sends `signal` (to the whole group, as a
 * terminal's Ctrl-C does, when `group`). Returns the exit status, the processes that ran below
 * it then and still run, and its stderr.
 */
async function scriptSignalled(
  args: string[],
  env: Record<string, string>,
  waitFor: string,
  signal: Deno.Signal,
  group: boolean,
): Promise<{ code: number; left: string[]; stderr: string }> {
  // A shell started in the background has SIGINT ignored, which a script cannot trap: put
  // its default back, as in a terminal. setsid: its own process group, like a terminal job.
  const child = new Deno.Command("env", {
    args: ["--default-signal=INT", "setsid", "bash", ...args],
    cwd: new URL("..", import.meta.url).pathname,
    env: { DENO: Deno.execPath(), NO_COLOR: "1", ...env },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let below: Proc[] = [];
  for (let i = 0; i < 600 && !below.some((p) => p.args.includes(waitFor)); i++) {
    await new Promise((r) => setTimeout(r, 100));
    below = descendantsOf(await processes(), child.pid);
  }
  assert(below.some((p) => p.args.includes(waitFor)), `no ${waitFor} below ${args[0]}`);
  Deno.kill(group ? -child.pid : child.pid, signal);
  const r = await child.output();
  // Still there, by pid and command line (a pid used again by another process is not it).
  const now = await processes();
  const alive = (p: Proc) => now.some((q) => q.pid === p.pid && q.args === p.args && !q.zombie);
  return {
    code: r.code,
    left: below.filter(alive).map((p) => `${p.pid} ${p.args}`),
    stderr: new TextDecoder().decode(r.stderr),
  };
}

Deno.test({
  name: "gpu scripts: Ctrl-C at their terminal, or SIGTERM, stops them and every command they run",
  sanitizeResources: false,
  async fn() {
    // Ctrl-C during the preflight's stand-in (timeout's group would not get it).
    const out = await tempDir();
    const int = await scriptSignalled(
      ["bench/gpu_all.sh", "--quick", out],
      { GPU_ALL_PREFLIGHT: "sleep 117" },
      "sleep 117",
      "SIGINT",
      true,
    );
    assertEquals(int.code, 130, int.stderr.slice(-2000));
    assertEquals(int.left, []);
    assert(int.stderr.includes("gpu_all.sh: stopped by SIGINT"), int.stderr.slice(-2000));
    // The step's working files stay, for a machine that returns only the results folder.
    assert(Deno.statSync(`${out}/gpu_all.work/.gpu_all`).isFile);
    const log = Deno.readTextFileSync(`${out}/run.log`);
    assert(log.includes("ended before its last step (exit 130)"), log);
    assert(log.includes(`left its files in ${out}/gpu_all.work`), log);
    // A folder of that name the script did not make is refused, not removed.
    const other = await tempDir();
    Deno.mkdirSync(`${other}/gpu_all.work`);
    Deno.writeTextFileSync(`${other}/gpu_all.work/keep.txt`, "mine");
    const refused = await new Deno.Command("bash", {
      args: ["bench/gpu_all.sh", "--quick", "--preflight-only", other],
      cwd: new URL("..", import.meta.url).pathname,
      env: { DENO: Deno.execPath(), NO_COLOR: "1", GPU_ALL_PREFLIGHT: "true" },
      stderr: "piped",
    }).output();
    assertEquals(refused.code, 2);
    assert(new TextDecoder().decode(refused.stderr).includes("not a working folder"));
    assertEquals(Deno.readTextFileSync(`${other}/gpu_all.work/keep.txt`), "mine");
    // SIGTERM to the script alone, while a script of its own runs deno under timeout.
    const term = await scriptSignalled(
      ["bench/gpu_all.sh", "--quick", await tempDir()],
      { GPU_ALL_PREFLIGHT: "true" },
      "check/gpu_check.ts",
      "SIGTERM",
      false,
    );
    assertEquals(term.code, 143, term.stderr.slice(-2000));
    assertEquals(term.left, []);
    // The check on its own, under set -e: Ctrl-C's status, whatever its command exits with.
    const check = await scriptSignalled(
      ["check/gpu_check.sh", "--cpu-only", "--out", await tempDir()],
      {},
      "check/gpu_check.ts",
      "SIGINT",
      true,
    );
    assertEquals(check.code, 130, check.stderr.slice(-2000));
    assertEquals(check.left, []);
  },
});

Deno.test({
  name: "gpu all: on a card other than an H200, a quick run measures PyTorch's eager reference " +
    "in place of two variants; gpu bench refuses an unknown reference mode",
  sanitizeResources: false,
  async fn() {
    const root = new URL("..", import.meta.url).pathname;
    const run = async (card: string) => {
      const out = await tempDir();
      const r = await new Deno.Command("bash", {
        args: ["bench/gpu_all.sh", "--quick", "--preflight-only", out],
        cwd: root,
        env: {
          DENO: Deno.execPath(),
          NO_COLOR: "1",
          GPU_ALL_PREFLIGHT: "true",
          GPU_ALL_CARD: card,
        },
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(r.code, 0, new TextDecoder().decode(r.stderr));
      return Deno.readTextFileSync(`${out}/run.log`);
    };
    const h100 = await run("NVIDIA H100 80GB HBM3");
    assert(
      h100.includes(
        "the card (NVIDIA H100 80GB HBM3) is not an H200: the benchmark runs the PyTorch " +
          "reference eager too",
      ),
      h100,
    );
    assert(!(await run("NVIDIA H200")).includes("is not an H200"));
    const bad = await runDeno([
      "run",
      "--allow-all",
      new URL("../bench/gpu_bench.ts", import.meta.url).pathname,
      "--torch-modes",
      "eager,compiled",
    ]);
    assertEquals(bad.code, 2);
    assert(
      bad.stderr.includes(
        "--torch-modes eager,compiled: compiled is not one of eager, compile-blocks",
      ),
      bad.stderr,
    );
  },
});
