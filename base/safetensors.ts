/**
 * Reading and writing the safetensors format: an 8-byte little-endian header length, a JSON
 * header `{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {..}}` padded
 * with spaces to a multiple of 8 bytes, then the raw little-endian tensor bytes.
 *
 * Hand-written because no maintained safetensors package exists on the npm registry, and the
 * format is small enough to own: Python's `safetensors` and numpy read these files as they
 * are (tests/safetensors_test.ts checks the layout byte by byte).
 *
 * @module
 */

import { AtomicFile } from "./atomic.ts";
import { readFull } from "./read_full.ts";

/** The dtypes this module reads and writes, with their typed-array views. */
export type Dtype =
  | "F32"
  | "F64"
  | "I32"
  | "I64"
  | "I16"
  | "I8"
  | "U8"
  | "U16"
  | "U32"
  | "BF16"
  | "F16";

/** A typed array matching one of the {@linkcode Dtype}s. BF16 and F16 are raw Uint16 bits. */
export type TensorData =
  | Float32Array
  | Float64Array
  | Int32Array
  | BigInt64Array
  | Int16Array
  | Int8Array
  | Uint8Array
  | Uint16Array
  | Uint32Array;

/** A named tensor: dtype, shape and data (row-major). */
export interface Tensor {
  /** Element type. */
  dtype: Dtype;
  /** Dimensions; the product must equal the element count of `data`. */
  shape: number[];
  /** The elements. */
  data: TensorData;
}

/** Raised for a malformed safetensors file, naming the file and what is wrong. */
export class SafetensorsError extends Error {
  /** Create an error. */
  constructor(message: string) {
    super(message);
    this.name = "SafetensorsError";
  }
}

const BYTES: Record<Dtype, number> = {
  F32: 4,
  F64: 8,
  I32: 4,
  I64: 8,
  I16: 2,
  I8: 1,
  U8: 1,
  U16: 2,
  U32: 4,
  BF16: 2,
  F16: 2,
};

function viewOf(dtype: Dtype, buf: ArrayBuffer, off: number, n: number): TensorData {
  switch (dtype) {
    case "F32":
      return new Float32Array(buf, off, n);
    case "F64":
      return new Float64Array(buf, off, n);
    case "I32":
      return new Int32Array(buf, off, n);
    case "I64":
      return new BigInt64Array(buf, off, n);
    case "I16":
      return new Int16Array(buf, off, n);
    case "I8":
      return new Int8Array(buf, off, n);
    case "U8":
      return new Uint8Array(buf, off, n);
    case "U16":
    case "BF16":
    case "F16":
      return new Uint16Array(buf, off, n);
    case "U32":
      return new Uint32Array(buf, off, n);
  }
}

/** Size in bytes of one element of `dtype`. */
export function dtypeBytes(dtype: Dtype): number {
  return BYTES[dtype];
}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Build the header bytes (length prefix + padded JSON) for tensors in the given order. */
function encodeHeader(
  entries: [string, Tensor][],
  metadata?: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let off = 0;
  for (const [name, t] of entries) {
    if (name === "__metadata__") {
      throw new SafetensorsError(`tensor name "__metadata__" is reserved`);
    }
    const n = numel(t.shape);
    if (n !== t.data.length) {
      throw new SafetensorsError(
        `tensor "${name}": shape [${t.shape}] holds ${n} elements but data has ${t.data.length}`,
      );
    }
    const bytes = n * BYTES[t.dtype];
    if (t.data.byteLength !== bytes) {
      throw new SafetensorsError(`tensor "${name}": data is not of dtype ${t.dtype}`);
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + bytes] };
    off += bytes;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const jsonBytes = new TextEncoder().encode(json);
  // Padding was computed on characters; re-pad on bytes in case of non-ASCII names.
  const pad = (8 - (jsonBytes.length % 8)) % 8;
  const out = new Uint8Array(8 + jsonBytes.length + pad);
  new DataView(out.buffer).setBigUint64(0, BigInt(jsonBytes.length + pad), true);
  out.set(jsonBytes, 8);
  out.fill(0x20, 8 + jsonBytes.length);
  return out;
}

