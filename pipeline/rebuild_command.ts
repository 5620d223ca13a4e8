/**
 * The `deno task build-dataset` command that builds one split of a dataset directory again,
 * from what its manifest recorded: the advice of the errors that find the split damaged.
 *
 * @module
 */
import type { SplitInfo } from "./manifest.ts";
import { FAMILIES } from "./synthetic.ts";

/** A word as a POSIX shell reads it back: quoted where it holds anything but plain characters. */
function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * The command that rebuilds split `split` (its manifest entry `info`) into `dir`: its input
 * files, the options its manifest records that differ from the defaults, its generated
 * problems, augmentation and `--exclude` files. The directory's tokenizer, K, c and CoT form
 * are reused by a build into it, so they are not repeated.
 *
 * @example
 * ```ts ignore
 * import { readManifest } from "./manifest.ts";
 * import { rebuildCommand } from "./rebuild_command.ts";
 * const m = await readManifest("out/data/gsm8k");
 * console.log(rebuildCommand("out/data/gsm8k", "test", m.splits.test));
 * ```
 */
export function rebuildCommand(dir: string, split: string, info: SplitInfo): string {
  const a = ["deno task build-dataset", "--out", shellWord(dir), "--split", shellWord(split)];
  for (const s of info.sources) a.push("--input", shellWord(s.path));
  const o = info.options;
  if (o.format !== "auto") a.push("--format", o.format);
  if (o.socratic !== "strip") a.push("--socratic", o.socratic);
  if (o.longStep !== "truncate") a.push("--long-step", o.longStep);
  if (o.onError !== "throw") a.push("--on-error", o.onError);
  const syn = info.synthetic;
  if (syn) {
    a.push("--synthetic", String(syn.n), "--steps", `${syn.minSteps}..${syn.maxSteps}`);
    a.push("--max-value", String(syn.maxValue), "--digits", String(syn.digits));
    const all = FAMILIES.every((f) => syn.families.includes(f));
    if (!all) a.push("--families", syn.families.join(","));
  }
  if (info.augment) a.push("--augment", String(info.augment.variants));
  const seed = syn?.seed ?? info.augment?.seed ?? 0;
  if (seed !== 0) a.push("--seed", String(seed));
  for (const f of info.exclude?.files ?? []) a.push("--exclude", shellWord(f));
  return a.join(" ");
}
