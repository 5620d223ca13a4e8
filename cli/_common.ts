/**
 * Shared plumbing of the command-line tools: one-line errors instead of stack traces, and
 * zod messages that name the flag.
 *
 * @module
 */

import { parseArgs } from "node:util";
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

/** The flags a command takes (kebab-case names, as typed). */
export interface FlagSpec {
  /** Flags that take a value. */
  strings: readonly string[];
  /** Flags that are on or off (`--help`/`-h` is always added). */
  booleans?: readonly string[];
  /** Collect positional arguments under this key; without it, positionals are an error. */
  positionals?: string;
}

/**
 * Parse `argv` with `node:util` parseArgs (which stands in for @std/cli's parseArgs), then
 * validate the values, keyed in camelCase, with `schema`. Returns "help" for `-h`/`--help`.
 * Unknown flags and invalid values are CliErrors naming the flag.
 */
export function parseCommandLine<S extends z.ZodType>(
  argv: string[],
  command: string,
  flags: FlagSpec,
  schema: S,
): z.infer<S> | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        ...Object.fromEntries(flags.strings.map((f) => [f, { type: "string" as const }])),
        ...Object.fromEntries((flags.booleans ?? []).map((f) => [f, { type: "boolean" as const }])),
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: flags.positionals !== undefined,
    });
  } catch (e) {
    throw new CliError(`${(e as Error).message}; see deno task ${command} --help`);
  }
  if (parsed.values.help) return "help";
  const raw: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(parsed.values)) {
    if (k !== "help") raw[k.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())] = v;
  }
  if (flags.positionals) raw[flags.positionals] = parsed.positionals;
  const res = schema.safeParse(raw);
  if (!res.success) {
    const issue = res.error.issues[0];
    if (flags.positionals && issue.path[0] === flags.positionals) {
      throw new CliError(`${issue.message}; see deno task ${command} --help`);
    }
    throw new CliError(zodMessage(res.error, command));
  }
  return res.data;
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