function bytesOf(t: Tensor): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/**
 * Serialise tensors (in insertion order) to safetensors bytes.
 *
 * @example
 * ```ts
 * import { decodeSafetensors, encodeSafetensors } from "./safetensors.ts";
 * const bytes = encodeSafetensors({ x: { dtype: "I32", shape: [2], data: new Int32Array([1, 2]) } });
 * console.assert(decodeSafetensors(bytes).tensors.x.data[1] === 2);
 * ```
 */
export function encodeSafetensors(
  tensors: Record<string, Tensor>,
  metadata?: Record<string, string>,
): Uint8Array {
  const entries = Object.entries(tensors);
  const head = encodeHeader(entries, metadata);
  const total = head.length + entries.reduce((a, [, t]) => a + t.data.byteLength, 0);
  const out = new Uint8Array(total);
  out.set(head, 0);
  let off = head.length;
  for (const [, t] of entries) {
    out.set(bytesOf(t), off);
    off += t.data.byteLength;
  }
  return out;
}

/**
 * Write tensors to `path` atomically, streaming each tensor's bytes (no full copy in memory).
 * `metadata` becomes the header's `__metadata__` map (Hugging Face transformers expects
 * `{ format: "pt" }` in a model's weights).
 *
 * @example
 * ```ts
 * import { readSafetensors, writeSafetensors } from "./safetensors.ts";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * const w = Float32Array.of(1, 2, 3, 4);
 * await writeSafetensors(path, { w: { dtype: "F32", shape: [2, 2], data: w } }, { format: "pt" });
 * const f = await readSafetensors(path);
 * console.assert(f.tensors.w.data[3] === 4 && f.metadata.format === "pt");
 * await Deno.remove(path);
 * ```
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, Tensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  const entries = Object.entries(tensors);
  const f = await AtomicFile.create(path);
  try {
    await f.write(encodeHeader(entries, metadata));
    for (const [, t] of entries) await f.write(bytesOf(t));
    await f.commit();
  } catch (e) {
    await f.abort();
    throw e;
  }
}

/** The parsed content of a safetensors file. */
export interface SafetensorsFile {
  /** Tensors by name, as views into the file's bytes. */
  tensors: Record<string, Tensor>;
  /** The `__metadata__` map, or `{}`. */
  metadata: Record<string, string>;
}

/** One tensor's entry in a safetensors header. */
export interface TensorEntry {
  /** Element type. */
  dtype: Dtype;
  /** Dimensions. */
  shape: number[];
  /** Its bytes: [begin, end) in the data region after the header. */
  dataOffsets: [number, number];
}

/** A safetensors header, checked against the size of the data region. */
export interface SafetensorsHeader {
  /** Tensor entries by name, in the header's order. */
  tensors: Record<string, TensorEntry>;
  /** The `__metadata__` map, or `{}`. */
  metadata: Record<string, string>;
  /** Bytes before the data region: the 8-byte length and the header. */
  dataStart: number;
}

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/**
 * Parse and check a header. Every entry needs a known dtype, a shape of whole numbers and
 * `data_offsets` whose length is the dtype's size times the element count; sorted by
 * offset, the tensors must tile the data region `[0, dataLen)` exactly, with no byte
 * shared, none left over and none outside it.
 */
