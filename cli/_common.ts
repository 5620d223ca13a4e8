/**
 * The one pattern of the command-line tools. A command is declared once, with
 * {@linkcode defineCommand}, as a table of flags; its help text, its zod schema and its
 * `node:util` parseArgs options are all derived from that table. {@linkcode cliMain} runs it:
 * the help on `-h`/`--help`, and every error as one line.
 *
 * @example
 * ```ts
 * import { z } from "zod";
 * import { cliMain, defineCommand, wholeNumber } from "./_common.ts";
 *
 * const command = defineCommand({
 *   name: "greet",
 *   summary: "Say hello.",
 *   flags: {
 *     name: { value: "NAME", help: "whom to greet", schema: z.string(), default: "world" },
 *     times: { value: "N", help: "how often", schema: wholeNumber(1), default: 1 },
 *     shout: { help: "in capitals" },
 *   },
 *   examples: [
 *     { what: "the default greeting", command: "deno task greet" },
 *     { what: "three loud ones", command: "deno task greet --name Ann --times 3 --shout" },
 *   ],
 * });
 * if (import.meta.main) {
 *   await cliMain(command, (a) => {
 *     const line = `hello, ${a.name}`;
 *     for (let i = 0; i < a.times; i++) console.log(a.shout ? line.toUpperCase() : line);
 *     return Promise.resolve(0);
 *   });
 * }
 * ```
 *
 * @module
 */

import { nearestName } from "../base/suggest.ts";
import { exists } from "../base/exists.ts";
import { parseArgs } from "node:util";
import { z } from "zod";
import denoJson from "../deno.json" with { type: "json" };

/** A usage error: printed as one line, exit code 2. */
export class CliError extends Error {
  /** Create an error. */
  constructor(message: string) {
    super(message);
    this.name = "CliError";
  }
}

// ---------------------------------------------------------------------------------------------
// Value schemas. Their messages are predicates ("must be ..."), read after the flag's name.

const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/**
 * A whole number from `min` to `max`, typed as digits or in exponent notation (`1e9`), with
 * an optional sign: "must be a whole number" for anything else (`abc`, `1.5`), "must be at
 * least" or "at most" for one out of range (`-1`).
 */
export function wholeNumber(min = 0, max = Number.MAX_SAFE_INTEGER): z.ZodType<number, string> {
  return z.string()
    .regex(DECIMAL, "must be a whole number")
    .transform(Number)
    .refine((n) => !Number.isFinite(n) || Number.isInteger(n), "must be a whole number")
    .refine((n) => n >= min, `must be at least ${min}`)
    .refine((n) => n <= max, `must be at most ${max}`);
}

/**
 * A decimal number such as 0.05 or 3e-4, at least `min` (or above `above`), at most `max`;
 * one too large to hold (`1e999`) is "must be a finite number".
 */
export function decimal(
  bound: { min?: number; above?: number; max?: number } = {},
): z.ZodType<number, string> {
  return z.string()
    .regex(DECIMAL, "must be a number, such as 0.5 or 3e-4")
    .transform(Number)
    .refine(Number.isFinite, "must be a finite number")
    .refine((n) => bound.min === undefined || n >= bound.min, `must be at least ${bound.min}`)
    .refine((n) => bound.above === undefined || n > bound.above, `must be above ${bound.above}`)
    .refine((n) => bound.max === undefined || n <= bound.max, `must be at most ${bound.max}`);
}

/** A path or a name that may not be empty: "needs `what`, not an empty string" for `--out ""`. */
export function nonEmpty(what: string): z.ZodType<string, string> {
  return z.string().min(1, `needs ${what}, not an empty string`);
}

/** One of `values` ("must be one of a|b|c"); the help lists them. */
export function oneOf<const T extends string>(values: readonly T[]): z.ZodEnum<{ [K in T]: K }> {
  return z.enum(values as [T, ...T[]], { error: `must be one of ${values.join("|")}` }) as never;
}

