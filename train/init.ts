/**
 * What a run starts from (`--init`): the weights file a path names, the settings of a
 * checkpoint or export of this project, the preset they fix, and the checks that refuse
 * weights or a tokenizer a run cannot start from, made before the dataset loads.
 *
 * @module
 */

import { modelConfigFromLlamaJson } from "../model/hf_llama.ts";
import {
  type Arch,
  archOf,
  type ModelConfig,
  PRESET_NAMES,
  presetConfig,
  presetForArch,
  type PresetName,
} from "../model/config.ts";
import { TrainConfigError } from "./options.ts";
import { checkpointDirOf, type LotusMeta, LotusMetaSchema } from "../model/checkpoint.ts";
import { type Tokenizer, tokenizerDifference, tokenizerFromJson } from "../pipeline/tokenizer.ts";
import { readSafetensorsHeader } from "../base/safetensors.ts";
import { fieldIssue } from "../base/json.ts";
import { splitPath } from "../base/staging.ts";
import { exists, rethrowIfDenied } from "../base/exists.ts";

/**
 * The weights file `--init` names: a model.safetensors, or a run, checkpoint or model directory
 * (a CoT run's, say), whose model.safetensors it takes.
 */
export async function initFile(path: string): Promise<string> {
  let dir = false;
  try {
    dir = (await Deno.stat(path)).isDirectory;
  } catch (e) {
    rethrowIfDenied(e);
    throw new TrainConfigError("--init", `--init ${path}: not found`);
  }
  if (!dir) return path;
  const ck = checkpointDirOf(path);
  // A bare directory of weights (no config.json) is read as it is, not as a run.
  if (ck !== path && !(await exists(ck)) && (await exists(`${path}/model.safetensors`))) {
    return `${path}/model.safetensors`;
  }
  return `${ck}/model.safetensors`;
}

/**
 * Refuses a dataset whose tokenizer is not that of the Hugging Face Llama directory `dir` (its
 * tokenizer.json with the LOTUS tokens appended): its ids would index other tokens' rows. A
 * directory without a tokenizer.json cannot tell a padded vocabulary (`vocabSize`, its
 * config.json's, above its tokenizer's ids) from another tokenizer's: a dataset with fewer ids
 * than that is refused there; one with as many or more is taken as built with its tokenizer.
 */
export async function checkLlamaTokenizer(
  dir: string,
  vocabSize: number,
  tok: Tokenizer,
  dataDir: string,
): Promise<void> {
  const path = `${dir}/tokenizer.json`;
  let text: string | null = null;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    rethrowIfDenied(e);
  }
  if (text === null) {
    if (tok.vocabSize >= vocabSize) return;
    throw new TrainConfigError(
      "--init",
      `--init ${dir}: its config.json's vocab_size is ${vocabSize}, more than the dataset's ` +
        `vocabulary (${tok.vocabSize}), and it has no tokenizer.json to tell a padded ` +
        `vocabulary from another tokenizer: put the model's tokenizer.json there, and build ` +
        `the dataset with it (--tokenizer)`,
    );
  }
  const diff = tokenizerDifference(text, tok, path);
  if (diff !== null) {
    throw new TrainConfigError(
      "--init",
      `--init ${dir}: the dataset ${dataDir} was not built with this model's tokenizer ` +
        `(${diff}): build it with --tokenizer ${path}`,
    );
  }
}

/** What `--init` accepts, for the messages that refuse one. */
const INIT_TAKES = "--init takes a Hugging Face GPT-2 model.safetensors, a run, checkpoint or " +
  "export directory of this project (or its model.safetensors), or a downloaded Hugging Face " +
  "Llama directory";

/**
 * Checks, before the dataset loads, that `--init` (not a Hugging Face Llama directory, which
 * its loader checks) names weights: a safetensors file whose header reads. A file of another
 * kind, or a directory without model.safetensors where one is looked for, is a
 * {@linkcode TrainConfigError} naming --init and what it takes. `ours`: `init` is a checkpoint
 * or export of this project (its config.json read already); otherwise a directory whose
 * config.json names a model type this project cannot load is refused as such first.
 */
