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
    plan.upload();
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
    assertEquals(plan.read(3), [12, 19, 0]);
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
