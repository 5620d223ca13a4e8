import { assertEquals, assertThrows } from "./_assert.ts";
import {
  decodeSafetensors,
  encodeSafetensors,
  getTensor,
  readSafetensors,
  SafetensorsError,
  writeSafetensors,
} from "../base/safetensors.ts";

Deno.test("safetensors: round trip keeps names, shapes, dtypes and values", async () => {
  const dir = await Deno.makeTempDir();
  const tensors = {
    "h.0.attn.c_attn.weight": {
      dtype: "F32" as const,
      shape: [2, 3],
      data: new Float32Array([1, 2, 3, 4, 5, -6.5]),
    },
    ids: { dtype: "I32" as const, shape: [3], data: new Int32Array([-100, 0, 50259]) },
    m: { dtype: "U8" as const, shape: [1], data: new Uint8Array([7]) },
  };
  await writeSafetensors(`${dir}/a.safetensors`, tensors, { format: "pt" });
  const back = await readSafetensors(`${dir}/a.safetensors`);
  assertEquals(back.metadata, { format: "pt" });
  assertEquals(Object.keys(back.tensors), Object.keys(tensors));
  assertEquals(Array.from(getTensor(back, "h.0.attn.c_attn.weight", "F32", [2, 3])), [
    1,
    2,
    3,
    4,
    5,
    -6.5,
  ]);
  assertEquals(back.tensors["h.0.attn.c_attn.weight"].shape, [2, 3]);
  assertEquals(Array.from(getTensor(back, "ids", "I32")), [-100, 0, 50259]);
  assertEquals(back.tensors.m.dtype, "U8");
});

Deno.test("safetensors: header is 8-byte aligned JSON after a little-endian length", () => {
  const bytes = encodeSafetensors({ x: { dtype: "F32", shape: [1], data: new Float32Array([1]) } });
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assertEquals(n % 8, 0);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  assertEquals(header.x, { dtype: "F32", shape: [1], data_offsets: [0, 4] });
  assertEquals(bytes.length, 8 + n + 4);
});

Deno.test("safetensors: malformed files are rejected with the file named", () => {
  assertThrows(() => decodeSafetensors(new Uint8Array(3), "f.st"), SafetensorsError, "f.st");
  const good = encodeSafetensors({ x: { dtype: "F32", shape: [4], data: new Float32Array(4) } });
  assertThrows(
    () => decodeSafetensors(good.subarray(0, good.length - 4), "g.st"),
    SafetensorsError,
    "offsets",
  );
  assertThrows(
    () => getTensor(decodeSafetensors(good), "x", "I32", undefined, "g.st"),
    SafetensorsError,
    "dtype F32",
  );
  assertThrows(
    () => getTensor(decodeSafetensors(good), "x", "F32", [5], "g.st"),
    SafetensorsError,
    "shape [4]",
  );
  assertThrows(() => getTensor(decodeSafetensors(good), "y", "F32"), SafetensorsError, "missing");
  assertThrows(
    () => encodeSafetensors({ x: { dtype: "F32", shape: [3], data: new Float32Array(4) } }),
    SafetensorsError,
    "holds 3 elements",
  );
});