// ---------------------------------------------------------------------------------------------
// The flag table.

interface FlagBase {
  /** What the flag does, for the help: a short phrase. */
  help: string;
  /** The flag's name when it is not the key in kebab-case (key `warmupSteps`, flag `warmup`). */
  flag?: string;
  /** A one-letter alias. */
  short?: string;
  /** The heading the help lists the flag under (default "Options"). */
  group?: string;
}

/** A flag that takes a value: `--name VALUE`. */
export interface ValueFlag extends FlagBase {
  /** The value's name in the help: `DIR`, `N`, `FILE`. */
  value: string;
  /** Validates the string typed (each one, for `multiple`) and converts it. */
  schema: z.ZodType;
  /** The value when the flag is absent (already converted); the help shows it. */
  default?: unknown;
  /**
   * The default in words, for the help, when the command leaves the value unset and the
   * library decides it (for example "the dataset's K"); shown instead of `default`.
   */
  defaultText?: string;
  /** The command cannot run without it. */
  required?: boolean;
  /** The flag may be repeated; its value is the list of the values given. */
  multiple?: boolean;
}

/** A flag that is on or off: `--quiet`. Its value is false unless it is given. */
export interface SwitchFlag extends FlagBase {
  /** Switches take no value. */
  value?: never;
  /** Switches have no schema: their value is a boolean. */
  schema?: never;
}

/** One entry of a command's flag table. */
export type FlagDef = ValueFlag | SwitchFlag;

/** A command's flags, keyed by their camelCase names. */
export type FlagTable = Record<string, FlagDef>;

/** The positional arguments of a command, all collected under one key. */
export interface Positionals<N extends string = string> {
  /** The key they are collected under. */
  name: N;
  /** Their name in the usage line, for example `QUESTION...`. */
  value: string;
  /** What they are, for the help. */
  help: string;
  /** Validates the list of strings given and converts it. */
  schema: z.ZodType;
}

/** A worked example for the end of the help. */
export interface Example {
  /** What it does, as a short phrase. */
  what: string;
  /** The command line, runnable from the project root. */
  command: string;
}

/** Everything a command is declared with; see {@linkcode defineCommand}. */
export interface CommandSpec<F extends FlagTable, P extends Positionals | undefined> {
  /** The task's name in deno.json: `deno task <name>`. */
  name: string;
  /** What the command does: the paragraph after the usage line. */
  summary: string;
  /** Usage lines after `deno task <name>`; by default one, from the required flags. */
  usage?: readonly string[];
  /** Every flag, once. */
  flags: F;
  /** The positional arguments, if the command takes any. */
  positionals?: P;
  /** Text printed after the flags (cross-flag rules and the like). */
  notes?: string;
  /** Worked examples: real commands that run from the project root. */
  examples: readonly Example[];
}

type ValueOf<D> = D extends { schema: infer S extends z.ZodType }
  ? D extends { multiple: true } ? z.output<S>[] : z.output<S>
  : boolean;
type AlwaysSet<D> = D extends { schema: z.ZodType }
  ? D extends { required: true } ? true : D extends { default: unknown } ? true : false
  : true;

type SetKeys<F extends FlagTable> = {
  [K in keyof F]: AlwaysSet<F[K]> extends true ? K : never;
}[keyof F];

/**
 * The parsed values of a flag table, keyed like it: a flag without a default or `required` is
 * optional, and absent when it was not given.
 */
export type FlagValues<F extends FlagTable> =
  & { -readonly [K in SetKeys<F>]: ValueOf<F[K]> }
  & { -readonly [K in Exclude<keyof F, SetKeys<F>>]?: ValueOf<F[K]> };

/** What a command's {@linkcode Command.parse} returns: the flags and the positionals. */
export type Args<F extends FlagTable, P extends Positionals | undefined> =
  & FlagValues<F>
  & (P extends Positionals ? { [K in P["name"]]: z.output<P["schema"]> } : unknown);

