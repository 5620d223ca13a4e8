/**
 * `deno task export`: a checkpoint directory in, a Hugging Face and/or ONNX directory out
 * (docs/export.md). A thin layer over {@linkcode exportCheckpoint} in export/export.ts.
 *
 * @module
 */

import { exportCheckpoint, ExportError } from "../export/export.ts";
import { signalExitCode, signalTurns, unlessGone, watchStopSignals } from "../base/signals.ts";
import { checkExport } from "../export/export_check.ts";
import { type ArgsOf, cliMain, defineCommand, keptBestNote, nonEmpty, oneOf } from "./_common.ts";

/** `deno task export`, declared. */
export const command = defineCommand({
  name: "export",
  summary: `Export a checkpoint (or a run directory holding checkpoint/) to standard formats \
(docs/export.md):

hf: config.json, model.safetensors and the tokenizer files; Python transformers loads the \
directory as GPT2LMHeadModel (LlamaForCausalLM for a Llama checkpoint).

onnx: onnx/model.onnx (token ids in), onnx/model_embeds.onnx (input embeddings in) and their \
shared weights onnx/model.onnx_data, with the same JSON files, for GPT-2 and Llama checkpoints; \
@huggingface/transformers runs it, and so does --backend onnx of deno task infer.

both: one directory with everything. Every export also holds lotus.json (K, c, R, the injection \
and the special-token ids).`,
  flags: {
    checkpoint: {
      value: "DIR",
      help: "checkpoint or run directory",
      schema: nonEmpty("a directory"),
      default: "out/runs/default",
    },
    out: {
      value: "DIR",
      help: "export directory; an earlier export there is replaced",
      schema: nonEmpty("a directory"),
      required: true,
    },
    format: {
      value: "F",
      help: "what to write",
      schema: oneOf(["hf", "onnx", "both"]),
      default: "both",
    },
  },
  examples: [
    {
      what: "the default run, for transformers and onnxruntime",
      command: "deno task export --checkpoint out/runs/default --out out/export/default",
    },
    {
      what: "the Hugging Face files only",
      command: "deno task export --checkpoint out/runs/default --out out/export/default-hf " +
        "--format hf",
    },
  ],
});

/** Validated `deno task export` values. */
export type ExportArgs = ArgsOf<typeof command>;

/** Parse argv into validated values, or "help" (exported for tests). */
export function parseExportArgs(argv: string[]): ExportArgs | "help" {
  return command.parse(argv);
}

async function main(a: ExportArgs): Promise<number> {
  // SIGINT, SIGTERM or SIGHUP stops the export between its files, which removes what it wrote; the
  // earlier export at --out, if any, stays. A second one ends the process at once (a long
  // load or write in between), leaving the partial export to the next export's sweep. One that
  // comes once the last file is written finds the export complete, and says so.
  const stop = new AbortController();
  const watch = watchStopSignals((sig) => {
    if (stop.signal.aborted) Deno.exit(signalExitCode(sig));
    stop.abort(sig);
  });
  let r;
  try {
    const best = await keptBestNote(a.checkpoint, "exporting");
    if (best) console.error(best);
    r = await exportCheckpoint(a.checkpoint, a.out, { format: a.format, signal: stop.signal });
    await signalTurns();
  } catch (e) {
    if (!stop.signal.aborted || !(e instanceof ExportError)) throw e;
    // After SIGHUP the terminal may be gone: the exit status says how the export ended.
    unlessGone(() => console.error(`error: ${e.message}`));
    return signalExitCode(stop.signal.reason);
  } finally {
    watch.close();
  }
  if (stop.signal.aborted) {
    unlessGone(() =>
      console.error(
        `error: ${stop.signal.reason} came as the export was put in place: it is complete, in ` +
          `${r.dir}`,
      )
    );
    return signalExitCode(stop.signal.reason);
  }
  for (const note of r.notes) console.error(`note: ${note}`);
  const mb = (r.bytes / 1e6).toFixed(1);
  const shape = r.lotus.mode === "lotus"
    ? `K=${r.lotus.K} c=${r.lotus.c} R=${r.lotus.R} (${r.lotus.injection})`
    : `${r.lotus.mode} baseline`;
  console.log(`exported ${r.files.length} files (${mb} MB, ${shape}) to ${r.dir}:`);
  for (const f of r.files) console.log(`  ${f}`);
  // What Python transformers and @huggingface/transformers expect (export/export_check.ts).
  const problems = await checkExport(r.dir);
  if (problems.length > 0) {
    console.error(`the export fails its structural check:\n  ${problems.join("\n  ")}`);
    return 1;
  }
  console.log("structural check: ok");
  return 0;
}

if (import.meta.main) await cliMain(command, main);
