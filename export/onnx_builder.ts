/**
 * A small builder for ONNX graphs of standard operators: named inputs and outputs, nodes
 * whose outputs get fresh names, small inline constants, and weights stored in an external
 * data file that several graphs may share.
 *
 * @module
 */

import {
  AttributeType,
  DataType,
  type OnnxAttribute,
  type OnnxDim,
  type OnnxModel,
  type OnnxNode,
  type OnnxTensor,
  type OnnxValueInfo,
} from "./onnx_proto.ts";

/** An attribute value, tagged with its ONNX type. */
export type Attr =
  | { int: number }
  | { float: number }
  | { ints: number[] }
  | { floats: number[] }
  | { string: string };

/** A dimension: fixed, or a symbolic name such as "batch_size". */
export type Dim = number | string;

/**
 * Weights laid out in one external data file: each tensor at an offset aligned to 4096
 * bytes (the alignment ONNX recommends so that runtimes can map the file).
 */
export class WeightFile {
  /** The file name, relative to the graphs that use it. */
  readonly location: string;
  readonly #parts: { offset: number; data: Float32Array }[] = [];
  readonly #index = new Map<string, { offset: number; length: number; dims: number[] }>();
  #size = 0;

  /** A file that graphs will name as `location`. */
  constructor(location: string) {
    this.location = location;
  }

  /** Add an fp32 tensor (row-major `dims`). */
  add(name: string, dims: number[], data: Float32Array): void {
    const n = dims.reduce((a, b) => a * b, 1);
    if (n !== data.length) {
      throw new RangeError(`weight "${name}": ${data.length} floats do not fill [${dims}]`);
    }
    if (this.#index.has(name)) throw new RangeError(`weight "${name}" added twice`);
    const offset = Math.ceil(this.#size / 4096) * 4096;
    this.#parts.push({ offset, data });
    this.#index.set(name, { offset, length: data.byteLength, dims });
    this.#size = offset + data.byteLength;
  }

  /** Where a tensor lies, or undefined. */
  entry(name: string): { offset: number; length: number; dims: number[] } | undefined {
    return this.#index.get(name);
  }

  /** Size of the file in bytes. */
  get size(): number {
    return this.#size;
  }

  /** Write the file (little-endian fp32, zero padding between tensors). */
  async write(path: string): Promise<void> {
    const f = await Deno.open(path, { write: true, create: true, truncate: true });
    try {
      let at = 0;
      for (const p of this.#parts) {
        if (p.offset > at) await writeAll(f, new Uint8Array(p.offset - at));
        await writeAll(f, new Uint8Array(p.data.buffer, p.data.byteOffset, p.data.byteLength));
        at = p.offset + p.data.byteLength;
      }
    } finally {
      f.close();
    }
  }
}

async function writeAll(f: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await f.write(bytes.subarray(done));
}

function valueInfo(name: string, elemType: number, dims: Dim[]): OnnxValueInfo {
  const dim: OnnxDim[] = dims.map((d) => typeof d === "number" ? { dimValue: d } : { dimParam: d });
  return { name, type: { tensorType: { elemType, shape: { dim } } } };
}

function attribute(name: string, a: Attr): OnnxAttribute {
  if ("int" in a) return { name, type: AttributeType.INT, i: a.int };
  if ("float" in a) return { name, type: AttributeType.FLOAT, f: a.float };
  if ("ints" in a) return { name, type: AttributeType.INTS, ints: a.ints };
  if ("floats" in a) return { name, type: AttributeType.FLOATS, floats: a.floats };
  return { name, type: AttributeType.STRING, s: new TextEncoder().encode(a.string) };
}

/**
 * Builds one graph. Node outputs are named `<prefix>/<op>_<n>` unless a name is given, which
 * is how graph outputs get their public names.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "./onnx_builder.ts";
 * import { DataType } from "./onnx_proto.ts";
 * const g = new GraphBuilder("twice");
 * const x = g.input("x", DataType.FLOAT, ["n"]);
 * g.output(g.op("Add", [x, x], {}, "y"), DataType.FLOAT, ["n"]);
 * console.assert(g.model({ opset: 17 }).graph.node.length === 1);
 * ```
 */
export class GraphBuilder {
  readonly name: string;
  readonly #nodes: OnnxNode[] = [];
  readonly #inits: OnnxTensor[] = [];
  readonly #inputs: OnnxValueInfo[] = [];
  readonly #outputs: OnnxValueInfo[] = [];
  readonly #names = new Set<string>();
  #n = 0;
  #scope = "";

  /** A graph called `name`. */
  constructor(name: string) {
    this.name = name;
  }

  /** Prefix for generated names (e.g. "h.3"), so that a graph reads by layer. */
  scope(s: string): void {
    this.#scope = s;
  }

  #fresh(op: string): string {
    let name: string;
    do name = `${this.#scope ? this.#scope + "/" : ""}${op}_${this.#n++}`; while (
      this.#names.has(name)
    );
    this.#names.add(name);
    return name;
  }

  /** Declare a graph input; returns its name. */
  input(name: string, elemType: number, dims: Dim[]): string {
    this.#inputs.push(valueInfo(name, elemType, dims));
    this.#names.add(name);
    return name;
  }

  /** Declare `value` (a node output of that name) as a graph output. */
  output(value: string, elemType: number, dims: Dim[]): void {
    this.#outputs.push(valueInfo(value, elemType, dims));
  }

  /** Add a node with one output; returns the output's name (`out` when given). */
  op(opType: string, inputs: string[], attrs: Record<string, Attr> = {}, out?: string): string {
    return this.opN(opType, inputs, 1, attrs, out ? [out] : undefined)[0];
  }

  /** Add a node with `n` outputs. */
  opN(
    opType: string,
    inputs: string[],
    n: number,
    attrs: Record<string, Attr> = {},
    outs?: string[],
  ): string[] {
    const output = outs ?? Array.from({ length: n }, () => this.#fresh(opType));
    for (const o of output) this.#names.add(o);
    this.#nodes.push({
      input: inputs,
      output,
      name: this.#fresh(`${opType}_node`),
      opType,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return output;
  }

  /** An inline int64 constant of shape `dims` (default: 1-D). */
  constI64(values: number[], dims: number[] = [values.length]): string {
    const name = this.#fresh("const_i64");
    const raw = new BigInt64Array(values.map((v) => BigInt(v)));
    this.#inits.push({
      name,
      dims,
      dataType: DataType.INT64,
      rawData: new Uint8Array(raw.buffer),
    });
    return name;
  }

