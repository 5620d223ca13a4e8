/**
 * Opening an input file: a path that is missing or names a directory is an
 * {@linkcode InputError} about the whole file, naming it, rather than the system's bare
 * "Is a directory" or "No such file".
 *
 * @module
 */
import { InputError } from "./input_error.ts";
import { rethrowIfDenied } from "../../base/exists.ts";

const HINT = "give the path of a data file";

/** Checks that `path` is a file that can be read, before a reader opens it. */
async function checkFile(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    rethrowIfDenied(e);
    throw new InputError({ file: path, line: 0, problem: "no such file", hint: HINT, cause: e });
  }
  if (info.isDirectory) {
    throw new InputError({
      file: path,
      line: 0,
      problem: "is a directory, not a file",
      hint: HINT,
    });
  }
  if (!info.isFile) throw notRegularFile(path);
}

/**
 * The error for an input that is not a regular file: a pipe (`/dev/stdin`, a FIFO), a device
 * or a socket. An input is read more than once (its format, its checksum, its records), which
 * a stream cannot give: its head would be lost to the first read, or a later open would wait
 * for a writer that is gone.
 */
export function notRegularFile(path: string): InputError {
  return new InputError({
    file: path,
    line: 0,
    problem: "is not a regular file (a pipe such as /dev/stdin, a device or a socket), and " +
      "an input is read more than once (its format, then its records)",
    hint: "save the data to a file first, and give that file",
  });
}

/** `Deno.open(path)` for reading, once `path` is known to be a file. */
export async function openInput(path: string): Promise<Deno.FsFile> {
  await checkFile(path);
  return await Deno.open(path);
}

/** `Deno.readFile(path)`, once `path` is known to be a file. */
export async function readInput(path: string): Promise<Uint8Array> {
  await checkFile(path);
  return await Deno.readFile(path);
}
