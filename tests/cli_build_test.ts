import { tempDir } from "./_tmp.ts";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { ROOT, type Run, runDeno } from "./_run.ts";
import { command, parseCli } from "../cli/build_dataset.ts";
import { CliError } from "../cli/_common.ts";

const CLI = `${ROOT}cli/build_dataset.ts`;
const TRAIN = `${ROOT}fixtures/default/train.jsonl`;

function cli(args: string[], cwd = ROOT): Promise<Run> {
  return runDeno(["run", "--allow-read", "--allow-write", "--allow-env", CLI, ...args], cwd);
}

function assertOneLineError(r: Run, ...parts: string[]) {
  const lines = r.stderr.trimEnd().split("\n");
  assertEquals(lines.length, 1, `one line expected, got:\n${r.stderr}`);
  for (const p of parts) assert(r.stderr.includes(p), `"${p}" not in: ${r.stderr}`);
  assert(!/\n\s+at /.test(r.stderr), "no stack trace");
}

async function entries(dir: string): Promise<string[]> {
  try {
    return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
  } catch {
    return [];
  }
}

/** A build of `input` into `out` in a child process (`extra`: more flags). */
function spawnBuild(
  input: string,
  out: string,
  extra: string[] = [],
  stderr: "null" | "piped" = "null",
) {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      CLI,
      "--input",
      input,
      "--out",
      out,
      ...extra,
    ],
    stdout: "null",
    stderr,
  }).spawn();
}

