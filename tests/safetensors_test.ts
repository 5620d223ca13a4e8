import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import {
  decodeSafetensors,
  encodeSafetensors,
  getTensor,
  readSafetensors,
  readSafetensorsHeader,
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

/** Safetensors bytes with a header of our own making over `data`. */
function crafted(header: Record<string, unknown>, data: Uint8Array): Uint8Array {
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const h = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

Deno.test("safetensors: offsets must lie in the data, not overlap, and cover it exactly", () => {
  const data = new Uint8Array(16);
  const f32 = (begin: number, end: number, shape = [(end - begin) / 4]) => ({
    dtype: "F32",
    shape,
    data_offsets: [begin, end],
  });
  // Sound: two tensors side by side, in either order in the header; an empty one anywhere.
  decodeSafetensors(crafted({ b: f32(8, 16), a: f32(0, 8) }, data));
  decodeSafetensors(crafted({ a: f32(0, 8), e: f32(8, 8, [0, 3]), b: f32(8, 16) }, data));
  const bad = (header: Record<string, unknown>, bytes: Uint8Array, ...parts: string[]) => {
    const e = assertThrows(() => decodeSafetensors(crafted(header, bytes), "c.st"));
    assertEquals(e.name, "SafetensorsError", e.message);
    for (const p of ["c.st", ...parts]) assert(e.message.includes(p), `"${e.message}" lacks ${p}`);
  };
  bad({ a: f32(0, 8), b: f32(4, 12), c: f32(12, 16) }, data, `"b"`, "[4, 12]", "overlap", `"a"`);
  bad({ a: f32(0, 8), b: f32(0, 8), c: f32(8, 16) }, data, "overlap");
  bad({ a: f32(0, 8), b: f32(12, 16) }, data, "[8, 12]", "no tensor");
  bad({ a: f32(0, 8) }, data, "8 bytes", "after the last tensor");
  bad({ a: f32(4, 16) }, data, "[0, 4]", "no tensor");
  bad({ a: f32(0, 8), b: f32(8, 24) }, data, `"b"`, "offsets [8, 24]", "16");
  bad({ a: f32(-4, 4), b: f32(4, 16) }, data, `"a"`, "offsets");
  bad({ a: f32(0, 8.5, [2]), b: f32(8.5, 16, [2]) }, data, `"a"`, "offsets");
  bad({ a: f32(8, 0, [2]), b: f32(8, 16) }, data, `"a"`, "offsets");
  // dtype x shape against the byte length
  bad({ a: f32(0, 16, [3]) }, data, `"a"`, "[3]", "12 bytes", "16");
  bad({ a: { dtype: "F64", shape: [4], data_offsets: [0, 16] } }, data, "32 bytes");
  bad({ a: f32(0, 16, [-2, -2]) }, data, `"a"`, "shape");
  bad({ a: f32(0, 16, [2.5, 1.6]) }, data, `"a"`, "shape");
  bad({ a: { dtype: "F32", shape: [4], data_offsets: [0] } }, data, `"a"`, "data_offsets");
  // the header itself
  bad({ __metadata__: { format: 3 } }, new Uint8Array(0), "__metadata__");
  const arr = crafted({}, new Uint8Array(0));
  arr.set(new TextEncoder().encode("[]      "), 8);
  assertThrows(() => decodeSafetensors(arr, "d.st"), SafetensorsError, "JSON object");
});

Deno.test("safetensors: the header alone, checked against the file size", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/h.safetensors`;
    await writeSafetensors(path, {
      m: { dtype: "F32", shape: [3], data: new Float32Array(3) },
      v: { dtype: "F32", shape: [3], data: new Float32Array(3) },
    });
    const h = await readSafetensorsHeader(path);
    assertEquals(h.tensors.m, { dtype: "F32", shape: [3], dataOffsets: [0, 12] });
    assertEquals(h.tensors.v.dataOffsets, [12, 24]);
    const bytes = await Deno.readFile(path);
    await Deno.writeFile(path, bytes.subarray(0, bytes.length - 4));
    await assertRejects(() => readSafetensorsHeader(path), SafetensorsError, "offsets [12, 24]");
    await assertRejects(
      () => readSafetensorsHeader(`${dir}/none.safetensors`),
      SafetensorsError,
      "cannot read",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
