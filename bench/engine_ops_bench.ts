// Engine op benchmarks at the "small" preset's shapes: d_model 256, 4 heads, vocab 4096,
// batch x time = 32 x 128 = 4096 rows.
//
//   npx deno bench --allow-all bench/engine_ops_bench.ts
//       deno bench's statistics, plus a GFLOP/s table (median call) at the end.
//   npx deno run --allow-all bench/engine_ops_bench.ts [--threads N]
//       the same ops timed in a plain loop, and the same table.
//
// Why both: deno bench runs the benchmarks on a runtime thread while its harness keeps other
// threads busy. On a machine with as many cores as OpenMP threads, those threads preempt a
// GEMM thread for whole scheduler ticks (4 ms) at its barriers, so some multi-threaded
// figures come out 2-5x low, and vary from run to run. The plain loop has no harness and
// gives the figures a trainer (deno run) sees.
import { parseArgs } from "node:util";
import { openEngine, type Ptr } from "../engine/ffi.ts";

const { values: cli } = parseArgs({
  args: import.meta.main ? Deno.args : [],
  options: { threads: { type: "string", default: "0" } },
});
const eng = openEngine({ quiet: true, threads: Number(cli.threads) });
const B = 32, T = 128, N = B * T, C = 256, NH = 4, V = 4096;

function randomBuffer(n: number, scale = 1): Ptr {
  const host = new Float32Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    host[i] = scale * ((s / 4294967296) * 2 - 1);
  }
  const p = eng.alloc(host.byteLength);
  eng.upload(p, host);
  return p;
}

interface Op {
  group: string;
  name: string;
  /** Floating-point operations per call (0: not a FLOP-bound op). */
  flops: number;
  fn: () => void;
  /** Per-call times in ms (deno bench mode). */
  ms: number[];
}
const ops: Op[] = [];

function op(group: string, name: string, flops: number, fn: () => void): void {
  ops.push({ group, name, flops, fn, ms: [] });
}

// ---- matmuls: the linear layers of one block, and the LM head ------------------------------
const LINEARS: [string, number, number][] = [
  ["qkv", C, 3 * C],
  ["attn proj", C, C],
  ["fc", C, 4 * C],
  ["fc proj", 4 * C, C],
  ["lm head", C, V],
];
for (const [label, Cin, Cout] of LINEARS) {
  const inp = randomBuffer(N * Cin), w = randomBuffer(Cout * Cin, 0.05), bias = randomBuffer(Cout);
  const out = eng.alloc(N * Cout * 4), dout = randomBuffer(N * Cout);
  const dinp = eng.alloc(N * Cin * 4), dw = eng.alloc(Cout * Cin * 4), db = eng.alloc(Cout * 4);
  const flops = 2 * N * Cin * Cout;
  const shape = `${N}x${Cin}->${Cout}`;
  op("matmul", `matmul fwd ${label} ${shape}`, flops, () => {
    eng.matmulFwd(out, inp, w, bias, N, Cin, Cout);
  });
  // dinp and dw are one GEMM each (dbias is a column sum)
  op("matmul", `matmul bwd ${label} ${shape}`, 2 * flops, () => {
    eng.matmulBwd(dinp, dw, db, dout, inp, w, N, Cin, Cout);
  });
}

// ---- attention: T = 128 (training) and Tq = 1 against a long past (decoding) ---------------
{
  const qkv = randomBuffer(N * 3 * C), out = eng.alloc(N * C * 4);
  const att = eng.alloc(B * NH * T * T * 4), dout = randomBuffer(N * C);
  const dqkv = eng.alloc(N * 3 * C * 4);
  // causal: T(T+1)/2 score dot products and as many value axpys per (b, h), 2 flops each
  const flops = B * NH * (T * (T + 1) / 2) * (C / NH) * 4;
  op("attention", `attention fwd B${B} T${T} C${C} NH${NH}`, flops, () => {
    eng.attentionFwd(out, att, qkv, null, null, B, T, 0, C, NH, 0, 0);
  });
  op("attention", `attention bwd B${B} T${T} C${C} NH${NH}`, 2 * flops, () => {
    eng.attentionBwd(dqkv, null, dout, att, qkv, null, B, T, 0, C, NH, 0, 0);
  });
  const Tp = 2048, cache = randomBuffer(Tp * 2 * C), q1 = randomBuffer(3 * C);
  const o1 = eng.alloc(C * 4), a1 = eng.alloc(NH * (Tp + 1) * 4);
  const flops1 = NH * (Tp + 1) * (C / NH) * 4;
  op("attention", `attention fwd decode Tq1 Tp${Tp} C${C} NH${NH}`, flops1, () => {
    eng.attentionFwd(o1, a1, q1, cache, null, 1, 1, Tp, C, NH, Tp * 2 * C, 2 * C);
  });
}

