/**
 * Parquet reader (hyparquet), one row group at a time: GSM8K's Hugging Face files (columns
 * `question`, `answer` with `#### N`) and GSM8K-Aug(-NL)'s layout (`question`, `cot`,
 * `answer`). A record's `line` is its 1-based row number.
 *
 * @module
 */
import {
  type AsyncBuffer,
  type FileMetaData,
  parquetMetadataAsync,
  parquetReadObjects,
  parquetSchema,
} from "hyparquet";
import type { Problem } from "../types.ts";
import { FILE_HINT, InputError } from "./input_error.ts";
import { gsm8kProblem, nlProblem } from "./jsonl.ts";

/** An AsyncBuffer over an open file: hyparquet asks for byte ranges, we read just those. */
function fileBuffer(file: Deno.FsFile, size: number): AsyncBuffer {
  return {
    byteLength: size,
    async slice(start: number, end?: number): Promise<ArrayBuffer> {
      const stop = Math.min(end ?? size, size);
      const out = new Uint8Array(Math.max(0, stop - start));
      await file.seek(start, Deno.SeekMode.Start);
      let off = 0;
      while (off < out.length) {
        const n = await file.read(out.subarray(off));
        if (n === null) break;
        off += n;
      }
      return out.buffer;
    },
  };
}

function fileError(path: string, problem: string, cause?: unknown, field?: string): InputError {
  return new InputError({ file: path, line: 0, field, problem, hint: FILE_HINT, cause });
}

/**
 * Streams a Parquet file's records. A file without `question` and `answer` columns is a
 * file-level error, thrown whatever the error policy; so is a file hyparquet cannot decode.
 */
export async function* readParquet(path: string): AsyncGenerator<Problem | InputError> {
  const file = await Deno.open(path);
  try {
    const buf = fileBuffer(file, (await file.stat()).size);
    let md: FileMetaData;
    try {
      md = await parquetMetadataAsync(buf);
    } catch (e) {
      throw fileError(path, `not a readable Parquet file (${(e as Error).message})`, e);
    }
    const names: string[] = parquetSchema(md).children.map((c) => c.element.name);
    for (const need of ["question", "answer"]) {
      if (!names.includes(need)) {
        throw fileError(
          path,
          `expected a column "${need}", found columns ${names.join(", ")}`,
          undefined,
          need,
        );
      }
    }
    const hasCot = names.includes("cot");
    const columns = hasCot ? ["question", "cot", "answer"] : ["question", "answer"];
    const toProblem = hasCot ? nlProblem : gsm8kProblem;
    let rowStart = 0;
    for (const group of md.row_groups) {
      const rowEnd = rowStart + Number(group.num_rows);
      let rows: Record<string, unknown>[];
      try {
        rows = await parquetReadObjects({ file: buf, metadata: md, columns, rowStart, rowEnd });
      } catch (e) {
        throw fileError(
          path,
          `cannot decode rows ${rowStart + 1}-${rowEnd} (${(e as Error).message})`,
          e,
        );
      }
      for (let i = 0; i < rows.length; i++) {
        yield toProblem(rows[i], { file: path, line: rowStart + i + 1 });
      }
      rowStart = rowEnd;
    }
  } finally {
    file.close();
  }
}
