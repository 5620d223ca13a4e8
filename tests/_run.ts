/**
 * Runs Deno itself (the same executable as the tests) in a child process, for the tests that
 * drive a CLI or a script end to end.
 *
 * @module
 */

/** What a child process printed, and how it ended. */
export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The permissions `deno task train` (and eval, infer) grants, for scripts run like it. */
export const TASK_PERMISSIONS: readonly string[] = [
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-ffi",
  "--allow-run",
];

/** The project root. */
export const ROOT = new URL("..", import.meta.url).pathname;

/** `deno <args>` in `cwd` (default: the project root) with NO_COLOR, its output captured. */
export async function runDeno(args: string[], cwd = ROOT): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/**
 * A preload script, written into `dir`, that makes a command send itself `signal` as it logs
 * (console.error) a line starting `at`. The signal is sent in a microtask, at the command's
 * next await, as one from outside would come, and held a moment as a step or batch would be:
 * the signal reaches the runtime before the command looks for it (on a loaded machine it could
 * otherwise come a step later). With `hangUp`, every console write fails from SIGHUP on, as
 * one to a terminal that went away does. Returns the script's path, for `--preload`.
 */
export async function signalAtPreload(
  dir: string,
  at: string,
  signal: Deno.Signal,
  hangUp = false,
): Promise<string> {
  const path = `${dir}/signal_at.ts`;
  // A terminal that went away: from SIGHUP on, every console write fails as a write to a hung-up
  // terminal does (EIO).
  const gone = hangUp
    ? `let gone = false;
Deno.addSignalListener("SIGHUP", () => {
  gone = true;
});
const fail = () => {
  if (gone) throw new Error("Input/output error (os error 5)");
};
const print = console.log;
console.log = (...a: unknown[]) => {
  fail();
  print(...a);
};
`
    : "const fail = () => {};\n";
  await Deno.writeTextFile(
    path,
    `${gone}const error = console.error;
console.error = (...a: unknown[]) => {
  fail();
  error(...a);
  if (String(a[0]).startsWith(${JSON.stringify(at)})) {
    queueMicrotask(() => {
      Deno.kill(Deno.pid, "${signal}");
      const until = performance.now() + 200;
      while (performance.now() < until) { /* wait */ }
    });
  }
};
`,
  );
  return path;
}

/**
 * A preload script, written into `dir`, that makes a training command send itself `signal` as
 * its first evaluation batch decodes: it wraps the generator (the module the run loads), and
 * holds the signal a moment as a batch would be. With `rank`, only the data-parallel rank of
 * that number (Open MPI's `OMPI_COMM_WORLD_RANK`) sends it. Returns the script's path, for
 * `--preload`.
 */
export async function signalInEvalPreload(
  dir: string,
  signal: Deno.Signal,
  rank?: number,
): Promise<string> {
  const path = `${dir}/signal_in_eval.ts`;
  const only = rank === undefined ? "true" : `Deno.env.get("OMPI_COMM_WORLD_RANK") === "${rank}"`;
  await Deno.writeTextFile(
    path,
    `import { Generator } from ${JSON.stringify(`${ROOT}model/generate.ts`)};
if (${only}) {
  const generate = Generator.prototype.generate;
  let sent = false;
  Generator.prototype.generate = function (...a: Parameters<typeof generate>) {
    if (!sent) {
      sent = true;
      Deno.kill(Deno.pid, "${signal}");
      const until = performance.now() + 200;
      while (performance.now() < until) { /* wait */ }
    }
    return generate.apply(this, a);
  };
}
`,
  );
  return path;
}

/** The kinds and steps of the records of the run in `out`'s log.jsonl, as "train@1". */
export async function loggedRecords(out: string): Promise<string[]> {
  return (await Deno.readTextFile(`${out}/log.jsonl`)).split("\n").filter((l) => l)
    .map((l) => JSON.parse(l)).map((r) => `${r.kind}@${r.step}`);
}
