/**
 * Atomic file writes: write to a temporary file beside the target, then rename. A reader (or
 * an interrupted run) sees either the old file or the new one, never half of one.
 *
 * @module
 */

let counter = 0;

/** A temporary path in the same directory as `path` (so rename stays on one filesystem). */
export function tempPathFor(path: string): string {
  counter++;
  return `${path}.tmp-${Deno.pid}-${counter}`;
}

/**
 * Write `data` to `path` atomically.
 *
 * @example
 * ```ts
 * import { writeFileAtomic } from "./atomic.ts";
 * const dir = await Deno.makeTempDir();
 * await writeFileAtomic(`${dir}/a.txt`, "hello\n");
 * ```
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = tempPathFor(path);
  try {
    if (typeof data === "string") await Deno.writeTextFile(tmp, data);
    else await Deno.writeFile(tmp, data);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/** Synchronous twin of {@linkcode writeFileAtomic}. */
export function writeFileAtomicSync(path: string, data: string | Uint8Array): void {
  const tmp = tempPathFor(path);
  try {
    if (typeof data === "string") Deno.writeTextFileSync(tmp, data);
    else Deno.writeFileSync(tmp, data);
    Deno.renameSync(tmp, path);
  } catch (e) {
    try {
      Deno.removeSync(tmp);
    } catch { /* already gone */ }
    throw e;
  }
}

/**
 * A file written in pieces that appears at `path` only when {@linkcode AtomicFile.commit}
 * is called; {@linkcode AtomicFile.abort} removes the partial file.
 */
export class AtomicFile {
  /** The final path. */
  readonly path: string;
  /** The temporary path being written. */
  readonly tmp: string;
  #file: Deno.FsFile;
  #done = false;

  private constructor(path: string, tmp: string, file: Deno.FsFile) {
    this.path = path;
    this.tmp = tmp;
    this.#file = file;
  }

  /** Open a new temporary file for `path`. */
  static async create(path: string): Promise<AtomicFile> {
    const tmp = tempPathFor(path);
    const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
    return new AtomicFile(path, tmp, file);
  }

  /** Append bytes. */
  async write(data: Uint8Array): Promise<void> {
    let off = 0;
    while (off < data.byteLength) off += await this.#file.write(data.subarray(off));
  }

  /** Close and rename into place. */
  async commit(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    this.#file.close();
    await Deno.rename(this.tmp, this.path);
  }

  /** Close and delete the temporary file. Safe to call after commit (does nothing). */
  async abort(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    try {
      this.#file.close();
    } catch { /* already closed */ }
    await Deno.remove(this.tmp).catch(() => {});
  }
}