/** The parsed values of a declared command: `ArgsOf<typeof command>`. */
export type ArgsOf<C> = C extends Command<infer F, infer P> ? Args<F, P> : never;

/** A declared command. */
export interface Command<F extends FlagTable, P extends Positionals | undefined> {
  /** The task's name. */
  readonly name: string;
  /** The flag table it was declared with. */
  readonly flags: F;
  /** Its positional arguments, if any. */
  readonly positionals: P;
  /** Its worked examples. */
  readonly examples: readonly Example[];
  /** The zod schema of the raw values, keyed by the table's keys. */
  readonly schema: z.ZodType<Args<F, P>>;
  /** The options given to `node:util` parseArgs (kebab-case names, plus `help`). */
  readonly parseArgsOptions: ParseOptions;
  /**
   * Parse `argv`: "help" for `-h`/`--help`, else the validated values. Unknown flags and bad
   * values are {@linkcode CliError}s naming the flag.
   */
  parse(argv: string[]): Args<F, P> | "help";
  /** The help text. */
  help(): string;
  /** The flag of a table key as typed, with its dashes: `--max-new-tokens`. */
  flagOf(key: keyof F & string): string;
  /** A usage error whose message ends with the pointer to `--help`. */
  error(message: string): CliError;
}

type ParseOptions = Record<
  string,
  { type: "string" | "boolean"; multiple?: boolean; short?: string }
>;

const kebab = (key: string) => key.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase());
const isSwitch = (d: FlagDef): d is SwitchFlag => d.value === undefined;

/**
 * Lets a flag table be declared apart from its command and still keep its literal types
 * (`required: true`, defaults), which the parsed values' type depends on.
 */
export function flagTable<const F extends FlagTable>(flags: F): F {
  return flags;
}

/** The same flags, each listed in the help under `group`. */
export function inGroup<const F extends FlagTable>(group: string, flags: F): F {
  return Object.fromEntries(
    Object.entries(flags).map(([k, d]) => [k, { ...d, group }]),
  ) as F;
}

/**
 * Declare a command from one flag table. From it come the `node:util` parseArgs options
 * (kebab-case names from the camelCase keys, a boolean for every flag without a `value`), the
 * zod schema (each flag's schema, its default, optional unless `required`), and the help:
 * usage, summary, every flag with its value name, help, choices and default, then the notes
 * and the examples.
 */
export function defineCommand<const F extends FlagTable, const P extends Positionals | undefined>(
  spec: CommandSpec<F, P>,
): Command<F, P> {
  const keys = Object.keys(spec.flags);
  const names: Record<string, string> = {};
  /** Each value flag's value name in the help (`FILE`, `N`), by its name as typed. */
  const values: Record<string, string> = {};
  const options: ParseOptions = {};
  const shape: Record<string, z.ZodType> = {};
  for (const key of keys) {
    const d = spec.flags[key];
    const name = d.flag ?? kebab(key);
    if (name === "help" || Object.values(names).includes(name)) {
      throw new Error(`${spec.name}: --${name} is declared twice (--help is always there)`);
    }
    names[key] = name;
    if (isSwitch(d)) {
      options[name] = { type: "boolean", ...(d.short ? { short: d.short } : {}) };
      shape[key] = z.boolean().default(false);
      continue;
    }
    values[name] = d.value;
    options[name] = {
      type: "string",
      ...(d.multiple ? { multiple: true } : {}),
      ...(d.short ? { short: d.short } : {}),
    };
    const s = d.multiple ? z.array(d.schema) : d.schema;
    shape[key] = d.default !== undefined
      ? s.default(d.default as never)
      : d.required
      ? s
      : s.optional();
  }
  options.help = { type: "boolean", short: "h" };
  if (spec.positionals) shape[spec.positionals.name] = spec.positionals.schema;
  const schema = z.object(shape) as unknown as z.ZodType<Args<F, P>>;
  const hint = `see deno task ${spec.name} --help`;
  const error = (message: string) => new CliError(`${message}; ${hint}`);

  const parse = (argv: string[]): Args<F, P> | "help" => {
    let parsed;
    try {
      parsed = parseArgs({
        args: argv,
        options,
        strict: true,
        allowPositionals: spec.positionals !== undefined,
      });
    } catch (e) {
      const given = spec.positionals ? { command: spec.name, argv } : undefined;
      throw error(
        parseArgsMessage(e as Error & { code?: string }, Object.values(names), values, given),
      );
    }
    if (parsed.values.help) return "help";
    const raw: Record<string, unknown> = {};
    for (const key of keys) {
      const v = parsed.values[names[key]];
      const d = spec.flags[key];
      if (v === undefined && !isSwitch(d) && d.required) {
        throw error(`--${names[key]} ${d.value} is required: ${d.help}`);
      }
      if (v !== undefined) raw[key] = v;
    }
    if (spec.positionals) raw[spec.positionals.name] = parsed.positionals;
    const res = schema.safeParse(raw);
    if (res.success) return res.data;
    const issue = res.error.issues[0];
    if (spec.positionals && issue.path[0] === spec.positionals.name) throw error(issue.message);
    throw new CliError(zodMessage(res.error, spec.name, (k) => names[k] ?? kebab(k)));
  };

  return {
    name: spec.name,
    flags: spec.flags,
    positionals: spec.positionals as P,
    examples: spec.examples,
    schema,
    parseArgsOptions: options,
    parse,
    help: () => renderHelp(spec, names),
    flagOf: (key) => `--${names[key]}`,
    error,
  };
}

