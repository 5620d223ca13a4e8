/**
 * Every command follows the one pattern of cli/_common.ts: its help lists every flag of its
 * table and ends with worked examples that parse; unknown flags and bad values are one-line
 * usage errors naming the flag; a missing Deno permission is named as such.
 */
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { ROOT, runDeno } from "./_run.ts";
import {
  CliError,
  type Command,
  decimal,
  defineCommand,
  type FlagTable,
  keptBestNote,
  oneOf,
  osAccessMessage,
  permissionMessage,
  type Positionals,
  wholeNumber,
} from "../cli/_common.ts";
import { command as buildDataset } from "../cli/build_dataset.ts";
import { command as buildEngine } from "../cli/build_engine.ts";
import { command as evalCmd } from "../cli/eval.ts";
import { command as exportCmd } from "../cli/export.ts";
import { command as infer } from "../cli/infer.ts";
import { command as train, parseTrainArgs, trainSettings } from "../cli/train.ts";
import { z } from "zod";
import { MAX_THREADS } from "../engine/types.ts";

type AnyCommand = Command<FlagTable, Positionals | undefined>;

/** Each command, with its module. */
const COMMANDS: [string, AnyCommand][] = [
  ["cli/build_dataset.ts", buildDataset],
  ["cli/build_engine.ts", buildEngine],
  ["cli/eval.ts", evalCmd],
  ["cli/export.ts", exportCmd],
  ["cli/infer.ts", infer],
  ["cli/train.ts", train],
] as [string, AnyCommand][];

const TASKS = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).tasks as Record<
  string,
  string
>;

/** The words of a command line, as a POSIX shell splits it (quotes, no expansions). */
function shellWords(line: string): string[] {
  const words: string[] = [];
  for (const m of line.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)) words.push(m[1] ?? m[2] ?? m[3]);
  return words;
}

/** The flags a command cannot run without, with a value each, and a question if it takes any. */
function minimal(c: AnyCommand): string[] {
  const args = Object.entries(c.flags).flatMap(([k, d]) =>
    "required" in d && d.required ? [c.flagOf(k), "v"] : []
  );
  return c.positionals ? [...args, "a question"] : args;
}

function assertUsageError(fn: () => unknown, c: AnyCommand, ...parts: string[]) {
  const e = assertThrows(fn, CliError);
  assertEquals(e.message.split("\n").length, 1, e.message);
  for (const p of [...parts, `see deno task ${c.name} --help`]) {
    assert(e.message.includes(p), `${c.name}: "${p}" not in: ${e.message}`);
  }
}

for (const [module, c] of COMMANDS) {
  Deno.test(`${c.name}: a task runs ${module}; the help lists every flag, then examples`, () => {
    assert(TASKS[c.name]?.endsWith(` ${module}`), `deno task ${c.name} runs ${module}`);
    const help = c.help();
    assert(help.startsWith(`Usage:\n  deno task ${c.name}`), help);
    const lines = help.split("\n");
    for (const [key, d] of Object.entries(c.flags)) {
      const label = d.value === undefined ? c.flagOf(key) : `${c.flagOf(key)} ${d.value}`;
      const line = lines.find((l) => l.trimStart().startsWith(label));
      assert(line, `${c.name}: the help lacks ${label}`);
      // Its help text follows, on the same line or the next one.
      const at = lines.indexOf(line);
      const text = `${line} ${lines[at + 1]}`.replace(/\s+/g, " ");
      const firstWords = d.help.split(/\s+/).slice(0, 2).join(" ");
      assert(text.includes(firstWords), `${c.name}: ${label} lacks its help: ${text}`);
      if ("default" in d && d.default !== undefined) {
        assert(help.includes("default "), `${c.name}: ${label} shows its default`);
      }
    }
    assert(lines.some((l) => l.trimStart().startsWith("-h, --help")));
    const examples = help.slice(help.indexOf("\nExamples:\n"));
    const commands = examples.split("\n").filter((l) => l.startsWith(`  deno task ${c.name}`));
    assert(commands.length >= 2 && commands.length <= 4, `${c.name}: ${commands.length} examples`);
    assertEquals(commands.length, c.examples.length);
  });

  Deno.test(`${c.name}: every example is a command line it accepts`, () => {
    for (const ex of c.examples) {
      const [deno, task, name, ...argv] = shellWords(ex.command);
      assertEquals([deno, task, name], ["deno", "task", c.name], ex.command);
      const a = c.parse(argv);
      assert(a !== "help", ex.command);
    }
  });

  Deno.test(`${c.name}: an unknown flag and bad values are one-line errors naming the flag`, () => {
    assertEquals(c.parse(["--help"]), "help");
    assertEquals(c.parse(["-h"]), "help");
    assertUsageError(() => c.parse([...minimal(c), "--no-such-flag"]), c, "--no-such-flag");
    let rejected = 0;
    for (const [key, d] of Object.entries(c.flags)) {
      const flag = c.flagOf(key);
      if (d.value === undefined) {
        assertUsageError(() => c.parse([...minimal(c), `${flag}=yes`]), c, flag);
        continue;
      }
      assertUsageError(() => c.parse([...minimal(c), flag]), c, flag);
      if (d.schema.safeParse("§bad§").success) continue; // any text is a valid value
      assertUsageError(() => c.parse([...minimal(c), flag, "§bad§"]), c, flag);
      rejected++;
    }
    assert(rejected > 0, `${c.name}: no flag rejects a bad value`);
  });
}

