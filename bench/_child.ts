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
