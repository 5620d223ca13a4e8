/**
 * A checksums record for a set of files in one directory: each file's size and the SHA-256 of
 * each 64 MiB piece, written as JSON beside the files. Web Crypto has no incremental digest, so
 * a file is hashed a piece at a time: writing or verifying a record never holds a whole file in
 * memory, whatever its size. Checkpoints record their files this way (`checksums.json`), and so
 * does the ONNX cache of a checkpoint.
 *
 * @example
 * ```ts
 * import { checksumMismatch, readChecksums, verifyChecksums, writeChecksums } from "./checksums.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/a.txt`, "abc");
 * await writeChecksums(dir, ["a.txt"]);
 * const sums = (await readChecksums(`${dir}/checksums.json`))!;
 * console.assert((await verifyChecksums(dir, sums)) === null);
 * await Deno.writeTextFile(`${dir}/a.txt`, "abd");
 * console.assert((await checksumMismatch(dir, "a.txt", sums)) !== null);
 * ```
 *
 * @module
 */
import { z } from "zod";
import { sha256HexAsync } from "./sha256.ts";
import { readFull } from "./read_full.ts";
import { writeFileAtomic } from "./atomic.ts";
import { rethrowIfDenied } from "./exists.ts";
import { parseJsonAs } from "./json.ts";

/** The usual name of a checksums record, in the directory of the files it records. */
export const CHECKSUMS_FILE = "checksums.json";

/** The bytes of a piece: each piece of a file has its own SHA-256 in a record. */
export const CHECKSUM_PIECE = 64 << 20;

/** The largest piece a record may name: a verification holds one piece in memory. */
const MAX_PIECE = 1 << 30;

/** The zod schema of {@linkcode Checksums}. */
export const ChecksumsSchema = z.object({
  format: z.literal("lotus-checksums"),
  version: z.literal(1),
  pieceBytes: z.number().int().positive().max(MAX_PIECE),
  files: z.record(
    z.string(),
    z.object({
      bytes: z.number().int().nonnegative(),
      sha256: z.array(z.string().regex(/^[0-9a-f]{64}$/)),
    }),
  ),
});

/** A checksums record: by file name (relative to its directory), its size and piece digests. */
export type Checksums = z.infer<typeof ChecksumsSchema>;

/** One file's size and the SHA-256 of each of its pieces. */
export type FileChecksum = Checksums["files"][string];

/** A checksums record that cannot be read or parsed; the message names the file. */
export class ChecksumsError extends Error {
  /** `message` starts with the record's path. */
  constructor(message: string) {
    super(message);
    this.name = "ChecksumsError";
  }
}

/** The size of `bytes` and the SHA-256 of each `piece`-byte piece. */
export async function bytesChecksum(
  bytes: Uint8Array,
  piece: number = CHECKSUM_PIECE,
): Promise<FileChecksum> {
  const sha256: string[] = [];
  for (let i = 0; i < bytes.length; i += piece) {
    sha256.push(await sha256HexAsync(bytes.subarray(i, Math.min(bytes.length, i + piece))));
  }
  return { bytes: bytes.length, sha256 };
}

/** The size of file `path` and the SHA-256 of each `piece`-byte piece, read a piece at a time. */
export async function fileChecksum(
  path: string,
  piece: number = CHECKSUM_PIECE,
): Promise<FileChecksum> {
  using f = await Deno.open(path, { read: true });
  const buf = new Uint8Array(piece), sha256: string[] = [];
  let bytes = 0;
  for (;;) {
    const got = await readFull(f, buf);
    if (got === 0) break;
    sha256.push(await sha256HexAsync(buf.subarray(0, got)));
    bytes += got;
    if (got < buf.length) break;
  }
  return { bytes, sha256 };
}

/**
 * Record the size and piece digests of each of `names` (paths relative to `dir`) in
 * `dir/<record>`, written atomically.
 */
export async function writeChecksums(
  dir: string,
  names: readonly string[],
  record: string = CHECKSUMS_FILE,
): Promise<void> {
  const files: Checksums["files"] = {};
  for (const name of names) files[name] = await fileChecksum(`${dir}/${name}`);
  const json: Checksums = {
    format: "lotus-checksums",
    version: 1,
    pieceBytes: CHECKSUM_PIECE,
    files,
  };
  await writeFileAtomic(`${dir}/${record}`, JSON.stringify(json, null, 2) + "\n");
}

/**
 * The checksums record at `path`, or null when there is none.
 *
 * @throws {ChecksumsError} when it cannot be read, is not JSON, or is not a record (its message
 * starts with `path`).
 */
export async function readChecksums(path: string): Promise<Checksums | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    rethrowIfDenied(e);
    if (e instanceof Deno.errors.NotFound) return null;
    throw new ChecksumsError(`${path}: cannot read (${(e as Error).message})`);
  }
  const r = parseJsonAs(ChecksumsSchema, text, path);
  if (!r.ok) throw new ChecksumsError(r.message);
  for (const name of Object.keys(r.data.files)) {
    if (name === "" || name.startsWith("/") || name.split("/").includes("..")) {
      throw new ChecksumsError(`${path}: names a file outside its directory (${name})`);
    }
  }
  return r.data;
}

/**
 * How file `name` of `dir` differs from its record in `sums`, in a few words; null when it
 * matches, or when `sums` is null or has no record of it. `have`: the file's bytes, already
 * read; or its size alone (`{ size }`), to compare sizes only; omitted, the file is read a
 * piece at a time.
 */
export async function checksumMismatch(
  dir: string,
  name: string,
  sums: Checksums | null,
  have?: Uint8Array | { size: number },
): Promise<string | null> {
  const want = sums?.files[name];
  if (!want) return null;
  let size: number;
  let digests: (() => Promise<string[]>) | null;
  if (have instanceof Uint8Array) {
    size = have.length;
    digests = async () => (await bytesChecksum(have, sums!.pieceBytes)).sha256;
  } else if (have) {
    size = have.size;
    digests = null;
  } else {
    const path = `${dir}/${name}`;
    try {
      size = (await Deno.stat(path)).size;
    } catch (e) {
      rethrowIfDenied(e);
      return e instanceof Deno.errors.NotFound
        ? "missing"
        : `cannot be read (${(e as Error).message.split("\n")[0]})`;
    }
    digests = async () => (await fileChecksum(path, sums!.pieceBytes)).sha256;
  }
  if (size !== want.bytes) return `${size} bytes where ${want.bytes} were recorded`;
  if (digests && (await digests()).join() !== want.sha256.join()) {
    return "its sha256 is not the one recorded";
  }
  return null;
}

/**
 * The first file recorded in `sums` that is not, in `dir`, what the record says: its name and
 * how it differs ({@linkcode checksumMismatch}, each file read a piece at a time); null when
 * every file matches.
 */
export async function verifyChecksums(
  dir: string,
  sums: Checksums,
): Promise<{ name: string; problem: string } | null> {
  for (const name of Object.keys(sums.files)) {
    let problem: string | null;
    try {
      problem = await checksumMismatch(dir, name, sums);
    } catch (e) {
      rethrowIfDenied(e);
      problem = `cannot be read (${(e as Error).message.split("\n")[0]})`;
    }
    if (problem !== null) return { name, problem };
  }
  return null;
}