// ---- the rest of a step, for proportion ----------------------------------------------------
{
  const x = randomBuffer(N * C), w = randomBuffer(C), b = randomBuffer(C);
  const out = eng.alloc(N * C * 4), mean = eng.alloc(N * 4), rstd = eng.alloc(N * 4);
  const dx = eng.alloc(N * C * 4), dw = eng.alloc(C * 4), db = eng.alloc(C * 4);
  op("other", `layernorm fwd ${N}x${C}`, 0, () => {
    eng.layernormFwd(out, mean, rstd, x, w, b, N, C);
  });
  op("other", `layernorm bwd ${N}x${C}`, 0, () => {
    eng.layernormBwd(dx, dw, db, x, x, w, mean, rstd, N, C);
  });
  const h = randomBuffer(N * 4 * C, 3), ho = eng.alloc(N * 4 * C * 4);
  const hd = eng.alloc(N * 4 * C * 4);
  op("other", `gelu fwd ${N}x${4 * C}`, 0, () => eng.geluFwd(ho, h, N * 4 * C));
  op("other", `gelu bwd ${N}x${4 * C}`, 0, () => eng.geluBwd(hd, h, h, N * 4 * C));
  const logits = randomBuffer(N * V, 3), losses = eng.alloc(N * 4);
  const targets = eng.alloc(N * 4);
  eng.upload(targets, new Int32Array(N).map((_, i) => (i * 7919) % V));
  op("other", `xent fwd ${N}x${V}`, 0, () => eng.xentFwdBwd(logits, losses, targets, N, V, 0));
  const nParams = 4_000_000, p = randomBuffer(nParams), g = randomBuffer(nParams);
  const m = eng.alloc(nParams * 4), v = eng.alloc(nParams * 4), gn = eng.alloc(4);
  op("other", `sumsq ${nParams}`, 0, () => eng.sumsq(gn, g, nParams));
  let t = 0;
  op("other", `adamw ${nParams}`, 0, () => {
    eng.adamw(p, g, m, v, nParams, 1e-4, 0.9, 0.95, 1e-8, 0.1, ++t, gn, 1.0);
  });
}

// ---- FFI call overhead ---------------------------------------------------------------------
const raw = Deno.dlopen(eng.libPath, { le_sync: { parameters: [], result: "i32" } });
const x1 = eng.alloc(64);
op("ffi", "ffi: raw le_sync (no-op C function)", 0, () => raw.symbols.le_sync());
op("ffi", "ffi: Engine.sync() (no-op, status checked)", 0, () => eng.sync());
op("ffi", "ffi: Engine.scale(x, 1, 0) (returns before checks)", 0, () => eng.scale(x1, 1, 0));
op("ffi", "ffi: Engine.add(x, x, x, 1) (3 pointer checks)", 0, () => eng.add(x1, x1, x1, 1));

function table(rows: { name: string; flops: number; ms: number }[], title: string): string {
  const fmtTime = (ms: number) =>
    ms >= 0.1
      ? `${ms.toFixed(3)} ms`
      : ms >= 1e-3
      ? `${(ms * 1e3).toFixed(1)} us`
      : `${(ms * 1e6).toFixed(1)} ns`;
  const lines = rows.map(({ name, flops, ms }) => {
    const rate = flops > 0 ? `${(flops / (ms * 1e-3) / 1e9).toFixed(1).padStart(7)} GFLOP/s` : "";
    return `${name.padEnd(50)} ${fmtTime(ms).padStart(12)} ${rate}`;
  });
  return `\n${title}\n${lines.join("\n")}`;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

if (import.meta.main) {
  // deno run: time each op in a plain loop (median of batches; FFI ops in batches of 1e5).
  const rows = ops.map(({ name, flops, fn, group }) => {
    const inner = group === "ffi" ? 100_000 : 1;
    fn();
    fn();
    const times: number[] = [];
    const start = performance.now();
    while (times.length < 7 || (performance.now() - start < 1000 && times.length < 50)) {
      const t0 = performance.now();
      for (let i = 0; i < inner; i++) fn();
      times.push((performance.now() - t0) / inner);
    }
    return { name, flops, ms: median(times) };
  });
  console.log(
    table(
      rows,
      `median per call, deno run, threads: ${cli.threads === "0" ? "default" : cli.threads}`,
    ),
  );
} else {
  for (const o of ops) {
    if (o.group === "ffi") {
      // nanosecond calls: no timing wrapper, deno bench measures the bare call
      Deno.bench({
        name: o.name,
        group: o.group,
        baseline: o.name.startsWith("ffi: raw"),
        fn: o.fn,
      });
      continue;
    }
    Deno.bench({
      name: o.name,
      group: o.group,
      fn(b) {
        b.start();
        const t0 = performance.now();
        o.fn();
        const dt = performance.now() - t0;
        b.end();
        o.ms.push(dt);
      },
    });
  }
  globalThis.addEventListener("unload", () => {
    const rows = ops.filter((o) => o.ms.length > 0 && o.group !== "ffi")
      .map((o) => ({ name: o.name, flops: o.flops, ms: median(o.ms) }));
    console.log(table(rows, "median per call, deno bench (see the note at the top of the file)"));
  });
}