Deno.test("flag tables: kebab-case names, switches, defaults, renamed and repeated flags", () => {
  const c = defineCommand({
    name: "demo",
    summary: "A demonstration.",
    flags: {
      maxNewTokens: { value: "N", help: "a budget", schema: wholeNumber(1), default: 64 },
      warmupSteps: { flag: "warmup", value: "N", help: "warmup", schema: wholeNumber(0) },
      mode: { value: "M", help: "a mode", schema: oneOf(["a", "b"]), defaultText: "the data's" },
      input: { value: "FILE", help: "a file", schema: z.string(), multiple: true },
      out: { value: "DIR", help: "where", schema: z.string(), required: true },
      quiet: { help: "say less" },
    },
    examples: [
      { what: "one", command: "deno task demo --out o" },
      { what: "two", command: "deno task demo --out o --warmup 3 --quiet" },
    ],
  });
  const a = c.parse(["--out", "o", "--warmup", "3", "--input", "x", "--input", "y"]);
  assert(a !== "help");
  assertEquals(a, {
    maxNewTokens: 64,
    warmupSteps: 3,
    input: ["x", "y"],
    out: "o",
    quiet: false,
  });
  assertUsageError(() => c.parse([]), c, "--out DIR is required");
  assertUsageError(() => c.parse(["--out", "o", "--max-new-tokens", "0"]), c, "--max-new-tokens");
  assertUsageError(() => c.parse(["--out", "o", "--mode", "c"]), c, "--mode must be one of a|b");
  assertUsageError(() => c.parse(["--warmup-steps", "1"]), c, "did you mean --warmup?");
  assertUsageError(() => c.parse(["--out", "o", "stray"]), c, '"stray"');
  const help = c.help();
  for (
    const s of [
      "deno task demo --out DIR [options]",
      "--max-new-tokens N",
      "(default 64)",
      "--warmup N",
      "(one of a|b; default: the data's)",
      "(repeatable)",
      "(required)",
      "--quiet",
      "# two\n  deno task demo --out o --warmup 3 --quiet",
    ]
  ) assert(help.includes(s), `"${s}" not in:\n${help}`);
});

Deno.test("wholeNumber: digits or exponent notation; a sign gets the range's message", () => {
  const n = wholeNumber(0, 1e9);
  for (const [text, value] of [["7", 7], ["1e9", 1e9], ["2.5e3", 2500], ["+3", 3]] as const) {
    assertEquals(n.parse(text), value, text);
  }
  const message = (text: string) => n.safeParse(text).error?.issues[0].message;
  assertEquals(message("-1"), "must be at least 0");
  assertEquals(message("1.5"), "must be a whole number");
  assertEquals(message("1e-3"), "must be a whole number");
  assertEquals(message("abc"), "must be a whole number");
  assertEquals(message("2e9"), "must be at most 1000000000");
  assertEquals(message("1e400"), "must be at most 1000000000");
});

Deno.test("a flag given without its value: the message shows the value and the = form", () => {
  assertThrows(
    () => parseTrainArgs(["--steps", "-1"]),
    CliError,
    '--steps needs a value: --steps N, or --steps=N for one that starts with "-"',
  );
  assertThrows(
    () => buildDataset.parse(["--input", "--out", "o"]),
    CliError,
    '--input needs a value: --input FILE, or --input=FILE for one that starts with "-"',
  );
});

Deno.test("--threads stops at the most the CPU engine takes, in every command that has it", () => {
  let checked = 0;
  for (const [, c] of COMMANDS) {
    if (!("threads" in c.flags)) continue;
    const ok = c.parse(["--threads", String(MAX_THREADS), ...minimal(c)]);
    assert(ok !== "help" && (ok as { threads: number }).threads === MAX_THREADS, c.name);
    assertUsageError(
      () => c.parse(["--threads", String(MAX_THREADS + 1), ...minimal(c)]),
      c,
      `--threads must be at most ${MAX_THREADS}`,
    );
    checked++;
  }
  assertEquals(checked, 3, "train, eval and infer take --threads");
});