/** Polls `out` up to `polls` times, `everyMs` apart, until a staging directory appears. */
async function awaitStaging(out: string, polls: number, everyMs: number): Promise<boolean> {
  for (let i = 0; i < polls; i++) {
    if ((await entries(out)).some((n) => n.startsWith(".staging-"))) return true;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return false;
}

/**
 * Starts a build of `input` into `out`, polls `out` up to `polls` times, `everyMs` apart, until a
 * staging directory appears, then sends SIGINT. Returns whether it saw one, and the exit status.
 */
async function interruptBuild(input: string, out: string, polls: number, everyMs: number) {
  const child = spawnBuild(input, out);
  const sawStaging = await awaitStaging(out, polls, everyMs);
  child.kill("SIGINT");
  return { sawStaging, status: await child.status };
}

Deno.test("cli: --help prints usage and exits 0", async () => {
  const r = await cli(["--help"]);
  assertEquals(r.code, 0);
  assert(r.stdout.includes("--input FILE"));
  assert(r.stdout.includes("--long-step"));
});

Deno.test("cli: bad option values exit 2 with a one-line message naming the option", async () => {
  const cases: [string[], string][] = [
    [["--k", "abc", "--input", TRAIN, "--out", "/tmp/x"], "--k must be a whole number"],
    [["--cot", "latex", "--input", TRAIN, "--out", "/tmp/x"], "--cot must be one of math|nl"],
    [["--format", "xml", "--input", TRAIN, "--out", "/tmp/x"], "--format must be one of"],
    [["--c", "0", "--input", TRAIN, "--out", "/tmp/x"], "--c must be at least 1"],
    [["--input", TRAIN], "--out DIR is required"],
    [["--bogus"], "--bogus"],
  ];
  for (const [args, msg] of cases) {
    const r = await cli(args);
    assertEquals(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assertOneLineError(r, msg);
  }
});

Deno.test("cli: number flags take the range the help gives, and every bad one points to --help", () => {
  const parse = (...args: string[]) => parseCli([...args, "--input", TRAIN, "--out", "/tmp/x"]);
  const bad: [string[], string][] = [
    [["--k", "65"], "--k must be at most 64"], // was the library's "option k: K must be at most 64"
    [["--c", "257"], "--c must be at most 256"],
    [["--k=-1"], "--k must be at least 0"], // was "must be a whole number"
    [["--k", "1.5"], "--k must be a whole number"],
    [["--augment", "1001"], "--augment must be at most 1000"],
    [["--synthetic", "5", "--max-value", "2e9"], "--max-value must be at most 1000000000"],
    // A misspelt family is named, not only the list it is not in.
    [
      ["--synthetic", "5", "--families", "shopping,nope,Ages"],
      '--families has no family "nope", "Ages": takes families from ' +
      "shopping,travel,sharing,ages,earnings,cooking,schedule",
    ],
  ];
  for (const [args, msg] of bad) {
    const e = assertThrows(() => parse(...args), CliError);
    assertEquals(e.message, `${msg}; see deno task build-dataset --help`, args.join(" "));
  }
  // --help says "(100 to 1e9)": exponent notation is taken for whole numbers.
  const o = parse("--synthetic", "5", "--max-value", "1e9", "--k", "64", "--c", "256");
  assert(o !== "help");
  assertEquals(o.splits[0].synthetic?.maxValue, 1e9);
  assertEquals([o.k, o.c], [64, 256]);
  assert(command.help().includes("cap on every generated value (100 to 1e9)"));
  assert(command.help().includes("latent blocks K (0 to 64)"));
});

Deno.test("cli: bad JSON and a missing field exit 1 naming file:line and field; --out stays clean", async () => {
  const dir = await tempDir();
  const first = (await Deno.readTextFile(TRAIN)).split("\n")[0];
  const badJson = `${dir}/bad_json.jsonl`;
  await Deno.writeTextFile(badJson, `${first}\n${first}\n{"question": "Broken\n`);
  const noField = `${dir}/no_field.jsonl`;
  await Deno.writeTextFile(noField, `${first}\n{"answer": "#### 4"}\n`);

  const out = `${dir}/out`;
  let r = await cli(["--input", badJson, "--out", out]);
  assertEquals(r.code, 1);
  assertOneLineError(r, `${badJson}:3`);
  assertEquals(await entries(out), []);

  r = await cli(["--input", noField, "--out", out]);
  assertEquals(r.code, 1);
  assertOneLineError(r, `${noField}:2`, "question");
  assertEquals(await entries(out), []);

  // Into an existing dataset: nothing is added, nothing is left half-written.
  assertEquals((await cli(["--input", TRAIN, "--out", out])).code, 0);
  const before = await entries(out);
  r = await cli(["--input", noField, "--split", "valid", "--out", out]);
  assertEquals(r.code, 1);
  assertEquals(await entries(out), before);
});

Deno.test("cli: no --input builds train and valid from the default data with a summary", async () => {
  const dir = await tempDir();
  const r = await cli(["--out", `${dir}/d`]);
  assertEquals(r.code, 0, r.stderr);
  for (const s of ["records read", "steps = 1", "tokens: steps", "train", "valid", "truncated"]) {
    assert(r.stdout.includes(s), `summary lacks "${s}":\n${r.stdout}`);
  }
  assert(
    (await entries(`${dir}/d`)).some((n) => /^valid-[0-9a-f]{12}-00000\.safetensors$/.test(n)),
  );
  // A second split with another K into the same directory fails clearly.
  const r2 = await cli(["--input", TRAIN, "--split", "extra", "--k", "4", "--out", `${dir}/d`]);
  assertEquals(r2.code, 1);
  assertOneLineError(r2, "k = 3 there, 4 here");
});

Deno.test("cli: SIGINT during a build removes the staging directory", async () => {
  const dir = await tempDir();
  // Large enough to be interrupted mid-build: the fixtures repeated.
  const lines = (await Deno.readTextFile(TRAIN)).trimEnd().split("\n");
  const big = `${dir}/big.jsonl`;
  await Deno.writeTextFile(
    big,
    Array.from({ length: 400 }, () => lines.join("\n")).join("\n") + "\n",
  );
  const out = `${dir}/out`;
  const { sawStaging, status } = await interruptBuild(big, out, 400, 25);
  if (!sawStaging) {
    // The build finished before we could interrupt it; nothing to check.
    console.log("cli_build_test: build finished before SIGINT; interruption not exercised");
    return;
  }
  if (status.success) {
    console.log("cli_build_test: build finished between the check and SIGINT; not exercised");
    return;
  }
  assertEquals(status.code, 130);
  assertEquals(await entries(out), []);
});

Deno.test({
  name: "cli: a FIFO given as input is refused at once, naming it, leaving nothing behind",
  ignore: Deno.build.os === "windows",
  async fn() {
    // A pipe cannot be read twice (format detection, the source's checksum, then the records):
    // a build once opened it and waited for a writer for ever, or read a pipe's rest as if it
    // were all of it. It is refused before anything is opened or made.
    const dir = await tempDir();
    const fifo = `${dir}/in.jsonl`;
    const mk = new Deno.Command("mkfifo", { args: [fifo] }).outputSync();
    assert(mk.success, "mkfifo");
    for (const format of ["auto", "gsm8k"]) {
      const out = `${dir}/out-${format}`;
      const child = spawnBuild(fifo, out, format === "auto" ? [] : ["--format", format], "piped");
      // Were it to wait on the FIFO, give it 20 s, then kill it (the test then fails).
      const killer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      const { code, stderr } = await child.output();
      clearTimeout(killer);
      const err = new TextDecoder().decode(stderr).trim();
      assertEquals(code, 1, `--format ${format}: ${err}`);
      assertEquals(
        err,
        `error: ${fifo}: is not a regular file (a pipe such as /dev/stdin, a device or a ` +
          "socket), and an input is read more than once (its format, then its records); save " +
          "the data to a file first, and give that file",
      );
      assertEquals(await entries(out), [], format);
    }
  },
});

Deno.test("cli: SIGINT the moment the staging directory appears leaves nothing behind", async () => {
  // The narrow windows: right after the staging directory is created, and while the files are
  // moved into place. Polled as tightly as the event loop allows, 15 times on a small input
  // (before the fix, about 1 run in 6 left a staging directory or a partial output).
  let exercised = 0;
  for (let i = 0; i < 15; i++) {
    const out = `${await tempDir()}/out`;
    const { status } = await interruptBuild(TRAIN, out, 50_000, 0);
    if (status.success) continue; // finished first: nothing to check
    exercised++;
    assertEquals(status.code, 130);
    // Nothing, or (when the signal came while files were moved into place, which it waits
    // for) the complete dataset; never a staging directory or a part of the files.
    const left = await entries(out);
    const staging = left.find((n) => n.startsWith(".staging-"));
    assert(
      !staging,
      `run ${i}: ${staging} left, holding [${staging && await entries(`${out}/${staging}`)}]`,
    );
    assert(
      left.length === 0 || (left.includes("manifest.json") && left.includes("tokenizer.json")),
      `run ${i}: ${left}`,
    );
  }
  assert(exercised > 0, "at least one run was interrupted");
});

/**
 * `build-dataset ARGS` with a preload that sends `signal` to the build the moment it calls
 * `Deno.${call}` on a path matching `at`: a file opened in the staging directory (mid-build:
 * the open then waits until the signal is handled), or a file moved into the output
 * (mid-commit, which the signal waits for).
 */
async function buildSignalledAt(
  call: "open" | "rename",
  at: RegExp,
  signal: Deno.Signal,
  args: string[],
): Promise<Run> {
  const preload = `${await tempDir()}/signal_at.ts`;
  await Deno.writeTextFile(
    preload,
    `const real = Deno.${call};
let sent = false;
Object.defineProperty(Deno, "${call}", {
  value: (...a: unknown[]) => {
    const path = String(a[${call === "open" ? 0 : 1}]);
    if (!sent && ${at}.test(path)) {
      sent = true;
      Deno.kill(Deno.pid, "${signal}");
      // In the build, the call waits for the signal to be handled.
      ${
      call === "open"
        ? "return new Promise((r) => setTimeout(r, 5000)).then(() => (real as any)(...a));"
        : ""
    }
    }
    // deno-lint-ignore no-explicit-any
    return (real as any)(...a);
  },
});
`,
  );
  return await runDeno([
    "run",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    `--preload=${preload}`,
    CLI,
    ...args,
  ]);
}

async function tree(dir: string): Promise<Map<string, string>> {
  const m = new Map<string, string>();
  for (const n of await entries(dir)) m.set(n, await Deno.readTextFile(`${dir}/${n}`));
  return m;
}

Deno.test("cli: a signal during a build says the output is unchanged; one in the commit, that it is written", async () => {
  const out = `${await tempDir()}/out`;
  const base = ["--input", TRAIN, "--split", "train", "--out", out];
  // Into a new directory: nothing is left, not even the directory.
  const first = await buildSignalledAt(
    "open",
    /\.staging-\d+\/\.train\.records\.jsonl$/,
    "SIGINT",
    [
      ...base,
    ],
  );
  assertEquals(first.code, 130, first.stderr);
  assert(
    first.stderr.includes(`stopped by SIGINT: nothing was changed in ${out}`) &&
      first.stderr.includes("rerun the same command"),
    first.stderr,
  );
  assertEquals(await entries(out), []);
  // Rebuilding a split of a dataset: the dataset stays as it was, byte for byte.
  assertEquals((await cli([...base, "--shard-size", "10"])).code, 0);
  const before = await tree(out);
  const again = await buildSignalledAt(
    "open",
    /\.staging-\d+\/\.train\.records\.jsonl$/,
    "SIGTERM",
    [
      ...base,
    ],
  );
  assertEquals(again.code, 143, again.stderr);
  assert(again.stderr.includes(`stopped by SIGTERM: nothing was changed in ${out}`), again.stderr);
  assertEquals(await tree(out), before);
  // SIGHUP (the terminal closed) stops a build as SIGTERM does, with its own exit status.
  const hup = await buildSignalledAt("open", /\.staging-\d+\/\.train\.records\.jsonl$/, "SIGHUP", [
    ...base,
  ]);
  assertEquals(hup.code, 129, hup.stderr);
  assert(hup.stderr.includes(`stopped by SIGHUP: nothing was changed in ${out}`), hup.stderr);
  assertEquals(await tree(out), before);
  // A signal while the files are moved into place waits for the commit, which completes.
  const late = await buildSignalledAt(
    "rename",
    /\/out\/train-[0-9a-f]{12}\.records\.jsonl$/,
    "SIGINT",
    [
      ...base,
    ],
  );
  assertEquals(late.code, 130, late.stderr);
  assert(
    late.stderr.includes(`stopped by SIGINT after the build was written: ${out} holds it`),
    late.stderr,
  );
  const m = JSON.parse(await Deno.readTextFile(`${out}/manifest.json`));
  assertEquals(m.splits.train.shards.length, 1);
  assertEquals(
    (await entries(out)).filter((n) => n.endsWith(".safetensors")),
    [m.splits.train.shards[0].file],
  );
});

Deno.test("cli: --out that holds other files and no manifest is refused and left as it was", async () => {
  const out = await tempDir();
  await Deno.writeTextFile(`${out}/model.safetensors`, "weights");
  await Deno.writeTextFile(`${out}/tokenizer.json`, "{}");
  const r = await cli(["--synthetic", "10", "--out", out]);
  assertEquals(r.code, 1, r.stderr);
  assertOneLineError(r, `--out ${out} is not empty`, "model.safetensors", "choose an empty or new");
  assertEquals([...(await tree(out)).entries()], [
    ["model.safetensors", "weights"],
    ["tokenizer.json", "{}"],
  ]);
});

Deno.test("cli: a short file that is not JSON keeps its whole error on one line, what to do included", async () => {
  const dir = await tempDir();
  // V8 quotes a short text it cannot parse as it is, newline included; the command prints one
  // line, which once stopped there and lost the rest.
  await Deno.writeTextFile(`${dir}/tok.json`, "not json\n");
  const input = `${dir}/in.jsonl`;
  await Deno.writeTextFile(
    input,
    JSON.stringify({
      question: "Ann has 2 pens and buys 3. How many?",
      answer: "<<2+3=5>>\n#### 5",
    }) +
      "\n",
  );
  const r = await cli(["--input", input, "--out", `${dir}/o`, "--tokenizer", `${dir}/tok.json`]);
  assertEquals(r.code, 1, r.stderr);
  assertEquals(
    r.stderr.trim(),
    `error: ${dir}/tok.json: not valid JSON (Unexpected token 'o', "not json\\n" is not valid ` +
      "JSON); expected a Hugging Face tokenizer.json",
  );
  // A short Coconut file: the same, with its hint.
  await Deno.writeTextFile(`${dir}/c.json`, '[{"question": "q?",\n "steps": x}]\n');
  const c = await cli(["--input", `${dir}/c.json`, "--out", `${dir}/o`, "--format", "coconut"]);
  assertEquals(c.code, 1, c.stderr);
  assertEquals(c.stderr.trim().split("\n").length, 1, c.stderr);
  assert(c.stderr.trim().endsWith("; fix the file or pass the right --format"), c.stderr);
});

Deno.test("cli: the default build refuses a --out whose train or valid split holds the user's data, and leaves it as it was", async () => {
  const dir = await tempDir();
  const own = `${dir}/own.jsonl`;
  await Deno.writeTextFile(
    own,
    (await Deno.readTextFile(TRAIN)).split("\n").slice(0, 20).join("\n"),
  );
  const out = `${dir}/ds`;
  let r = await cli(["--input", own, "--out", out, "--tokenizer", "compact"]);
  assertEquals(r.code, 0, r.stderr);
  const manifest = await Deno.readTextFile(`${out}/manifest.json`);
  // As the damaged-split advice used to read: build-dataset --out DIR, with no --input.
  r = await cli(["--out", out]);
  assertEquals(r.code, 1, r.stderr);
  assertOneLineError(
    r,
    `${out}: split train holds other data (from ${own}) than the default data`,
    "give --input FILE (and --split NAME)",
    `move or remove ${out} first`,
  );
  assertEquals(await Deno.readTextFile(`${out}/manifest.json`), manifest);
  // The default data's own directory is rebuilt as before.
  const def = `${dir}/default`;
  for (let i = 0; i < 2; i++) {
    r = await cli(["--out", def]);
    assertEquals(r.code, 0, r.stderr);
  }
});
