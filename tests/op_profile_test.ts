// The op profile (check/op_profile.ts) on the CPU engine: calls counted by op and by shape,
// wrappers that change no result and come off again, the table, and a dry run of
// bench/gpu_profile.ts end to end.
import { assert, assertEquals } from "./_assert.ts";
import { cpuEngine } from "./_tiny.ts";
import { tempDir } from "./_tmp.ts";
import { runDeno } from "./_run.ts";
import { withBufs } from "../check/_op_bufs.ts";
import { formatProfile, opFlops, profileOps, timeOpsOnDevice } from "../check/op_profile.ts";
import { MARKS } from "../engine/ffi.ts";
import { buildCudaEmu, canEmulate } from "../check/cuda_emu.ts";
import { assertThrows } from "./_assert.ts";

Deno.test("op profile: counts each op by name and by shape, and restore removes the wrappers", () => {
  const eng = cpuEngine();
  withBufs(eng, (b) => {
    const x = b.f32(Float32Array.of(1, 2, 3, 4, 5, 6)),
      y = b.f32(Float32Array.of(1, 1, 1, 1, 1, 1));
    const prof = profileOps(eng);
    try {
      eng.add(x, x, y, 6);
      eng.add(x, x, y, 4);
      eng.add(x, x, y, 4);
      eng.scale(x, 2.5, 6);
      eng.sync(); // not an op
      assertEquals(b.get(x, 6), Float32Array.of(10, 12.5, 15, 17.5, 15, 17.5), "results unchanged");
    } finally {
      prof.restore();
    }
    const byName = new Map(prof.byName().map((t) => [t.key, t.calls]));
    assertEquals(byName.get("add"), 3);
    assertEquals(byName.get("scale"), 1);
    assertEquals(byName.has("sync"), false);
    const byShape = new Map(prof.byShape().map((t) => [t.key, t.calls]));
    assertEquals(byShape.get("add(6)"), 1);
    assertEquals(byShape.get("add(4)"), 2);
    assertEquals(byShape.get("scale(6)"), 1, "only integer arguments name the shape");
    assertEquals(prof.byName().find((t) => t.key === "add")!.flops, 0);
    const total = prof.byName().reduce((s, t) => s + t.ms, 0);
    assert(total > 0 && Math.abs(total - prof.totalMs()) < 1e-9, `${total}`);
    assertEquals(Object.hasOwn(eng, "add"), false, "the instance's wrappers are gone");
    eng.add(x, x, y, 6);
    assertEquals(prof.byName().find((t) => t.key === "add")!.calls, 3, "no longer counted");
    prof.reset();
    assertEquals(prof.byName().length, 0);
  });
});

Deno.test("device-timed profile: each op between two marks, counted as the host-timed profile counts it", () => {
  const eng = cpuEngine();
  assert(eng.hasMarks, "the CPU engine has timing marks");
  withBufs(eng, (b) => {
    const n = 1 << 16;
    const x = b.f32(new Float32Array(n).fill(1)), y = b.f32(new Float32Array(n).fill(2));
    const prof = timeOpsOnDevice(eng);
    try {
      eng.add(x, x, y, n);
      eng.scale(x, 0.5, n);
      eng.sync(); // not an op
      assertEquals(b.get(x, 2), Float32Array.of(1.5, 1.5), "results unchanged");
      assertEquals(
        new Map(prof.byShape().map((t) => [t.key, t.calls])),
        new Map([["add(65536)", 1], ["scale(65536)", 1], ["download()", 1]]),
      );
      const total = prof.byName().reduce((s, t) => s + t.ms, 0);
      assert(total > 0 && Math.abs(total - prof.totalMs()) < 1e-9, `${total}`);
      assert(prof.betweenMs() >= 0, `${prof.betweenMs()}`);
      prof.reset();
      assertEquals(prof.byName().length, 0);
      // More ops than marks: the profile reads and reuses them as it goes.
      for (let i = 0; i < MARKS / 2 + 10; i++) eng.scale(x, 1, 1);
      assertEquals(prof.byName()[0].calls, MARKS / 2 + 10);
    } finally {
      prof.restore();
    }
    assertEquals(Object.hasOwn(eng, "add"), false, "the instance's wrappers are gone");
  });
});

Deno.test("timing marks: the CPU engine's marks read its clock, and bad marks are named", () => {
  const eng = cpuEngine();
  eng.mark(5);
  eng.mark(6);
  const ms = eng.markElapsed(5, 6);
  assert(ms >= 0 && ms < 1000, `${ms}`);
  assertThrows(
    () => eng.mark(MARKS),
    Error,
    `le_mark: mark ${MARKS} does not exist; marks are 0..${MARKS - 1}`,
  );
  assertThrows(() => eng.mark(-1), Error, "le_mark: mark -1 does not exist");
});