/**
 * The first zod issue as "--flag message" (a predicate of ours, such as "must be a whole
 * number") or "--flag: message" (zod's own), ending with the pointer to `--help`. `flagOf`
 * names the flag of a key (default: the key in kebab-case).
 */
export function zodMessage(
  err: z.ZodError,
  command: string,
  flagOf: (key: string) => string = kebab,
): string {
  const i = err.issues[0];
  const key = i.path.length > 0 ? String(i.path[0]) : "";
  const rest = i.path.slice(1).filter((p) => typeof p !== "number").map(String);
  const flag = [flagOf(key), ...rest.map(kebab)].join(".");
  const sep = /^[a-z]/.test(i.message) ? " " : ": ";
  return `--${flag}${sep}${i.message}; see deno task ${command} --help`;
}

/**
 * node:util parseArgs's errors, reworded to name the flag; `values` holds each value flag's
 * value name (`--input` -> `FILE`), for the one given without its value. For a command with
 * positional arguments, `positionals` has its name and the arguments given: one of them that
 * starts with "-" and is no flag's form (`"-5 plus 3?"`) is told to go after `--`.
 */
function parseArgsMessage(
  e: Error & { code?: string },
  flags: string[],
  values: Record<string, string>,
  positionals?: { command: string; argv: string[] },
): string {
  const quoted = /'([^' ]+)/.exec(e.message)?.[1] ?? "";
  switch (e.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION": {
      const arg = positionals?.argv.find((a) => a.startsWith(quoted));
      if (positionals && arg !== undefined && !/^--?[A-Za-z][\w-]*(=.*)?$/.test(arg)) {
        return `${JSON.stringify(arg)} starts with "-", so it reads as a flag; put -- before ` +
          `it, as in deno task ${positionals.command} -- ${JSON.stringify(arg)}`;
      }
      const typed = kebab(quoted.replace(/^-+/, "").split("=")[0]);
      const best = nearestName(typed, flags);
      return `unknown flag ${quoted}${best ? ` (did you mean --${best}?)` : ""}`;
    }
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE": {
      if (/does not take an argument/.test(e.message)) return `${quoted} takes no value`;
      const value = values[quoted.replace(/^-+/, "")] ?? "VALUE";
      return `${quoted} needs a value: ${quoted} ${value}, or ${quoted}=${value} for one that ` +
        `starts with "-"`;
    }
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return `unexpected argument "${quoted}": this command takes only flags`;
    default:
      return e.message.split("\n")[0];
  }
}

