/**
 * The `deno task build-dataset` command that builds one split of a dataset directory again,
 * from what its manifest recorded: the advice of the errors that find the split damaged.
 *
 * @module
 */
import { DEFAULT_SHARD_SIZE, type Manifest, type SplitInfo } from "./manifest.ts";
import { FAMILIES } from "./synthetic.ts";

/** A word as a POSIX shell reads it back: quoted where it holds anything but plain characters. */
function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * The command that rebuilds split `split` (its manifest entry `info`) into `dir`: its input
 * files, the options its manifest records that differ from the defaults, its generated
 * problems, augmentation, `--exclude` files and shard size. The directory's tokenizer, K, c
 * and CoT form are reused by a build into it, so they are not repeated. What the command line
 * cannot give (generated problems numbered from other than 1, an augmentation seeded apart
 * from the generated problems: builds through the library) is said after the command.
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
  if (o.shardSize !== DEFAULT_SHARD_SIZE) a.push("--shard-size", String(o.shardSize));
  const beyond: string[] = [];
  if ((syn?.start ?? 1) !== 1) beyond.push(`generated problems numbered from ${syn?.start}`);
  if (syn && info.augment && info.augment.seed !== syn.seed) {
    beyond.push(`an augmentation seed (${info.augment.seed}) apart from the generated problems'`);
  }
  const note = beyond.length === 0
    ? ""
    : ` (the command line cannot give ${beyond.join(" or ")}: build the split through ` +
      `buildDataset with the manifest's options)`;
  return a.join(" ") + note;
}

/**
 * The commands that build a dataset (its manifest `manifest`) again into the new directory
 * `to`, split by split in the manifest's order: each split's
 * {@linkcode rebuildCommand}, the first with the dataset's tokenizer, K, c and CoT form (a
 * tokenizer of kind `file` as `TOKENIZER.json`, the file it was built with), which the builds
 * after it reuse. A compact tokenizer is fitted to the first split's texts, as it was.
 *
 * @example
 * ```ts ignore
 * import { readManifest } from "./manifest.ts";
 * import { rebuildDatasetCommands } from "./rebuild_command.ts";
 * const m = await readManifest("out/data/gsm8k");
 * console.log(rebuildDatasetCommands(m, "out/data/gsm8k-new").join("\n"));
 * ```
 */
export function rebuildDatasetCommands(manifest: Manifest, to: string): string[] {
  const { options, tokenizer } = manifest;
  const tok = tokenizer.kind === "file" ? "TOKENIZER.json" : tokenizer.kind;
  return Object.entries(manifest.splits).map(([name, info], i) => {
    const command = rebuildCommand(to, name, info);
    if (i > 0) return command;
    const shape = ` --tokenizer ${tok} --k ${options.k} --c ${options.c} --cot ${options.cot}`;
    const at = command.indexOf(" --split ");
    return command.slice(0, at) + shape + command.slice(at);
  });
}