export async function checkInitWeights(init: string, ours: boolean): Promise<void> {
  if (!ours && (await initIsDirectory(init))) await refuseOtherModelType(init);
  const file = await initFile(init);
  try {
    await readSafetensorsHeader(file);
  } catch (e) {
    rethrowIfDenied(e);
    const what = !(await exists(file))
      ? `${init} is a directory without ${file.slice(init.replace(/\/+$/, "").length + 1)}`
      : file === init
      ? `not a safetensors file (${(e as Error).message})`
      : `${file} is not a safetensors file (${(e as Error).message})`;
    throw new TrainConfigError("--init", `--init ${init}: ${what}; ${INIT_TAKES}`);
  }
}

/**
 * Refuses an `--init` directory whose config.json names a model type this project cannot
 * load (Hugging Face GPT-2 and Llama are the two), rather than failing later on tensor names.
 */
export async function refuseOtherModelType(dir: string): Promise<void> {
  let type: unknown;
  try {
    type = JSON.parse(await Deno.readTextFile(`${dir}/config.json`))?.model_type;
  } catch (e) {
    rethrowIfDenied(e);
    return; // no readable config.json: the weights' names decide
  }
  if (typeof type === "string" && type !== "gpt2" && type !== "llama") {
    throw new TrainConfigError(
      "--init",
      `${dir}/config.json: model_type "${type}" is not one this project loads (gpt2, llama); ` +
        `start from a Hugging Face GPT-2 or Llama model`,
    );
  }
}

/** What `--init` says of itself when it is this project's checkpoint or export. */
export interface InitMeta {
  /** The directory holding the weights, the tokenizer and the settings. */
  dir: string;
  /** The run's settings: config.json's "lotus" section, or an export's lotus.json. */
  meta: LotusMeta;
}

/**
 * The settings of the model `--init` names, when it is a checkpoint of this project (its
 * config.json has a "lotus" section) or an export of one (lotus.json): the model's shape, the
 * preset and the mode it trained in. Null for other weights (a Hugging Face download).
 */
export async function initMetaOf(init: string): Promise<InitMeta | null> {
  let isDirArg = false;
  try {
    isDirArg = (await Deno.stat(init)).isDirectory;
  } catch (e) {
    rethrowIfDenied(e);
    return null; // initFile says it is not found
  }
  const dir = isDirArg ? checkpointDirOf(init) : splitPath(init).parent;
  const read = async (path: string): Promise<unknown> => {
    try {
      return JSON.parse(await Deno.readTextFile(path));
    } catch (e) {
      rethrowIfDenied(e);
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw new TrainConfigError("--init", `${path}: unreadable (${(e as Error).message})`);
    }
  };
  const parse = (raw: unknown, path: string): InitMeta => {
    const r = LotusMetaSchema.safeParse(raw);
    if (!r.success) {
      throw new TrainConfigError(
        "--init",
        `${path}: ${fieldIssue(r.error)}; not a checkpoint of this project that --init can ` +
          `start from`,
      );
    }
    return { dir, meta: r.data };
  };
  const cfg = await read(`${dir}/config.json`);
  if (cfg !== null && typeof cfg === "object" && "lotus" in cfg) {
    return parse((cfg as { lotus: unknown }).lotus, `${dir}/config.json`);
  }
  const lotusJson = await read(`${dir}/lotus.json`);
  if (lotusJson !== null && typeof lotusJson === "object" && "lotus" in lotusJson) {
    return parse((lotusJson as { lotus: unknown }).lotus, `${dir}/lotus.json`);
  }
  return null;
}

/**
 * Refuses weights to start from (`--init`) whose run used another tokenizer than the dataset's:
 * their embedding rows would land on ids that mean other tokens. Only a checkpoint or export of
 * this project says which tokenizer it used; Hugging Face weights are taken as they are. Two
 * tokenizer.json texts with the same token under every id are the same tokenizer.
 */