// ---------------------------------------------------------------------------------------------
// The help.

const WIDTH = 80;
const LABEL = 24;

/**
 * Word-wraps `text` to `width` columns, every line after the first indented by `indent`. A
 * list such as `a|b|c` may break after a `|`.
 */
function wrap(text: string, width: number, indent: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/).filter((w) => w !== "")) {
    const pieces = word.match(/[^|]+\|?|\|/g) ?? [word];
    pieces.forEach((piece, i) => {
      const glue = line === "" || i > 0 ? "" : " ";
      if (line !== "" && line.length + glue.length + piece.length > width) {
        lines.push(line);
        line = piece;
      } else line += glue + piece;
    });
  }
  lines.push(line);
  return lines.map((l, i) => (i === 0 ? l : " ".repeat(indent) + l));
}

function entry(label: string, text: string): string[] {
  const first = `  ${label}`;
  const body = wrap(text, WIDTH - LABEL, LABEL);
  if (first.length < LABEL) return [first.padEnd(LABEL) + body[0], ...body.slice(1)];
  return [first, " ".repeat(LABEL) + body[0], ...body.slice(1)];
}

function show(v: unknown): string {
  return Array.isArray(v) ? v.join(",") : String(v);
}

/** The help line of one flag: its help, its choices, and its default or "required". */
function describe(d: FlagDef): string {
  if (isSwitch(d)) return d.help;
  const extras: string[] = [];
  if (d.schema instanceof z.ZodEnum) {
    extras.push(`one of ${(d.schema.options as string[]).join("|")}`);
  }
  if (d.required) extras.push("required");
  if (d.defaultText !== undefined) extras.push(`default: ${d.defaultText}`);
  else if (d.default !== undefined) extras.push(`default ${show(d.default)}`);
  if (d.multiple) extras.push("repeatable");
  return extras.length ? `${d.help} (${extras.join("; ")})` : d.help;
}

function renderHelp(
  spec: CommandSpec<FlagTable, Positionals | undefined>,
  names: Record<string, string>,
): string {
  const defs = Object.entries(spec.flags);
  const usage = spec.usage ?? [
    [
      ...defs.filter(([, d]) => !isSwitch(d) && d.required).map(([k, d]) =>
        `--${names[k]} ${d.value}`
      ),
      ...(defs.some(([, d]) => isSwitch(d) || !d.required) ? ["[options]"] : []),
      ...(spec.positionals ? [spec.positionals.value] : []),
    ].join(" "),
  ];
  const out = [
    "Usage:",
    ...usage.map((u) => `  deno task ${spec.name}${u ? " " + u : ""}`),
    "",
    ...spec.summary.trim().split("\n\n").flatMap((p) => [...wrap(p, WIDTH, 0), ""]),
  ];
  if (spec.positionals) {
    out.push("Arguments:", ...entry(spec.positionals.value, spec.positionals.help), "");
  }
  const groups = new Map<string, string[]>([["Options", []]]);
  for (const [k, d] of defs) {
    const g = d.group ?? "Options";
    if (!groups.has(g)) groups.set(g, []);
    const label = `${d.short ? `-${d.short}, ` : ""}--${names[k]}${
      isSwitch(d) ? "" : ` ${d.value}`
    }`;
    groups.get(g)!.push(...entry(label, describe(d)));
  }
  groups.get("Options")!.push(...entry("-h, --help", "show this help"));
  for (const [title, lines] of groups) {
    if (lines.length) out.push(`${title}:`, ...lines, "");
  }
  if (spec.notes) {
    out.push(...spec.notes.trim().split("\n\n").flatMap((p) => [...wrap(p, WIDTH, 0), ""]));
  }
  out.push("Examples:");
  spec.examples.forEach((ex, i) => {
    out.push(...(i > 0 ? [""] : []), `  # ${ex.what}`, `  ${ex.command}`);
  });
  return out.join("\n");
}

