/**
 * The Llama presets' shapes (their parameter counts are the published totals of Llama-3.2-1B
 * and -3B), the rotary frequency table with Llama 3's scaling, and the config checks.
 */
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { ModelConfigSchema, presetConfig, presetForArch } from "../model/config.ts";
import { parseTrainArgs } from "../cli/train.ts";
import { paramLayout } from "../model/params.ts";
import { ropeInvFreq } from "../model/rope.ts";

Deno.test("the llama-1b and llama-3b presets have Llama-3.2-1B's and -3B's parameter counts", () => {
  // 128256 tokens: the Llama 3 vocabulary, before the three LOTUS tokens are appended.
  assertEquals(paramLayout(presetConfig("llama-1b", 128256)).mainTotal, 1_235_814_400);
  assertEquals(paramLayout(presetConfig("llama-3b", 128256)).mainTotal, 3_212_749_824);
  const c = presetConfig("llama-3b", 128259);
  assertEquals([c.arch, c.nKvHead, c.dFf, c.tieEmbeddings], ["llama", 8, 8192, true]);
  assertEquals(c.ropeScaling!.factor, 32);
  // The tiny one trains on the CPU like "tiny", with grouped-query attention.
  const t = presetConfig("llama-tiny", 100);
  assertEquals([t.dModel, t.nHead, t.nKvHead, t.nLayer], [64, 4, 2, 2]);
});

Deno.test("rotary frequencies: theta^(-2i/HS), and Llama 3's three bands", () => {
  const plain = ropeInvFreq(64, 500000, null);
  assertEquals(plain.length, 32);
  assertEquals(plain[0], 1);
  assert(Math.abs(plain[16] - 1 / Math.sqrt(500000)) < 1e-9);
  const s = { factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 };
  const scaled = ropeInvFreq(64, 500000, s);
  for (let i = 0; i < 32; i++) {
    const wavelen = (2 * Math.PI) / plain[i];
    if (wavelen < 8192 / 4) assertEquals(scaled[i], plain[i], `band kept, i=${i}`);
    else if (wavelen > 8192) {
      assert(Math.abs(scaled[i] - plain[i] / 32) <= 1e-7 * plain[i], `band divided, i=${i}`);
    } else {
      assert(scaled[i] < plain[i] && scaled[i] > plain[i] / 32, `band blended, i=${i}`);
    }
  }
  // all three bands occur at this shape
  const w = Array.from(plain, (f) => (2 * Math.PI) / f);
  assert(
    w.some((x) => x < 2048) && w.some((x) => x > 8192) && w.some((x) => x >= 2048 && x <= 8192),
  );
  assertThrows(() => ropeInvFreq(5, 10000, null), Error, "even");
});

Deno.test("Llama config checks: KV heads divide heads, even head size, GQA only in Llama", () => {
  const base = { vocabSize: 50, maxPositions: 32, dModel: 16, nHead: 4, nLayer: 1 };
  assertThrows(
    () => ModelConfigSchema.parse({ ...base, arch: "llama", nKvHead: 3 }),
    Error,
    "nKvHead",
  );
  assertThrows(
    () => ModelConfigSchema.parse({ ...base, dModel: 12, nHead: 4, arch: "llama" }),
    Error,
    "even",
  );
  assertThrows(() => ModelConfigSchema.parse({ ...base, nKvHead: 2 }), Error, "Llama");
  assertEquals(ModelConfigSchema.parse({ ...base, arch: "llama", nKvHead: 1 }).nKvHead, 1);
});

Deno.test("--arch picks the preset's counterpart: tiny <-> llama-tiny; others are refused", () => {
  assertEquals(presetForArch("tiny", "llama"), "llama-tiny");
  assertEquals(presetForArch("llama-tiny", "gpt2"), "tiny");
  assertEquals(presetForArch("llama-3b", "llama"), "llama-3b");
  assertEquals(presetForArch("small", "gpt2"), "small");
  assertThrows(() => presetForArch("gpt2", "llama"), Error, "llama-1b");
  const a = parseTrainArgs(["--arch", "llama"]);
  assert(a !== "help" && a.arch === "llama");
  assertThrows(() => parseTrainArgs(["--arch", "mamba"]), Error, "--arch");
});