export async function checkInitTokenizer(
  dir: string,
  tok: Tokenizer,
  init: string,
  dataDir: string,
): Promise<void> {
  let text: string, theirs: Tokenizer;
  try {
    text = await Deno.readTextFile(`${dir}/tokenizer.json`);
    theirs = tokenizerFromJson(text, "file", `${dir}/tokenizer.json`);
  } catch (e) {
    rethrowIfDenied(e);
    return; // nothing readable to compare: loading the weights checks their shapes
  }
  if (theirs.sha256 === tok.sha256) return;
  // The same tokens under the same ids, written another way, are the same tokenizer.
  let differ = -1;
  if (theirs.vocabSize === tok.vocabSize) {
    for (let id = 0; differ < 0 && id < tok.vocabSize; id++) {
      if (theirs.decode([id]) !== tok.decode([id])) differ = id;
    }
    if (differ < 0) return;
  }
  // Two tokenizers of one size (two compact ones fitted to other texts) differ in a token.
  const how = differ < 0
    ? `${dir}/tokenizer.json: ${theirs.vocabSize} ids, --data's ${tok.vocabSize}`
    : `${dir}/tokenizer.json and --data's both have ${tok.vocabSize} ids, but id ${differ} is ` +
      `${JSON.stringify(theirs.decode([differ]))} there and ${
        JSON.stringify(tok.decode([differ]))
      } in --data's`;
  throw new TrainConfigError(
    "--init",
    `--init ${init} was trained with another tokenizer than --data ${dataDir} uses (${how}); ` +
      `its token rows would stand for other tokens: start from a run on a dataset built with ` +
      `the same tokenizer (build-dataset --tokenizer ${dir}/tokenizer.json)`,
  );
}

/**
 * The preset of a run started from `--init`: a checkpoint or export of this project fixes the
 * model's shape, so a `--preset` or `--arch` that names another is refused; a Hugging Face
 * Llama directory is a Llama, so `--arch gpt2` is refused. Otherwise `fallback`, then --arch's
 * counterpart.
 */
export function initPreset(
  opts: { init?: string; preset?: PresetName; arch?: Arch },
  initMeta: InitMeta | null,
  hfLlama: boolean,
  fallback: PresetName,
): PresetName {
  if (initMeta) {
    const theirs = initMeta.meta.preset, arch = archOf(initMeta.meta.model);
    const known = (PRESET_NAMES as readonly string[]).includes(theirs);
    if (opts.preset !== undefined && opts.preset !== theirs) {
      throw new TrainConfigError(
        "--preset",
        `--preset ${opts.preset}: --init ${opts.init} holds a ${theirs} model (${arch}), ` +
          `whose shape the run takes; leave --preset out`,
      );
    }
    if (opts.arch !== undefined && opts.arch !== arch) {
      throw new TrainConfigError(
        "--arch",
        `--arch ${opts.arch}: --init ${opts.init} holds a ${arch} model, whose shape the run ` +
          `takes; leave --arch out`,
      );
    }
    return known ? theirs as PresetName : fallback;
  }
  if (hfLlama && opts.arch === "gpt2") {
    throw new TrainConfigError(
      "--arch",
      `--arch gpt2: --init ${opts.init} is a Hugging Face Llama model; leave --arch out`,
    );
  }
  if (!opts.arch) return fallback;
  try {
    return presetForArch(fallback, opts.arch);
  } catch (e) {
    throw new TrainConfigError("--arch", (e as Error).message);
  }
}

/** The Llama preset nearest a Hugging Face Llama config.json in size (for its defaults). */
export function llamaPresetOf(json: unknown): PresetName {
  const hidden = Number((json as Record<string, unknown>).hidden_size);
  return hidden >= 3072 ? "llama-3b" : hidden >= 1024 ? "llama-1b" : "llama-tiny";
}

/**
 * The model config of a run that starts from no model of this project: that of the Hugging Face
 * Llama `config.json` `llamaJson` read from `llamaDir` when there is one, else the preset's.
 */
export function freshModelConfig(
  preset: PresetName,
  llamaDir: string | null,
  llamaJson: unknown | null,
  vocabSize: number,
  auxLayers: number,
): ModelConfig {
  return llamaJson !== null
    ? modelConfigFromLlamaJson(llamaJson, vocabSize, auxLayers, `${llamaDir}/config.json`)
    : presetConfig(preset, vocabSize, auxLayers);
}

/** Whether `--init` names a directory; a path that does not exist is an error naming it. */
export async function initIsDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch (e) {
    rethrowIfDenied(e);
    throw new TrainConfigError("--init", `--init ${path}: not found`);
  }
}