  /** An inline fp32 constant of shape `dims` (default: a scalar). */
  constF32(values: number[], dims: number[] = []): string {
    const name = this.#fresh("const_f32");
    const raw = new Float32Array(values);
    this.#inits.push({
      name,
      dims,
      dataType: DataType.FLOAT,
      rawData: new Uint8Array(raw.buffer),
    });
    return name;
  }

  /** A weight that lives in `file`; its graph name is its name there. */
  weight(file: WeightFile, name: string): string {
    const e = file.entry(name);
    if (!e) throw new RangeError(`weight "${name}" is not in ${file.location}`);
    if (!this.#names.has(name)) {
      this.#names.add(name);
      this.#inits.push({
        name,
        dims: e.dims,
        dataType: DataType.FLOAT,
        dataLocation: 1,
        externalData: [
          { key: "location", value: file.location },
          { key: "offset", value: String(e.offset) },
          { key: "length", value: String(e.length) },
        ],
      });
    }
    return name;
  }

  /** The finished model. */
  model(opts: { opset: number; producerVersion?: string; docString?: string }): OnnxModel {
    return {
      // IR 8 is the version that goes with opset 17 (onnx 1.12).
      irVersion: 8,
      opsetImport: [{ domain: "", version: opts.opset }],
      producerName: "lotus-deno",
      producerVersion: opts.producerVersion ?? "1",
      docString: opts.docString,
      graph: {
        name: this.name,
        node: this.#nodes,
        initializer: this.#inits,
        input: this.#inputs,
        output: this.#outputs,
      },
    };
  }
}
