/**
 * The ONNX protobuf messages this project writes and reads, encoded with protobufjs.
 *
 * The schema is the subset of `onnx.proto3` (ModelProto and what it contains) that a graph
 * of standard operators with external weights needs, given to protobufjs as a reflection
 * descriptor: field numbers and types are those of the ONNX specification, so any ONNX
 * reader (onnxruntime, Python `onnx`) reads the bytes. Fields this project never sets
 * (training info, sparse tensors, functions) are left out; a reader skips unknown fields,
 * so decoding a model written elsewhere still works for the fields listed here.
 *
 * @module
 */

import protobuf from "protobufjs/light.js";

/** `TensorProto.DataType` values used here. */
export const DataType = { FLOAT: 1, INT32: 6, INT64: 7, BOOL: 9 } as const;

/** `AttributeProto.AttributeType` values used here. */
export const AttributeType = {
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  FLOATS: 6,
  INTS: 7,
} as const;

/** A key/value pair (`StringStringEntryProto`). */
export interface OnnxEntry {
  key: string;
  value: string;
}

/** A tensor: inline `rawData`, or `externalData` (location, offset, length) with dataLocation 1. */
export interface OnnxTensor {
  name: string;
  dims: number[];
  dataType: number;
  rawData?: Uint8Array;
  externalData?: OnnxEntry[];
  /** 0: inline (default), 1: external. */
  dataLocation?: number;
}

/** A node attribute; `type` says which value field is set. */
export interface OnnxAttribute {
  name: string;
  type: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  t?: OnnxTensor;
  floats?: number[];
  ints?: number[];
}

/** One operator application. */
export interface OnnxNode {
  input: string[];
  output: string[];
  name?: string;
  opType: string;
  domain?: string;
  attribute?: OnnxAttribute[];
}

/** A dimension: a number, or a symbolic name. */
export type OnnxDim = { dimValue: number } | { dimParam: string };

/** A graph input or output: a tensor of an element type and shape. */
export interface OnnxValueInfo {
  name: string;
  type: { tensorType: { elemType: number; shape: { dim: OnnxDim[] } } };
  docString?: string;
}

/** A graph. */
export interface OnnxGraph {
  node: OnnxNode[];
  name: string;
  initializer: OnnxTensor[];
  docString?: string;
  input: OnnxValueInfo[];
  output: OnnxValueInfo[];
}

/** A model: the IR version, the operator sets and the graph. */
export interface OnnxModel {
  irVersion: number;
  opsetImport: { domain: string; version: number }[];
  producerName: string;
  producerVersion: string;
  docString?: string;
  graph: OnnxGraph;
  metadataProps?: OnnxEntry[];
}

type Fields = Record<string, { type: string; id: number; rule?: "repeated" }>;
const msg = (fields: Fields) => ({ fields });
const rep = (type: string, id: number) => ({ type, id, rule: "repeated" as const });

// Field numbers from onnx.proto3 (ONNX IR), names in protobufjs' camelCase.
const SCHEMA = {
  nested: {
    onnx: {
      nested: {
        StringStringEntryProto: msg({
          key: { type: "string", id: 1 },
          value: { type: "string", id: 2 },
        }),
        TensorProto: msg({
          dims: rep("int64", 1),
          dataType: { type: "int32", id: 2 },
          name: { type: "string", id: 8 },
          rawData: { type: "bytes", id: 9 },
          docString: { type: "string", id: 12 },
          externalData: rep("StringStringEntryProto", 13),
          dataLocation: { type: "int32", id: 14 },
        }),
        AttributeProto: msg({
          name: { type: "string", id: 1 },
          f: { type: "float", id: 2 },
          i: { type: "int64", id: 3 },
          s: { type: "bytes", id: 4 },
          t: { type: "TensorProto", id: 5 },
          floats: rep("float", 7),
          ints: rep("int64", 8),
          docString: { type: "string", id: 13 },
          type: { type: "int32", id: 20 },
        }),
        NodeProto: msg({
          input: rep("string", 1),
          output: rep("string", 2),
          name: { type: "string", id: 3 },
          opType: { type: "string", id: 4 },
          attribute: rep("AttributeProto", 5),
          docString: { type: "string", id: 6 },
          domain: { type: "string", id: 7 },
        }),
        Dimension: {
          oneofs: { value: { oneof: ["dimValue", "dimParam"] } },
          fields: { dimValue: { type: "int64", id: 1 }, dimParam: { type: "string", id: 2 } },
        },
        TensorShapeProto: msg({ dim: rep("Dimension", 1) }),
        TensorTypeProto: msg({
          elemType: { type: "int32", id: 1 },
          shape: { type: "TensorShapeProto", id: 2 },
        }),
        TypeProto: msg({ tensorType: { type: "TensorTypeProto", id: 1 } }),
        ValueInfoProto: msg({
          name: { type: "string", id: 1 },
          type: { type: "TypeProto", id: 2 },
          docString: { type: "string", id: 3 },
        }),
        GraphProto: msg({
          node: rep("NodeProto", 1),
          name: { type: "string", id: 2 },
          initializer: rep("TensorProto", 5),
          docString: { type: "string", id: 10 },
          input: rep("ValueInfoProto", 11),
          output: rep("ValueInfoProto", 12),
        }),
        OperatorSetIdProto: msg({
          domain: { type: "string", id: 1 },
          version: { type: "int64", id: 2 },
        }),
        ModelProto: msg({
          irVersion: { type: "int64", id: 1 },
          producerName: { type: "string", id: 2 },
          producerVersion: { type: "string", id: 3 },
          domain: { type: "string", id: 4 },
          modelVersion: { type: "int64", id: 5 },
          docString: { type: "string", id: 6 },
          graph: { type: "GraphProto", id: 7 },
          opsetImport: rep("OperatorSetIdProto", 8),
          metadataProps: rep("StringStringEntryProto", 14),
        }),
      },
    },
  },
};

let modelType: protobuf.Type | undefined;

function modelProto(): protobuf.Type {
  modelType ??= protobuf.Root.fromJSON(SCHEMA).lookupType("onnx.ModelProto");
  return modelType;
}

/**
 * Serialise a model to ONNX protobuf bytes.
 *
 * @example
 * ```ts
 * import { DataType, decodeModel, encodeModel } from "./onnx_proto.ts";
 * const vi = (name: string) => ({
 *   name,
 *   type: { tensorType: { elemType: DataType.FLOAT, shape: { dim: [{ dimParam: "n" }] } } },
 * });
 * const bytes = encodeModel({
 *   irVersion: 8,
 *   opsetImport: [{ domain: "", version: 17 }],
 *   producerName: "example",
 *   producerVersion: "1",
 *   graph: {
 *     name: "add",
 *     node: [{ input: ["a", "b"], output: ["c"], opType: "Add" }],
 *     initializer: [],
 *     input: [vi("a"), vi("b")],
 *     output: [vi("c")],
 *   },
 * });
 * console.assert(decodeModel(bytes).graph.node[0].opType === "Add");
 * ```
 */
export function encodeModel(model: OnnxModel): Uint8Array {
  const T = modelProto();
  return T.encode(T.fromObject(model)).finish();
}

/** Parse ONNX protobuf bytes (the fields of this module's schema; int64 values as numbers). */
export function decodeModel(bytes: Uint8Array): OnnxModel {
  const T = modelProto();
  const obj = T.toObject(T.decode(bytes), { longs: Number, arrays: true });
  return obj as OnnxModel;
}
