import { assert, assertEquals } from "./_assert.ts";
import { cpuEngine } from "./_tiny.ts";
import { HeadPlan } from "../train/heads.ts";

Deno.test("heads: targets and scales go up packed, losses come back summed per total in order", () => {
  const e = cpuEngine();
  let grown = 0;
  const plan = new HeadPlan(e, 4, 1, () => grown++);
  try {
    plan.reset();
    const a = plan.add(Int32Array.of(1, -100, 2), 1, 0, true, 0.5, 4);
    const b = plan.add(Int32Array.of(3, 0), 0, -2, false);
    const c = plan.add(Int32Array.of(5), 1, -3, true, 1, 3);
    const q = plan.upload();
    assertEquals(grown, 1, "6 rows and 3 heads outgrow 4 rows and 1 head");
    assertEquals([a.off, b.off, c.off], [0, 3, 5]);
    const t = new Int32Array(6);
    e.download(t, plan.targets(a));
    assertEquals(Array.from(t), [1, -100, 2, 3, 0, 5]);
    assertEquals(plan.scale(b), null, "no gradient, no scale");
    const s = new Float32Array(1);
    e.download(s, plan.scale(c));
    assertEquals(s[0], Math.fround(1 / 3));
    e.download(s, plan.scale(a));
    assertEquals(s[0], 0.125);
    // What the heads' cross-entropies would write, then one read.
    e.upload(plan.losses(a), Float32Array.of(1, 0, 2));
    e.upload(plan.losses(b), Float32Array.of(4, 8));
    e.upload(plan.losses(c), Float32Array.of(16));
    assertEquals(plan.read(q, 3), [12, 19, 0]);
    // A smaller step fits the grown buffers.
    plan.reset();
    plan.add(Int32Array.of(7), 2, 0, false);
    plan.upload();
    assertEquals(grown, 1);
    assert(plan.bytes >= 6 * 8 + 3 * 4);
  } finally {
    plan.free();
  }
});

Deno.test("heads: steps queued before a read keep their losses apart, read in one download", () => {
  const e = cpuEngine();
  const plan = new HeadPlan(e, 2, 1);
  let downloads = 0;
  const download = e.download.bind(e);
  e.download = (dst, src) => (downloads++, download(dst, src));
  try {
    // Three steps of different plans, each one's losses written as its ops would.
    const step = (losses: number[][], into: number[]) => {
      plan.reset();
      const hs = losses.map((l, i) => plan.add(new Int32Array(l.length), into[i], i, false));
      const q = plan.upload();
      hs.forEach((h, i) => e.upload(plan.losses(h), Float32Array.from(losses[i])));
      return q;
    };
    const a = step([[1, 2], [4]], [0, 1]);
    const b = step([[8, 16, 32]], [1]);
    const c = step([[64], [128, 256], [512]], [2, 0, 2]);
    assertEquals(downloads, 0);
    assertEquals(plan.read(b, 3), [0, 56, 0]);
    assertEquals(downloads, 1, "one download for the three steps");
    assertEquals(plan.read(a, 2), [3, 4]);
    assertEquals(plan.read(c, 3), [384, 0, 576]);
    assertEquals(downloads, 1);
    // A step read at once downloads its own losses only; kept ones are gone after a read.
    const d = step([[5]], [0]);
    assertEquals(plan.read(d, 1), [5]);
    assertEquals(downloads, 2);
    assertEquals(plan.read(a, 2), [3, 4], "a read step keeps its totals");
  } finally {
    plan.free();
  }
});
