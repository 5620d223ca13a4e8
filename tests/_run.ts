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
