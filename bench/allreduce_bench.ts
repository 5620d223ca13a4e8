/**
 * The gradient all-reduce of data-parallel training, alone: run under mpirun, every rank
 * joins the job on the CPU engine (1 thread) and sums buffers of a model's size (its
 * parameter count, in fp32) over the ranks, as each training step does. Rank 0 prints one JSON
 * line per size: the median time of an all-reduce over `reps` (after 2 warm-up calls) and the
 * bus bandwidth 2(N-1)/N * bytes / time that a ring all-reduce moves per rank.
 *
 *   mpirun -np 2 deno run -A bench/allreduce_bench.ts [PRESET...]   (default tiny small)
 *
 * The sizes are the presets' parameter counts at GPT-2's vocabulary (50257 tokens + 3
 * LOTUS tokens). docs/distributed.md quotes its figures.
 *
 * @module
 */
import { openEngine } from "../engine/ffi.ts";
import { presetConfig, type PresetName } from "../model/config.ts";
import { paramLayout } from "../model/params.ts";
import { worldFromEnv } from "../train/data_parallel.ts";

const world = worldFromEnv();
if (!world) {
  console.error("run it under mpirun: mpirun -np 2 deno run -A bench/allreduce_bench.ts");
  Deno.exit(2);
}
const presets = (Deno.args.length ? Deno.args : ["tiny", "small"]) as PresetName[];
const reps = 10;
const eng = openEngine({ backend: "cpu", threads: 1, quiet: true });
const { rank, size } = eng.commInit(120);
for (const preset of presets) {
  const n = paramLayout(presetConfig(preset, 50260, 0)).total;
  const buf = eng.alloc(n * 4);
  eng.upload(buf, new Float32Array(n).fill(rank + 1));
  const times: number[] = [];
  for (let i = 0; i < reps + 2; i++) {
    eng.barrier();
    const t0 = performance.now();
    eng.allReduceSum(buf, n);
    if (i >= 2) times.push(performance.now() - t0);
  }
  eng.free(buf);
  times.sort((a, b) => a - b);
  const ms = times[Math.floor(times.length / 2)];
  if (rank === 0) {
    console.log(JSON.stringify({
      preset,
      ranks: size,
      floats: n,
      mbytes: +(n * 4 / 1e6).toFixed(1),
      medianMs: +ms.toFixed(2),
      busGBps: +((2 * (size - 1) / size) * n * 4 / (ms / 1000) / 1e9).toFixed(2),
    }));
  }
}
eng.commFinalize();
eng.close();
