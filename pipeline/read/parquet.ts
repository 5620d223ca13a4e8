/**
 * Parquet reader (hyparquet), one row group at a time: GSM8K's Hugging Face files (columns
 * `question`, `answer` with `#### N`) and GSM8K-Aug(-NL)'s layout (`question`, `cot`,
 * `answer`). A record's `line` is its 1-based row number.
 *
 * Two checks hyparquet does not make: strings are decoded as strict UTF-8 (a cell that is not
 * UTF-8 makes its row an error, not a U+FFFD), and every page whose header carries a CRC-32
 * is verified before its row group is decoded (hyparquet parses the `crc` field but does not
 * check it). A page without one cannot be checked: a flipped bit there goes unnoticed.
 *
 * @module
 */
import {
  type AsyncBuffer,
  type FileMetaData,
  type PageHeader,
  parquetMetadataAsync,
  parquetReadObjects,
  parquetSchema,
  type RowGroup,
} from "hyparquet";
import { parquetHeader } from "hyparquet/src/column.js";
import { crc32 } from "../../base/crc32.ts";
import type { Problem } from "../types.ts";
import { FILE_HINT, InputError } from "./input_error.ts";
import { openInput } from "./open.ts";
import { gsm8kProblem, nlProblem } from "./jsonl.ts";
import { firstInvalidUtf8, hexByte, UTF8_HINT } from "./utf8.ts";

/** The hint for a damaged file. */
const DAMAGED_HINT = "the file is damaged: fetch or write it again";

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

/** A string cell whose bytes are not UTF-8; its row becomes an error. */
class InvalidText {
  /** `index` is the offset of the first bad byte in the value, `byte` that byte. */
  constructor(readonly index: number, readonly byte: number) {}
}

const strict = new TextDecoder("utf-8", { fatal: true });

/** hyparquet's string parser, made strict. */
const PARSERS = {
  stringFromBytes(bytes: Uint8Array | undefined): string | InvalidText | undefined {
    if (!bytes) return bytes;
    try {
      return strict.decode(bytes);
    } catch {
      const i = Math.max(0, firstInvalidUtf8(bytes));
      return new InvalidText(i, bytes[i]);
    }
  },
};

const hex32 = (n: number) => `0x${(n >>> 0).toString(16).padStart(8, "0")}`;

/**
 * Verifies the CRC-32 of every page of the given columns of one row group whose header has
 * one; the CRC covers the page's bytes as stored (after compression), not its header.
 * Rows are 1-based and counted from `rowStart` (0-based).
 */
async function verifyPageChecksums(
  path: string,
  buf: AsyncBuffer,
  group: RowGroup,
  columns: string[],
  rowStart: number,
): Promise<void> {
  const groupRows = `rows ${rowStart + 1}-${rowStart + Number(group.num_rows)}`;
  for (const chunk of group.columns) {
    const m = chunk.meta_data;
    const name = m?.path_in_schema[0];
    if (!m || name === undefined || !columns.includes(name)) continue;
    const start = Number(m.dictionary_page_offset || m.data_page_offset);
    const bytes = new Uint8Array(await buf.slice(start, start + Number(m.total_compressed_size)));
    const reader = {
      view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength),
      offset: 0,
    };
    let row = rowStart;
    while (reader.offset < bytes.length) {
      let header: PageHeader;
      try {
        header = parquetHeader(reader);
      } catch (e) {
        throw new InputError({
          file: path,
          line: 0,
          field: name,
          offset: start + reader.offset,
          reason: "checksum_mismatch",
          problem: `cannot read a page header of ${groupRows} (${(e as Error).message})`,
          hint: DAMAGED_HINT,
          cause: e,
        });
      }
      const at = reader.offset;
      const body = bytes.subarray(at, at + header.compressed_page_size);
      reader.offset += header.compressed_page_size;
      const rows = header.data_page_header?.num_values ?? header.data_page_header_v2?.num_rows;
      const what = rows === undefined
        ? `the dictionary page of ${groupRows}`
        : `the page of rows ${row + 1}-${row + rows}`;
      if (rows !== undefined) row += rows;
      if (header.crc === undefined) continue;
      const computed = crc32(body);
      if ((computed | 0) !== (header.crc | 0)) {
        throw new InputError({
          file: path,
          line: 0,
          field: name,
          offset: start + at,
          reason: "checksum_mismatch",
          problem: `${what} (byte offset ${start + at}) fails its CRC-32 check (stored ` +
            `${hex32(header.crc)}, computed ${hex32(computed)})`,
          hint: DAMAGED_HINT,
        });
      }
    }
  }
}

/**
 * Streams a Parquet file's records. A file without `question` and `answer` columns is a
 * file-level error, thrown whatever the error policy; so is a file hyparquet cannot decode
 * and a page whose CRC-32 does not match. A cell that is not UTF-8 comes out as an InputError
 * naming its row and column, in place.
 */
export async function* readParquet(path: string): AsyncGenerator<Problem | InputError> {
  const file = await openInput(path);
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
      await verifyPageChecksums(path, buf, group, columns, rowStart);
      let rows: Record<string, unknown>[];
      try {
        rows = await parquetReadObjects({
          file: buf,
          metadata: md,
          columns,
          rowStart,
          rowEnd,
          parsers: PARSERS,
        });
      } catch (e) {
        throw fileError(
          path,
          `cannot decode rows ${rowStart + 1}-${rowEnd} (${(e as Error).message})`,
          e,
        );
      }
      rows: for (let i = 0; i < rows.length; i++) {
        const line = rowStart + i + 1;
        for (const field of columns) {
          const v = rows[i][field];
          if (!(v instanceof InvalidText)) continue;
          yield new InputError({
            file: path,
            line,
            field,
            reason: "invalid_utf8",
            problem: `invalid UTF-8: byte ${hexByte(v.byte)} at byte ${v.index} of the value`,
            hint: UTF8_HINT,
          });
          continue rows;
        }
        // An integer column of 64 bits (pandas writes integer answers so) reads as bigint:
        // its decimal digits are the answer as written, past 2^53 too.
        for (const field of columns) {
          const v = rows[i][field];
          if (typeof v === "bigint") rows[i][field] = v.toString();
        }
        yield toProblem(rows[i], { file: path, line });
      }
      rowStart = rowEnd;
    }
  } finally {
    file.close();
  }
}