function parseHeader(
  head: Uint8Array,
  dataLen: number,
  what: string,
): SafetensorsHeader {
  const fail = (msg: string) =>
    new SafetensorsError(
      `${what}: ${msg}; the file is damaged or was not written by a safetensors writer: ` +
        `replace it with an intact copy`,
    );
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder().decode(head));
  } catch (e) {
    throw new SafetensorsError(`${what}: header is not valid JSON (${(e as Error).message})`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    throw fail("the header is not a JSON object");
  }
  const tensors: Record<string, TensorEntry> = {};
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (raw === null) continue;
      if (
        typeof raw !== "object" || Array.isArray(raw) ||
        Object.values(raw).some((v) => typeof v !== "string")
      ) {
        throw fail(`field "__metadata__" must map names to strings`);
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | null;
    if (!e || typeof e.dtype !== "string" || !(e.dtype in BYTES)) {
      throw new SafetensorsError(`${what}: tensor "${name}" has unsupported dtype ${e?.dtype}`);
    }
    const dtype = e.dtype as Dtype;
    if (!Array.isArray(e.shape) || !e.shape.every(isCount)) {
      throw fail(`tensor "${name}" has shape ${JSON.stringify(e.shape)}, not a list of sizes`);
    }
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2) {
      throw fail(`tensor "${name}" has data_offsets ${JSON.stringify(offs)}, not [begin, end]`);
    }
    const [b, end] = offs;
    if (!isCount(b) || !isCount(end) || end < b) {
      throw fail(`tensor "${name}" has offsets [${b}, ${end}], not a byte range`);
    }
    if (end > dataLen) {
      throw fail(
        `tensor "${name}" has offsets [${b}, ${end}], past the end of the ${dataLen}-byte ` +
          `data region (the file is cut short?)`,
      );
    }
    const shape = e.shape as number[];
    const need = numel(shape) * BYTES[dtype];
    if (end - b !== need) {
      throw fail(
        `tensor "${name}" has offsets [${b}, ${end}] (${end - b} bytes), but shape [${shape}] ` +
          `${dtype} takes ${need} bytes`,
      );
    }
    tensors[name] = { dtype, shape, dataOffsets: [b, end] };
  }
  // Sorted by offset, each tensor starts where the previous one ended: no overlap, no gap.
  const order = Object.entries(tensors).sort(([, x], [, y]) =>
    x.dataOffsets[0] - y.dataOffsets[0] || x.dataOffsets[1] - y.dataOffsets[1]
  );
  let at = 0, prev = "";
  for (const [name, t] of order) {
    const [b, end] = t.dataOffsets;
    if (b < at) {
      throw fail(
        `tensor "${name}" has offsets [${b}, ${end}], which overlap tensor "${prev}" ` +
          `(it ends at ${at})`,
      );
    }
    if (b > at) throw fail(`bytes [${at}, ${b}] of the data region belong to no tensor`);
    if (end > b) prev = name;
    at = end;
  }
  if (at !== dataLen) {
    throw fail(
      `${dataLen - at} bytes after the last tensor (bytes [${at}, ${dataLen}] of the data ` +
        `region) belong to no tensor`,
    );
  }
  return { tensors, metadata, dataStart: 8 + head.length };
}

/**
 * Parse safetensors bytes. Tensors are zero-copy views when the data is aligned, copies
 * otherwise. `what` names the source in error messages.
 *
 * @throws {SafetensorsError} when the header is not a JSON object of valid entries, the
 * tensors' offsets do not tile the data region exactly (out of bounds, overlapping, gaps,
 * bytes left over), or a tensor's dtype and shape do not fit its byte length.
 */
export function decodeSafetensors(bytes: Uint8Array, what = "<bytes>"): SafetensorsFile {
  if (bytes.length < 8) throw new SafetensorsError(`${what}: too short to be a safetensors file`);
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  if (n > bytes.length - 8) {
    throw new SafetensorsError(`${what}: header length ${n} exceeds the file size ${bytes.length}`);
  }
  const h = parseHeader(bytes.subarray(8, 8 + n), bytes.length - 8 - n, what);
  const base = h.dataStart;
  const tensors: Record<string, Tensor> = {};
  for (const [name, e] of Object.entries(h.tensors)) {
    const [b, end] = e.dataOffsets;
    const count = numel(e.shape);
    const abs = bytes.byteOffset + base + b;
    let data: TensorData;
    if (abs % BYTES[e.dtype] === 0) {
      data = viewOf(e.dtype, bytes.buffer as ArrayBuffer, abs, count);
    } else {
      const copy = bytes.slice(base + b, base + end);
      data = viewOf(e.dtype, copy.buffer, 0, count);
    }
    tensors[name] = { dtype: e.dtype, shape: e.shape, data };
  }
  return { tensors, metadata: h.metadata };
}

