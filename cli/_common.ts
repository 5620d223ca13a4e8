/**
 * Shared plumbing of the command-line tools: one-line errors instead of stack traces, and
 * zod messages that name the flag.
 *
 * @module
 */

import type { z } from "zod";

/** A usage error: printed as one line, exit code 2. */
export class CliError extends Error {
  /** Create an error. */
  constructor(message: string) {
    super(message);
    this.name = "CliError";
  }
}

/** The first zod issue as "--flag: message". */
export function zodMessage(err: z.ZodError, command: string): string {
  const i = err.issues[0];
  const flag = i.path.map((p) => String(p).replace(/[A-Z]/g, (c) => "-" + c.toLowerCase())).join(
    ".",
  );
  return `--${flag}: ${i.message}; see deno task ${command} --help`;
}

/**
 * Run a command's main: exit with its code; print any error as one line (the full stack only
 * with LOTUS_DEBUG=1) and exit 2 for usage errors, 1 otherwise.
 */
export async function cliMain(main: () => Promise<number>): Promise<never> {
  let code: number;
  try {
    code = await main();
  } catch (e) {
    const err = e as Error;
    if (Deno.env.get("LOTUS_DEBUG")) console.error(err.stack);
    console.error(`error: ${err.message}`);
    code = e instanceof CliError ? 2 : 1;
  }
  Deno.exit(code);
}