// ---------------------------------------------------------------------------------------------
// Running a command.

const PERMISSIONS: Record<string, string> = {
  read: "Deno's permission to read files",
  write: "Deno's permission to write files",
  env: "Deno's permission to read environment variables",
  ffi: "Deno's permission to load native code: the engine, onnxruntime",
  run: "Deno's permission to run programs: the compiler that builds the engine",
  net: "Deno's permission to use the network",
  sys: "Deno's permission to read system information",
  import: "Deno's permission to import code from the network",
};

const TASKS: Record<string, string> = denoJson.tasks;

/** Whether `path` is `scope` or lies under it, both taken from the working directory `cwd`. */
function withinScope(path: string, scope: string, cwd: string): boolean {
  const abs = (p: string) => (p.startsWith("/") ? p : `${cwd}/${p}`).replace(/\/+$/, "");
  const [f, s] = [abs(path), abs(scope)];
  return f === s || f.startsWith(`${s}/`);
}

/**
 * The one line for a missing Deno permission, or undefined when `e` is something else. Deno
 * 2 raises `Deno.errors.NotCapable` for a permission it was not given ("run again with the
 * --allow-ffi flag"); `PermissionDenied` is the operating system's refusal, reported as it
 * is unless its message names a Deno flag. The error's causes are searched too.
 *
 * A task may grant a permission for some paths only (`--allow-ffi=build,node_modules`).
 * A `node_modules` that is a symbolic link loads its packages (onnxruntime's native library)
 * from the link's target, outside them even under the task, as a compiler that `CXX` names is
 * outside `--allow-run`'s list: the line then names the path asked for and the task's paths,
 * and says to name the path, rather than to run the task.
 */
export function permissionMessage(
  e: unknown,
  command: string,
  cwd?: string,
): string | undefined {
  for (let err = e, depth = 0; err instanceof Error && depth < 8; err = err.cause, depth++) {
    const flag = /--allow-([a-z]+)/.exec(err.message)?.[1];
    const deno = err instanceof Deno.errors.NotCapable ||
      (flag !== undefined && /run again with the --allow-/.test(err.message));
    if (!deno || flag === undefined) continue;
    const what = PERMISSIONS[flag] ?? "a Deno permission";
    const task = TASKS[command] ?? "";
    const granted = /(^|\s)(-A|--allow-all)(\s|$)/.test(task) ||
      new RegExp(`(^|\\s)--allow-${flag}(=|\\s|$)`).test(task);
    const path = /Requires \w+ access to "([^"]+)"/.exec(err.message)?.[1];
    const scoped = new RegExp(`(?:^|\\s)--allow-${flag}=(\\S+)`).exec(task)?.[1]?.split(",");
    if (granted && path !== undefined && scoped !== undefined) {
      let here = cwd;
      try {
        here ??= Deno.cwd();
      } catch {
        // Without --allow-read the working directory is unknown; relative paths stay as given.
      }
      const base = here ?? ".";
      if (!scoped.some((s) => withinScope(path, s, base))) {
        const why = flag === "run"
          ? "a compiler that CXX names is not among them"
          : flag === "env"
          ? "the variables the command reads"
          : "a node_modules that is a symbolic link loads its packages from the link's " +
            "target, outside them";
        return `this command needs --allow-${flag} for ${path} (${what}); deno task ${command} ` +
          `grants it for ${scoped.join(", ")} only (${why}): run the command with deno run and ` +
          `--allow-${flag} naming ${path}`;
      }
    }
    return `this command needs --allow-${flag} (${what}); ` +
      (granted
        ? `run it through deno task ${command}, which grants it`
        : `run it with --allow-${flag}`);
  }
  return undefined;
}

/**
 * `e`'s message, with what to do added when the operating system refused access to a path
 * (`PermissionDenied`, a read-only file system, a file where a directory is needed, a name
 * too long) or a write (a full file system), whose bare message names the path and the call
 * only.
 */