Deno.test("op profile: a matrix product counts two operations a multiply-add, for each gradient asked", () => {
  const N = 5, Cin = 3, Cout = 7, p = 1n;
  assertEquals(opFlops("matmulFwd", [p, p, p, null, N, Cin, Cout]), 2 * N * Cin * Cout);
  assertEquals(opFlops("matmulBwd", [p, p, null, p, p, p, N, Cin, Cout, true]), 4 * N * Cin * Cout);
  assertEquals(
    opFlops("matmulBwd", [null, p, p, p, p, p, N, Cin, Cout, false]),
    2 * N * Cin * Cout,
  );
  assertEquals(opFlops("layernormFwd", [p, p, p, p, p, p, N, Cin]), 0);
});

Deno.test("op profile: the table gives ms and calls a step, the rest folded into one row", () => {
  const rows = [
    { key: "a", calls: 4, ms: 6, flops: 0 },
    { key: "b", calls: 2, ms: 3, flops: 6e12 },
    { key: "c", calls: 2, ms: 1, flops: 0 },
  ];
  const t = formatProfile(rows, 2, 2).split("\n");
  assertEquals(t.length, 5); // header, a, b, (1 more), total
  assert(/^a\s+3\.00\s+2\s+60\.0%$/.test(t[1]), t[1]);
  assert(/^b\s+1\.50\s+1\s+30\.0%\s+2000\.0$/.test(t[2]), `6e12 in 3 ms: ${t[2]}`);
  assert(/^\(1 more\)\s+0\.50\s+1\s+10\.0%$/.test(t[3]), t[3]);
  assert(/^total\s+5\.00\s+4\s+100\.0%$/.test(t[4]), t[4]);
});

/** Runs bench/gpu_profile.ts with `args` (one step); its two files' contents. */
async function runProfile(args: string[]) {
  const out = await tempDir();
  const script = new URL("../bench/gpu_profile.ts", import.meta.url).pathname;
  const r = await runDeno(["run", "--allow-all", script, ...args, "--steps", "1", "--out", out]);
  assertEquals(r.code, 0, r.stderr);
  return {
    text: Deno.readTextFileSync(`${out}/profile.txt`),
    json: JSON.parse(Deno.readTextFileSync(`${out}/profile.json`)),
  };
}

/** A profile table's calls by op. */
const callsOf = (rows: { key: string; calls: number }[]) =>
  new Map(rows.map((t) => [t.key, t.calls]));

Deno.test({
  name: "gpu profile: a dry run on the CPU profiles a training step and a generation",
  async fn() {
    const { text, json } = await runProfile(["--backend", "cpu"]);
    assert(text.includes("training step:") && text.includes("matmulFwd"), text);
    assert(text.includes("batch-1 LOTUS generation") && text.includes("attentionStatsFwd"), text);
    assert(json.stepEagerMs > 0 && json.stepProfiledMs > 0, JSON.stringify(json).slice(0, 200));
    assert(json.stepByName.length > 5);
    assert(text.includes("training step on the device's clock"), text);
    assert(json.stepDeviceOpsMs > 0 && json.stepDeviceBetweenMs >= 0, `${json.stepDeviceOpsMs}`);
    assertEquals(
      json.stepDeviceByName.map((t: { key: string }) => t.key).sort(),
      json.stepByName.map((t: { key: string }) => t.key).sort(),
      "the same ops in both profiles",
    );
    assert(json.thoughtDeviceOpsMs > 0, `${json.thoughtDeviceOpsMs}`);
    assert(text.includes("an answer token on the device's clock"), text);
    // Four matmuls a layer of the tiny preset's two, and the LM head: a token's nine.
    const tokenOps = callsOf(json.tokenDeviceByName);
    assertEquals(tokenOps.get("matmulFwd"), 9 * 5 * 7, "five runs of seven tokens");
  },
});

Deno.test({
  name: "gpu profile: on the emulated CUDA engine, ops replayed from CUDA graphs are timed by " +
    "their marks and counted as launched one by one",
  ignore: !canEmulate(),
  async fn() {
    const { json } = await runProfile(
      ["--engine-lib", buildCudaEmu(), "--preset", "tiny", "--batch", "2", "--vocab", "300"],
    );
    // The step: the same ops from its graph as launched one by one (uploads aside: the first
    // step of a shape uploads more).
    const [fromGraph, eager] = [callsOf(json.stepDeviceByName), callsOf(json.stepByName)];
    for (const [k, n] of eager) if (k !== "upload") assertEquals(fromGraph.get(k), n, k);
    // The generation of one token, and an answer token's nine matmuls (two layers' four and
    // the LM head) in each of five runs of seven.
    assertEquals(callsOf(json.thoughtDeviceByName).get("matmulFwd"), 73 * 5);
    assertEquals(callsOf(json.thoughtByName).get("matmulFwd"), 73 * 5);
    assertEquals(callsOf(json.tokenDeviceByName).get("matmulFwd"), 9 * 5 * 7);
  },
});