Deno.test("a question that starts with - is told to go after --, not taken for a flag", () => {
  assertThrows(
    () => infer.parse(["--k", "1", "-5 plus 3?"]),
    CliError,
    '"-5 plus 3?" starts with "-", so it reads as a flag; put -- before it, as in deno task ' +
      'infer -- "-5 plus 3?"; see deno task infer --help',
  );
  const a = infer.parse(["--k", "1", "--", "-5 plus 3?"]);
  assert(a !== "help");
  assertEquals((a as { questions: string[] }).questions, ["-5 plus 3?"]);
  // A mistyped flag is still one.
  assertThrows(() => infer.parse(["--kk", "1", "q?"]), CliError, "unknown flag --kk");
});

Deno.test("an empty value is refused in the flag's own words, never zod's", () => {
  for (const [, c] of COMMANDS) {
    for (const [key, d] of Object.entries(c.flags)) {
      if (d.value === undefined) continue;
      const flag = c.flagOf(key);
      const e = assertThrows(() => c.parse([...minimal(c), `${flag}=`]), CliError);
      assert(e.message.startsWith(`${flag} `), e.message);
      assert(!/Too small|Invalid input|expected string/.test(e.message), e.message);
    }
  }
  assertThrows(
    () => parseTrainArgs(["--out="]),
    CliError,
    "--out needs a directory, not an empty string; see deno task train --help",
  );
});

Deno.test("decimal: a number too large to hold is refused by the flag, not the library", () => {
  const message = (text: string) => decimal({ min: 0 }).safeParse(text).error?.issues[0].message;
  assertEquals(decimal({ above: 0 }).parse("3e-4"), 3e-4);
  assertEquals(message("1e999"), "must be a finite number");
  assertEquals(message("-1e999"), "must be a finite number");
  assertThrows(
    () => parseTrainArgs(["--lr", "1e999"]),
    CliError,
    "--lr must be a finite number; see deno task train --help",
  );
});

Deno.test("train passes on only the settings given: the library resolves K, c and lr", () => {
  const given = parseTrainArgs(["--warmup", "5", "--mode", "cot", "--quiet", "--data", "d"]);
  assert(given !== "help");
  assertEquals(trainSettings(given), { warmupSteps: 5, mode: "cot" });
  const none = parseTrainArgs([]);
  assert(none !== "help");
  assertEquals(trainSettings(none), {});
});

Deno.test("a missing Deno permission is named, with the task that grants it", () => {
  const ffi = new Deno.errors.NotCapable(
    'Requires ffi access to "build/x.so", run again with the --allow-ffi flag',
  );
  assertEquals(
    permissionMessage(ffi, "train"),
    "this command needs --allow-ffi (Deno's permission to load native code: the engine, " +
      "onnxruntime); run it through deno task train, which grants it",
  );
  // Found through an error's causes; a task that does not grant it is not offered.
  const wrapped = new Error("cannot export", { cause: ffi });
  assertEquals(
    permissionMessage(wrapped, "export"),
    "this command needs --allow-ffi (Deno's permission to load native code: the engine, " +
      "onnxruntime); run it with --allow-ffi",
  );
  // The operating system's refusal is another matter.
  assertEquals(
    permissionMessage(new Deno.errors.PermissionDenied("os error 13"), "train"),
    undefined,
  );
  assertEquals(permissionMessage(new Error("no config.json"), "train"), undefined);
});

Deno.test("a path outside the paths a task grants is named, not the task", () => {
  // node_modules a symbolic link to another checkout's: Deno checks the real path.
  const outside = new Deno.errors.NotCapable(
    'Requires ffi access to "/elsewhere/node_modules/onnxruntime-node/bin/b.node", run again ' +
      "with the --allow-ffi flag",
  );
  // As the ONNX backend reports it: its own message quotes Deno's.
  const wrapped = new Error(`backend onnx: cannot load onnxruntime-node (${outside.message})`, {
    cause: outside,
  });
  const m = permissionMessage(wrapped, "infer", "/repo");
  assert(m !== undefined);
  assert(
    m.startsWith(
      "this command needs --allow-ffi for /elsewhere/node_modules/onnxruntime-node/bin/b.node " +
        "(Deno's permission to load native code: the engine, onnxruntime); deno task infer " +
        "grants it for build, ",
    ),
    m,
  );
  assert(m.includes("node_modules only"), m);
  assert(m.includes("a node_modules that is a symbolic link loads its packages"), m);
  assert(!m.includes("run it through deno task infer"), m);
  // A compiler that CXX names, which --allow-run's list does not hold.
  const cxx = new Deno.errors.NotCapable(
    'Requires run access to "/opt/gcc-14/bin/g++", run again with the --allow-run flag',
  );
  const r = permissionMessage(cxx, "train", "/repo");
  assert(r !== undefined && r.includes("a compiler that CXX names is not among them"), r);
  assert(r.endsWith("--allow-run naming /opt/gcc-14/bin/g++"), r);
  assert(!r.includes("symbolic link"), r);
  // A variable the task does not list.
  const env = new Deno.errors.NotCapable(
    'Requires env access to "HOME", run again with the --allow-env flag',
  );
  const v = permissionMessage(env, "train", "/repo");
  assert(v !== undefined && v.includes("(the variables the command reads)"), v);
  assert(!v.includes("symbolic link"), v);
  // A path inside them, absolute or relative, keeps the advice to run the task.
  for (const path of ["/repo/node_modules/x/b.node", "build/e.so"]) {
    const inside = new Deno.errors.NotCapable(
      `Requires ffi access to "${path}", run again with the --allow-ffi flag`,
    );
    assertEquals(
      permissionMessage(inside, "infer", "/repo"),
      "this command needs --allow-ffi (Deno's permission to load native code: the engine, " +
        "onnxruntime); run it through deno task infer, which grants it",
    );
  }
});