/**
 * Read and check the header of a safetensors file without reading its tensors: the entries
 * must tile the rest of the file exactly, as {@linkcode decodeSafetensors} requires.
 *
 * @throws {SafetensorsError} when the file cannot be read or its header is not sound.
 *
 * @example
 * ```ts
 * import { readSafetensorsHeader, writeSafetensors } from "./safetensors.ts";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await writeSafetensors(path, { m: { dtype: "F32", shape: [4], data: new Float32Array(4) } });
 * const h = await readSafetensorsHeader(path);
 * console.assert(h.tensors.m.shape[0] === 4 && h.tensors.m.dataOffsets[1] === 16);
 * await Deno.remove(path);
 * ```
 */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { read: true });
  } catch (e) {
    throw new SafetensorsError(`${path}: cannot read (${(e as Error).message})`);
  }
  try {
    const size = (await f.stat()).size;
    const readExactly = async (n: number): Promise<Uint8Array> => {
      const buf = new Uint8Array(n);
      if ((await readFull(f, buf)) < n) {
        throw new SafetensorsError(`${path}: ends inside its header`);
      }
      return buf;
    };
    if (size < 8) throw new SafetensorsError(`${path}: too short to be a safetensors file`);
    const lenBytes = await readExactly(8);
    const n = Number(new DataView(lenBytes.buffer).getBigUint64(0, true));
    if (n > size - 8) {
      throw new SafetensorsError(`${path}: header length ${n} exceeds the file size ${size}`);
    }
    return parseHeader(await readExactly(n), size - 8 - n, path);
  } finally {
    f.close();
  }
}

/**
 * Read and parse a safetensors file. Tensors are views into the file's bytes where aligned.
 *
 * @throws {SafetensorsError} when the file cannot be read or is not a valid safetensors file.
 *
 * @example
 * ```ts
 * import { getTensor, readSafetensors, writeSafetensors } from "./safetensors.ts";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await writeSafetensors(path, { ids: { dtype: "I32", shape: [3], data: Int32Array.of(7, 8, 9) } });
 * const ids = getTensor(await readSafetensors(path), "ids", "I32", [-1]); // an Int32Array
 * console.assert(ids.length === 3 && ids[0] === 7);
 * await Deno.remove(path);
 * ```
 */
export async function readSafetensors(path: string): Promise<SafetensorsFile> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new SafetensorsError(`${path}: cannot read (${(e as Error).message})`);
  }
  return decodeSafetensors(bytes, path);
}

/**
 * The typed array that holds the elements of dtype `D`, as {@linkcode getTensor} returns it
 * (U16, BF16 and F16 as Uint16Array; the half-precision ones as raw bits).
 */
export type ArrayOf<D extends Dtype> = D extends "F32" ? Float32Array
  : D extends "F64" ? Float64Array
  : D extends "I32" ? Int32Array
  : D extends "I64" ? BigInt64Array
  : D extends "I16" ? Int16Array
  : D extends "I8" ? Int8Array
  : D extends "U8" ? Uint8Array
  : D extends "U32" ? Uint32Array
  : Uint16Array;

/**
 * Fetch tensor `name` from a parsed file, checking that it exists, has `dtype`, and (if
 * given) `shape`; -1 in `shape` matches any size. Errors name the file (`what`) and the
 * tensor.
 *
 * @throws {SafetensorsError} when the tensor is missing or its dtype or shape differs.
 */
export function getTensor<D extends Dtype>(
  file: SafetensorsFile,
  name: string,
  dtype: D,
  shape?: number[],
  what = "safetensors file",
): ArrayOf<D> {
  const t = file.tensors[name];
  if (!t) throw new SafetensorsError(`${what}: tensor "${name}" is missing`);
  if (t.dtype !== dtype) {
    throw new SafetensorsError(`${what}: tensor "${name}" has dtype ${t.dtype}, expected ${dtype}`);
  }
  if (
    shape &&
    (shape.length !== t.shape.length || shape.some((d, i) => d !== -1 && d !== t.shape[i]))
  ) {
    throw new SafetensorsError(
      `${what}: tensor "${name}" has shape [${t.shape}], expected [${
        shape.map((d) => d === -1 ? "*" : d)
      }]`,
    );
  }
  return t.data as ArrayOf<D>;
}
