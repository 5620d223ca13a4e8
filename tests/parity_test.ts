// The GPU check's own logic (check/parity.ts) with the CPU engine standing in for both
// engines: identical engines agree exactly, a perturbed engine is caught, NaN never passes,
// every op of the ABI is exercised, and the table says what happened.
import { assert, assertEquals } from "./_assert.ts";
import { cpuEngine } from "./_tiny.ts";
import { type Engine, openEngine, type Ptr } from "../engine/ffi.ts";
import {
  checkRow,
  compareLotusStep,
  compareOps,
  compareTraining,
  formatTable,
  LLAMA_STEP_SPEC,
  memoryCycles,
  mismatches,
  OP_CASES,
  relErr,
  skippedRow,
  STEP_SPECS,
  summarizeOps,
  tally,
  TOLERANCES,
  withEngineSettings,
} from "../check/parity.ts";

/** `eng` with some methods replaced; everything else forwards to the real engine. */
function patched(eng: Engine, over: Partial<Record<keyof Engine, unknown>>): Engine {
  return new Proxy(eng, {
    get(target, key) {
      if (key in over) return over[key as keyof Engine];
      const v = Reflect.get(target, key, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/** An engine whose GELU forward output is scaled by 1 + rel after the real op ran. */
function perturbedGelu(eng: Engine, rel: number): Engine {
  return patched(eng, {
    geluFwd: (out: Ptr, inp: Ptr, n: number) => {
      eng.geluFwd(out, inp, n);
      eng.scale(out, 1 + rel, n);
    },
  });
}

Deno.test("relErr: norm-wise relative error; NaN, infinities and length mismatches never pass", () => {
  assertEquals(relErr([1, 2, 3], [1, 2, 3]), 0);
  const e = relErr([3, 4], [3, 4.1]);
  assert(Math.abs(e - 0.1 / Math.hypot(3, 4.1)) < 1e-15, `got ${e}`);
  assertEquals(relErr([0.5], [0]), 0.5, "absolute error when the reference is zero");
  assertEquals(relErr([NaN, 1], [1, 1]), Infinity);
  assertEquals(relErr([1, 1], [1, NaN]), Infinity);
  assertEquals(relErr([Infinity], [Infinity]), Infinity);
  assertEquals(relErr([1], [1, 2]), Infinity);
  assertEquals(mismatches(Int32Array.of(1, 2, 3), Int32Array.of(1, 5, 3)), 1);
  assertEquals(mismatches([1], [1, 2]), Infinity);
  assert(checkRow("ops", "x", "fp32", 1e-5, 1e-5).pass, "the bound itself passes");
  assert(!checkRow("ops", "x", "fp32", 1.01e-5, 1e-5).pass);
  assert(!checkRow("ops", "x", "fp32", NaN, 1).pass, "NaN never passes");
  assert(!checkRow("ops", "x", "fp32", Infinity, Infinity).pass, "inf never passes");
  // The stated tolerances: about 1e-5, 1e-3 and 1e-2 per op, wider for whole steps.
  assertEquals([TOLERANCES.fp32.op, TOLERANCES.tf32.op, TOLERANCES.bf16.op], [1e-5, 1e-3, 1e-2]);
  for (const t of Object.values(TOLERANCES)) assert(t.stepGrad >= t.op && t.curve >= t.stepLoss);
});

Deno.test("ops: the same engine on both sides agrees exactly, and every ABI op is exercised", () => {
  const eng = cpuEngine();
  const called = new Set<string>();
  const spy = new Proxy(eng, {
    get(target, key) {
      const v = Reflect.get(target, key, target);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        called.add(String(key));
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  const rows = compareOps(spy, eng, "fp32");
  assert(rows.length >= 50, `${rows.length} outputs`);
  for (const r of rows) {
    assertEquals(r.err, 0, r.name);
    assert(r.pass, r.name);
  }
  const ops = [
    "copyRows",
    "add",
    "scale",
    "embedFwd",
    "embedBwd",
    "layernormFwd",
    "layernormBwd",
    "residualLayernormFwd",
    "matmulFwd",
    "matmulBwd",
    "geluFwd",
    "geluBwd",
    "attentionFwd",
    "attentionBwd",
    "attentionStatsFwd",
    "attentionStatsBwd",
    "rmsnormFwd",
    "rmsnormBwd",
    "residualRmsnormFwd",
    "rope",
    "swigluFwd",
    "swigluBwd",
    "attentionGqaFwd",
    "attentionGqaBwd",
    "attentionGqaStatsFwd",
    "attentionGqaStatsBwd",
    "xentFwdBwd",
    "argmax",
    "sumsq",
    "adamw",
    "alloc",
    "free",
    "upload",
    "download",
  ];
  for (const op of ops) assert(called.has(op), `no case calls ${op}`);
  assertEquals(new Set(OP_CASES.map((c) => c.name)).size, OP_CASES.length, "case names are unique");
  const [sum] = summarizeOps(rows);
  assert(sum.pass);
  assertEquals(sum.precision, "fp32");
  assert(sum.name.startsWith(`${rows.length} outputs of ${OP_CASES.length} cases`), sum.name);
});

Deno.test("ops: a 1e-4 error in one op fails fp32, and a NaN fails every precision's bound", () => {
  const eng = cpuEngine();
  const gelu = OP_CASES.filter((c) => c.name.startsWith("gelu"));
  const rows = compareOps(perturbedGelu(eng, 1e-4), eng, "fp32", { cases: gelu });
  const out = rows.find((r) => r.name === "gelu fwd, bwd: out")!;
  assert(!out.pass && Math.abs(out.err - 1e-4) < 1e-6, `err ${out.err}`);
  assert(rows.find((r) => r.name === "gelu fwd, bwd: dinp")!.pass, "the backward is untouched");
  const [sum] = summarizeOps(rows);
  assert(!sum.pass);
  // Both forwards of the case (aligned and one element in) are perturbed.
  assert(
    sum.note!.startsWith("2 failed: gelu fwd, bwd: out; gelu fwd, bwd: out (unaligned)"),
    sum.note,
  );
  // 1e-4 is within the TF32 and bf16 bounds, which the same row would be checked against.
  assert(out.err <= TOLERANCES.tf32.op && out.err <= TOLERANCES.bf16.op);

  const nan = patched(eng, {
    geluFwd: (o: Ptr, i: Ptr, n: number) => {
      eng.geluFwd(o, i, n);
      eng.upload(o, new Float32Array([NaN]));
    },
  });
  const nrows = compareOps(nan, eng, "fp32", { cases: gelu });
  const bad = nrows.find((r) => r.name === "gelu fwd, bwd: out")!;
  assertEquals(bad.err, Infinity);
  assert(!bad.pass);
  assert(summarizeOps(nrows)[0].err === Infinity, "the summary shows the NaN as the worst");

  // An integer output that differs by one element fails with its count.
  const argmaxCase = OP_CASES.filter((c) => c.name === "argmax");
  const off = patched(eng, {
    argmax: (o: Ptr, l: Ptr, N: number, V: number) => {
      eng.argmax(o, l, N, V);
      eng.upload(o, Int32Array.of(-5));
    },
  });
  const [am] = compareOps(off, eng, "fp32", { cases: argmaxCase });
  assertEquals([am.err, am.pass], [1, false]);
});

Deno.test("lotus step: identical engines agree; a wrong weight gradient is caught", () => {
  const eng = cpuEngine();
  for (const spec of [...STEP_SPECS, LLAMA_STEP_SPEC]) {
    const rows = compareLotusStep(eng, eng, "fp32", spec);
    assertEquals(rows.length, 2);
    for (const r of rows) assert(r.pass && r.err === 0, `${r.name}: ${r.err}`);
  }
  // dW 0.1% too large in every linear layer: the loss is the same, the gradients are not.
  const wrong = patched(eng, {
    matmulBwd: (
      dinp: Ptr,
      dw: Ptr,
      db: Ptr,
      dout: Ptr,
      inp: Ptr,
      w: Ptr,
      N: number,
      Cin: number,
      Cout: number,
    ) => {
      eng.matmulBwd(dinp, null, db, dout, inp, w, N, Cin, Cout);
      if (dw) {
        const tmp = eng.alloc(Cout * Cin * 4);
        eng.matmulBwd(null, tmp, null, dout, inp, w, N, Cin, Cout);
        eng.scale(tmp, 1.001, Cout * Cin);
        eng.add(dw, dw, tmp, Cout * Cin);
        eng.free(tmp);
      }
    },
  });
  const [loss, grads] = compareLotusStep(wrong, eng, "fp32", STEP_SPECS[0]);
  assert(loss.pass, "the forward is untouched");
  assert(!grads.pass && grads.err > 1e-4, `gradient error ${grads.err}`);
});

Deno.test("training: the curves of identical engines match; a drifting optimiser is caught", () => {
  const eng = cpuEngine();
  const ok = compareTraining(eng, eng, "fp32", 6);
  assertEquals(ok.rows[0].err, 0);
  assert(ok.rows[0].pass);
  assertEquals(ok.test.losses.length, 6);
  assert(ok.ref.losses[5] < ok.ref.losses[0], "the loss goes down");
  const drift = patched(eng, {
    adamw: (...args: unknown[]) => {
      const a = [...args] as Parameters<Engine["adamw"]>;
      a[5] = (a[5] as number) * 3; // three times the learning rate
      eng.adamw(...a);
    },
  });
  const bad = compareTraining(drift, eng, "fp32", 6, ok.ref);
  assert(!bad.rows[0].pass, `curve error ${bad.rows[0].err}`);
  assert(bad.rows[0].note!.includes("worst at step"), bad.rows[0].note);
});

Deno.test("memory cycles: a clean engine passes, one that leaks a block per cycle fails", () => {
  const open = () => openEngine({ backend: "cpu", threads: 2, quiet: true });
  const rows = memoryCycles(open, { cycles: 4, warm: 2 });
  assert(rows[0].pass && rows[0].err === 0, `${rows[0].err}`);
  assert(rows[1].skipped, "no driver: the driver's view is skipped, not passed");
  let leaks: Ptr[] = [];
  const leaky = () => {
    const eng = open();
    leaks.push(eng.alloc(4096)); // never freed by the cycle
    return eng;
  };
  const bad = memoryCycles(leaky, {
    cycles: 3,
    warm: 1,
    memInfo: () => ({ free: 1e9 - leaks.length * 64e6, total: 2e9 }),
  });
  assert(!bad[0].pass && bad[0].err > 0, `leak ${bad[0].err}`);
  assert(!bad[1].pass, "the driver's view shows the growth");
  const eng = open();
  for (const p of leaks) eng.free(p);
  leaks = [];
  eng.close();
});

Deno.test("report: the table lists every row with its result, aligned; tally counts them", () => {
  const rows = [
    checkRow("ops", "gelu fwd", "fp32", 2e-7, 1e-5, "fine"),
    checkRow("ops", "matmul fwd", "bf16", 0.5, 1e-2),
    skippedRow("torch", "PyTorch reference", "no torch"),
  ];
  const t = formatTable(rows).split("\n");
  assertEquals(t.length, 5);
  assert(t[0].startsWith("section") && t[0].includes("tolerance"));
  assert(/^-+-\|-/.test(t[1]));
  assert(t[2].includes("2.0e-7") && t[2].includes("| ok") && t[2].endsWith("fine"), t[2]);
  assert(t[3].includes("5.0e-1") && t[3].includes("FAIL"), t[3]);
  assert(t[4].includes("SKIPPED") && t[4].endsWith("no torch"), t[4]);
  const bar = t[0].indexOf("| precision");
  for (const l of t.slice(2)) assertEquals(l.indexOf("|", 20), t[0].indexOf("|", 20), l);
  assert(bar > 0);
  assertEquals(tally(rows), { passed: 1, failed: 1, skipped: 1 });
});

Deno.test("engine settings: a comparison's settings are put back as they were, set or unset", () => {
  // bench/gpu_all.sh exports the settings that turn off a change its preflight found failing;
  // a comparison that sets one of them must leave it set, not remove it.
  const seen: (string | undefined)[] = [];
  const open = () => {
    seen.push(Deno.env.get("LOTUS_PDL"));
    return { close() {} } as unknown as Engine;
  };
  const before = Deno.env.get("LOTUS_PDL");
  try {
    Deno.env.set("LOTUS_PDL", "0");
    assertEquals(withEngineSettings(open, { LOTUS_PDL: "1", LOTUS_TC_WARPS: "4" }, () => 7), 7);
    assertEquals(seen, ["1", "0"], "opened with the setting, then again as before");
    assertEquals(Deno.env.get("LOTUS_PDL"), "0");
    assertEquals(Deno.env.get("LOTUS_TC_WARPS"), undefined);
    Deno.env.delete("LOTUS_PDL");
    withEngineSettings(open, { LOTUS_PDL: "0" }, () => {});
    assertEquals(Deno.env.get("LOTUS_PDL"), undefined);
  } finally {
    before === undefined ? Deno.env.delete("LOTUS_PDL") : Deno.env.set("LOTUS_PDL", before);
  }
});