Deno.test("the operating system's refusal of a path says what to do", () => {
  const denied = new Deno.errors.PermissionDenied(
    "Permission denied (os error 13): mkdir 'out/eval'",
  );
  const m = osAccessMessage(denied);
  assert(m.startsWith("Permission denied (os error 13): mkdir 'out/eval': "), m);
  assert(m.includes("change the path's permissions"), m);
  const readOnly = new Error("Read-only file system (os error 30): open 'x'");
  assert(osAccessMessage(readOnly).includes("mounted read-only"));
  // A message of the project's own, which says what to do already, is left as it is.
  const full = osAccessMessage(new Error("No space left on device (os error 28): write 'out/x'"));
  assert(full.includes("the file system of out/x is full; free space on it"), full);
  const copy = osAccessMessage(
    new Error("No space left on device (os error 28): copy 'a/src' -> 'b/dst'"),
  );
  assert(copy.includes("the file system of b/dst is full"), copy);
  const noPath = osAccessMessage(new Error("No space left on device (os error 28)"));
  assert(noPath.includes("the file system written to is full; free space"), noPath);
  const notDir = osAccessMessage(
    new Deno.errors.NotADirectory("Not a directory (os error 20): mkdir 'a/file/run'"),
  );
  assert(
    notDir.endsWith(
      ": a/file/run, or a folder above it, is a file where a directory is needed; give a " +
        "path whose folders are directories",
    ),
    notDir,
  );
  const long = osAccessMessage(new Error("File name too long (os error 36): mkdir 'out/dddd'"));
  assert(
    long.endsWith(
      ": a name in that path is longer than the file system allows (255 bytes, as a rule); " +
        "give a shorter one",
    ),
    long,
  );
  const own = "cannot save out/x (Read-only file system (os error 30)): free disk space, say";
  assertEquals(osAccessMessage(new Error(own)), own);
  assertEquals(osAccessMessage(new Error("no config.json")), "no config.json");
});

Deno.test("commands: --help needs no permission; a missing one is one line, exit 1", async () => {
  for (const [module, c] of COMMANDS) {
    const r = await runDeno(["run", module, "--help"]);
    assertEquals(r.code, 0, `${c.name}: ${r.stderr}`);
    assert(r.stdout.includes("\nExamples:\n"), r.stdout);
  }
  const r = await runDeno(["run", "cli/export.ts", "--checkpoint", "nowhere", "--out", "x"]);
  assertEquals(r.code, 1, r.stderr);
  assertEquals(
    r.stderr.trim(),
    "error: this command needs --allow-read (Deno's permission to read files); run it through " +
      "deno task export, which grants it",
  );
  const usage = await runDeno(["run", "cli/train.ts", "--epochs", "many"]);
  assertEquals(usage.code, 2, usage.stderr);
  assertEquals(
    usage.stderr.trim(),
    "error: --epochs must be a whole number; see deno task train --help",
  );
});

Deno.test("keptBestNote: a run that kept a best is named with it, for eval, export and infer alike", async () => {
  const run = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${run}/checkpoint`), await Deno.mkdir(`${run}/best`);
    await Deno.writeTextFile(`${run}/checkpoint/config.json`, "{}");
    assertEquals(await keptBestNote(run, "exporting"), null, "no best kept");
    await Deno.writeTextFile(`${run}/best/config.json`, "{}");
    assertEquals(
      await keptBestNote(`${run}/`, "exporting"),
      `note: exporting ${run}/checkpoint, the run's last save; its kept best is ${run}/best ` +
        `(--checkpoint ${run}/best)`,
    );
    // A checkpoint directory, the best's included, is what was asked for.
    assertEquals(await keptBestNote(`${run}/checkpoint`, "exporting"), null);
    assertEquals(await keptBestNote(`${run}/best`, "exporting"), null);
  } finally {
    await Deno.remove(run, { recursive: true });
  }
});
