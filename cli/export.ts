/**
 * `deno task export`: a checkpoint directory in, a Hugging Face and/or ONNX directory out
 * (docs/export.md). A thin layer over {@linkcode exportCheckpoint} in export/export.ts.
 *
 * @module
 */

import { z } from "zod";
import { exportCheckpoint } from "../export/export.ts";
import { checkExport } from "../export/export_check.ts";
import { cliMain, parseCommandLine } from "./_common.ts";

const HELP = `deno task export --checkpoint DIR --out DIR [--format hf|onnx|both]

Export a checkpoint (or a run directory holding checkpoint/) to standard formats:

  hf     config.json, model.safetensors and the tokenizer files: Python transformers
         loads the directory as GPT2LMHeadModel
  onnx   onnx/model.onnx (token ids in), onnx/model_embeds.onnx (input embeddings in) and
         their shared weights onnx/model.onnx_data, with the same JSON files:
         @huggingface/transformers runs it, and so does --backend onnx of deno task infer
  both   one directory with everything (the default)

Every export also holds lotus.json (K, c, R, the injection and the special-token ids).

  --checkpoint DIR   checkpoint or run directory          (default out/runs/default)
  --out DIR          export directory; an earlier export there is replaced
  --format F         hf | onnx | both                     (default both)
  -h, --help         this help
`;

const ArgsSchema = z.object({
  checkpoint: z.string().min(1).default("out/runs/default"),
  out: z.string({ error: "is required: the export directory" }).min(1),
  format: z.enum(["hf", "onnx", "both"]).default("both"),
});

/** Parse argv into validated options (exported for tests). */
export function parseExportArgs(argv: string[]): z.infer<typeof ArgsSchema> | "help" {
  return parseCommandLine(argv, "export", { strings: ["checkpoint", "out", "format"] }, ArgsSchema);
}

async function main(argv: string[]): Promise<number> {
  const a = parseExportArgs(argv);
  if (a === "help") {
    console.log(HELP);
    return 0;
  }
  const r = await exportCheckpoint(a.checkpoint, a.out, { format: a.format });
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

if (import.meta.main) await cliMain(() => main(Deno.args));
