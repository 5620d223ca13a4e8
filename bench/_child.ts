/**
 * One child `deno` process of a study (bench/study.ts, bench/nl_study.ts): run from the project
 * root, stopped like Ctrl-C past its time (a training saves and can be resumed), its output and
 * exit status appended to a log file.
 *
 * @module
 */

/** Run `deno args…` in `root`; append the command, its output and exit status to `log`. */
export async function denoLogged(
  root: string,
  args: string[],
  log: string,
  timeoutMs: number,
): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGTERM"), timeoutMs);
  const out = await child.output();
  clearTimeout(timer);
  const dec = new TextDecoder();
  await Deno.writeTextFile(
    log,
    `$ deno ${args.join(" ")}\n${dec.decode(out.stdout)}` +
      `${dec.decode(out.stderr)}exit ${out.code}\n`,
    { append: true },
  );
  return out.code;
}

/** The permissions a study's child commands run with. */
export const PERMS = ["--allow-read", "--allow-write", "--allow-env", "--allow-ffi", "--allow-run"];

/** What one study run trains: where, on what, and with which settings. */
export interface TrainRun {
  run: string;
  data: string;
  preset: string;
  seed: number;
  flags: string[];
  /** The checkpoint it starts from, when any. */
  init?: string;
}

/**
 * The `deno` arguments that train `t` on one thread: a resume of its run directory when `resume`
 * (a run past its time stopped and saved), else a fresh run.
 */
export function trainArgs(t: TrainRun, resume: boolean): string[] {
  if (resume) {
    return ["run", ...PERMS, "cli/train.ts", "--resume", t.run, "--threads", "1", "--quiet"];
  }
  return [
    "run",
    ...PERMS,
    "cli/train.ts",
    "--data",
    t.data,
    "--out",
    t.run,
    "--preset",
    t.preset,
    "--seed",
    String(t.seed),
    ...t.flags,
    ...(t.init ? ["--init", t.init] : []),
  ];
}
