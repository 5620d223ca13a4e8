/**
 * Reading a buffer's worth from a file: a single `read` may return fewer bytes than asked for
 * before the end of the file, so the loop that fills a buffer lives here once.
 *
 * @example
 * ```ts
 * import { readFull } from "./read_full.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.writeTextFile(path, "abc");
 * using f = await Deno.open(path);
 * const buf = new Uint8Array(8);
 * console.assert((await readFull(f, buf)) === 3); // the file ends first
 * ```
 *
 * @module
 */

/** Something to read bytes from, as `Deno.FsFile` is. */
export interface ByteSource {
  /** Read into `p`; the count read, or null at the end. */
  read(p: Uint8Array): Promise<number | null>;
}

/**
 * Fill `buf` from `file`'s current position. Returns the bytes read: `buf.length`, or fewer
 * when the file ends first.
 */
export async function readFull(file: ByteSource, buf: Uint8Array): Promise<number> {
  let got = 0;
  while (got < buf.length) {
    const k = await file.read(buf.subarray(got));
    if (k === null) break;
    got += k;
  }
  return got;
}