export function osAccessMessage(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  // Only the bare message: one of the project's errors already says what to do.
  if (/^Read-only file system \(os error 30\)/.test(message)) {
    return `${message}: that file system is mounted read-only; give a path on another one`;
  }
  // The path written to: the last one named (a copy or rename names its source first).
  const full = /^No space left on device \(os error 28\)(?:: \w+ (?:'[^']*' -> )?'([^']+)')?/
    .exec(message);
  if (full) {
    const where = full[1] === undefined
      ? "the file system written to"
      : `the file system of ${full[1]}`;
    return `${message}: ${where} is full; free space on it, or give a path on another one`;
  }
  if (/^File name too long \(os error 36\)/.test(message)) {
    return `${message}: a name in that path is longer than the file system allows (255 ` +
      `bytes, as a rule); give a shorter one`;
  }
  // A file where a directory is needed: the path itself, or a folder above it.
  const notDir = /^Not a directory \(os error 20\)(?:: \w+ (?:'[^']*' -> )?'([^']+)')?/
    .exec(message);
  if (notDir) {
    const where = notDir[1] === undefined ? "the path" : notDir[1];
    return `${message}: ${where}, or a folder above it, is a file where a directory is ` +
      `needed; give a path whose folders are directories`;
  }
  if (e instanceof Deno.errors.PermissionDenied && /^Permission denied/.test(message)) {
    return `${message}: the operating system refused this user that access; change the ` +
      `path's permissions or owner, or give a path this user may use`;
  }
  return message;
}

/**
 * Run a command: parse `argv`, print the help for `-h`/`--help` (exit 0), else call `run`
 * with the values and exit with its code (0 when it returns nothing). Any error is printed as
 * one line, `error: ...` (the full stack, with causes, only with LOTUS_DEBUG=1), and exits 2
 * for a {@linkcode CliError}, 1 otherwise; a missing Deno permission is named as such.
 */
export async function cliMain<F extends FlagTable, P extends Positionals | undefined>(
  command: Command<F, P>,
  run: (args: Args<F, P>) => Promise<number | void>,
  argv: string[] = Deno.args,
): Promise<never> {
  let code: number;
  try {
    const a = command.parse(argv);
    if (a === "help") {
      console.log(command.help());
      code = 0;
    } else code = (await run(a)) ?? 0;
  } catch (e) {
    let debug = false;
    try {
      debug = !!Deno.env.get("LOTUS_DEBUG");
    } catch { /* no --allow-env: no debug output */ }
    if (debug) console.error(e);
    const message = permissionMessage(e, command.name) ?? osAccessMessage(e);
    console.error(`error: ${message}`);
    code = e instanceof CliError ? 2 : 1;
  }
  Deno.exit(code);
}

/**
 * The entries of `obj` under `keys`, leaving out the ones that are unset (undefined) rather
 * than copying them as undefined.
 */
export function pickSet<T extends object, K extends keyof T>(
  obj: T,
  keys: readonly K[],
): Pick<T, K> {
  const out = {} as Pick<T, K>;
  for (const k of keys) if (obj[k] !== undefined) out[k] = obj[k];
  return out;
}

/**
 * The note for a run directory given as `--checkpoint` that kept a best (`RUN/best`, from
 * `--keep-best` or the default recipe): the command uses the run's last save, and the note
 * names the best and the flag that takes it, as a line that starts `note:`; `doing` starts the
 * sentence after it ("evaluating").
 * Null for a checkpoint directory, or a run without a kept best.
 */
export async function keptBestNote(checkpoint: string, doing: string): Promise<string | null> {
  const run = checkpoint.replace(/\/+$/, "");
  if ((await exists(`${run}/config.json`)) || !(await exists(`${run}/best/config.json`))) {
    return null;
  }
  return `note: ${doing} ${run}/checkpoint, the run's last save; its kept best is ${run}/best ` +
    `(--checkpoint ${run}/best)`;
}
