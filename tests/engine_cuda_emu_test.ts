// The CUDA engine's source, compiled for CPU threads (check/cuda_emu/README.md), against the
// CPU engine: every op at every precision, whole LOTUS steps, a short training run, memory
// cycles, the error messages and determinism. This checks the kernels' logic, indexing,
// barriers and reductions and the matmul mapping onto column-major cuBLAS; it cannot check
// the GPU itself (docs/gpu-check.md). Skips, saying so, where g++ cannot build it.
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { buildCudaEmu, canEmulate, emuCounters } from "../check/cuda_emu.ts";
import { cpuEngine } from "./_tiny.ts";
import { type Engine, EngineError, openEngine } from "../engine/ffi.ts";
import {
  compareLotusStep,
  compareOps,
  compareTraining,
  LLAMA_STEP_SPEC,
  memoryCycles,
  OP_CASES,
  STEP_SPECS,
  summarizeOps,
} from "../check/parity.ts";
import { GPT2_ATTN_STATS_CASES, GPT2_OP_CASES, REAL_STEP_SPEC } from "../check/parity_shapes.ts";

const OK = canEmulate();
if (!OK) console.error("engine_cuda_emu_test: g++ (C++20, Linux) not found: tests skipped");

let emu: Engine | null = null;
function emulated(): Engine {
  emu ??= openEngine({ backend: "cuda", libPath: buildCudaEmu() });
  return emu;
}

Deno.test({
  name: "emulated CUDA engine: every op matches the CPU engine at fp32, TF32 and bf16",
  ignore: !OK,
  fn() {
    const e = emulated();
    assertEquals(e.backend, "cuda");
    for (const p of ["fp32", "tf32", "bf16"] as const) {
      const rows = compareOps(e, cpuEngine(), p);
      const failed = rows.filter((r) => !r.pass).map((r) => `${r.name}: ${r.err}`);
      assertEquals(failed, [], `${p}: ${failed.join("; ")}`);
      // Only the matmuls change with the precision; every other op stays fp32.
      for (const r of rows.filter((r) => !r.name.startsWith("matmul"))) {
        assert(r.err <= 1e-6, `${p}: ${r.name}: ${r.err}`);
      }
      const mm = rows.filter((r) => r.name.startsWith("matmul fwd: 300"))[0];
      if (p === "fp32") assert(mm.err < 1e-6, `fp32 matmul ${mm.err}`);
      // A reduced precision must show: TF32 and bf16 rounding leave visible errors.
      else assert(mm.err > 1e-5, `${p} matmul error ${mm.err} is too small to be reduced`);
      assertEquals(summarizeOps(rows)[0].pass, true);
    }
  },
});

Deno.test({
  name: "emulated CUDA engine: every op at GPT-2 small's shapes (C 768, 12x64 heads, 150 keys, " +
    "V 50260) matches at fp32, TF32 and bf16, and a LOTUS step at 150 keys",
  ignore: !OK,
  fn() {
    const e = emulated();
    for (const p of ["fp32", "tf32", "bf16"] as const) {
      const rows = compareOps(e, cpuEngine(), p, { cases: GPT2_OP_CASES });
      const failed = rows.filter((r) => !r.pass).map((r) => `${r.name}: ${r.err}`);
      assertEquals(failed, [], `${p}: ${failed.join("; ")}`);
      // every op that is not a matmul is fp32 at every precision, and close to the CPU's
      for (
        const r of rows.filter((r) => !r.name.includes("matmul") && !r.name.includes("classifier"))
      ) {
        assert(r.err <= 1e-6, `${p}: ${r.name}: ${r.err}`);
      }
    }
    // The statistics form of attention, fp32 only (attention is fp32 at every precision).
    const stats = compareOps(e, cpuEngine(), "fp32", { cases: GPT2_ATTN_STATS_CASES });
    for (const r of stats) assert(r.pass && r.err <= 1e-6, `fp32: ${r.name}: ${r.err}`);
    assertEquals(stats.length, 8, "out and dqkv of each case, and dkv_past of the two pasts");
    for (const p of ["fp32", "bf16"] as const) {
      for (const r of compareLotusStep(e, cpuEngine(), p, REAL_STEP_SPEC)) {
        assert(r.pass, `${p} ${r.name}: ${r.err}`);
      }
    }
  },
});

Deno.test({
  name:
    "emulated CUDA engine: whole LOTUS steps match (both GPT-2 configurations and Llama; fp32 and bf16)",
  ignore: !OK,
  fn() {
    for (const spec of [...STEP_SPECS, LLAMA_STEP_SPEC]) {
      for (const r of compareLotusStep(emulated(), cpuEngine(), "fp32", spec)) {
        assert(r.pass, `${r.name}: ${r.err}`);
      }
    }
    for (const spec of [STEP_SPECS[0], LLAMA_STEP_SPEC]) {
      for (const r of compareLotusStep(emulated(), cpuEngine(), "bf16", spec)) {
        assert(r.pass, `bf16 ${spec.name}: ${r.name}: ${r.err}`);
      }
    }
  },
});

Deno.test({
  name: "emulated CUDA engine: a short training run tracks the CPU; memory returns after cycles",
  ignore: !OK,
  fn() {
    const t = compareTraining(emulated(), cpuEngine(), "fp32", 2);
    assert(t.rows[0].pass, `${t.rows[0].err} ${t.rows[0].note}`);
    const lib = buildCudaEmu();
    const rows = memoryCycles(() => openEngine({ backend: "cuda", libPath: lib }), {
      cycles: 3,
      warm: 1,
    });
    assert(rows[0].pass, `bytes in use grew by ${rows[0].err}`);
  },
});

Deno.test({
  name: "emulated CUDA engine: the CPU engine's error messages, and a failing call changes nothing",
  ignore: !OK,
  fn() {
    const engines = [emulated(), cpuEngine()];
    const msgs = engines.map((e) => {
      const out: string[] = [];
      const C = 4, V = 16, N = 3;
      const wte = e.alloc(V * C * 4), o = e.alloc(N * C * 4), ids = e.alloc(N * 4);
      const x = e.alloc(N * V * 4), losses = e.alloc(N * 4);
      try {
        e.upload(ids, Int32Array.of(1, 2, 99));
        const before = new Float32Array(N * C).fill(7);
        e.upload(o, before);
        const tryOp = (f: () => void) => {
          try {
            f();
            out.push("no error");
          } catch (err) {
            assert(err instanceof EngineError, String(err));
            out.push((err as Error).message.replace(/0x[0-9a-f]+/g, "0x?"));
          }
        };
        tryOp(() => e.embedFwd(o, ids, null, wte, null, N, C));
        const after = new Float32Array(N * C);
        e.download(after, o);
        assertEquals(after, before, "a failing call writes nothing");
        tryOp(() => e.xentFwdBwd(x, losses, ids, N, V, 1)); // target 99 >= V
        tryOp(() => e.matmulFwd(o, x, wte, null, -3, C, V));
        tryOp(() => e.matmulFwd(o, x, wte, null, N + 1, C, V)); // o needs more bytes
        tryOp(() => e.attentionFwd(o, x, x, x, null, 1, 1, 2, C, 2, 0, C)); // past_rs < 2C
        tryOp(() => e.free(e.offset(wte, 4)));
        tryOp(() => e.setPrecision(3 as 0));
      } finally {
        for (const p of [wte, o, ids, x, losses]) e.free(p);
      }
      return out;
    });
    assertEquals(msgs[0], msgs[1]);
    assert(
      msgs[0][0].startsWith("le_embed_fwd: ids[2] = 99 is outside the token table"),
      msgs[0][0],
    );
    assert(msgs[0][1].startsWith("le_xent_fwd_bwd: targets[2] = 99 is >= V = 16"), msgs[0][1]);
  },
});

Deno.test({
  name: "emulated CUDA engine: zero-filled allocations, and bit-identical repeated runs",
  ignore: !OK,
  fn() {
    const e = emulated();
    const p = e.alloc(1000); // the emulated cudaMalloc fills blocks with a pattern
    const z = new Uint8Array(1000);
    e.download(z, p);
    assert(z.every((v) => v === 0), "le_alloc zero-fills");
    e.free(p);
    const attn = OP_CASES.find((c) => c.name === "attention, past shared by the batch")!;
    const lnorm = OP_CASES.find((c) => c.name === "layernorm fwd, bwd")!;
    for (const c of [attn, lnorm]) {
      const a = c.run(e, 5), b = c.run(e, 5);
      for (const k of Object.keys(a)) assertEquals(a[k], b[k], `${c.name}: ${k}`);
    }
  },
});

globalThis.addEventListener("unload", () => emu?.close());

Deno.test({
  name: "both engines: a typed pointer that is not aligned to its element is refused",
  ignore: !OK,
  fn() {
    for (const e of [emulated(), cpuEngine()]) {
      const p = e.alloc(64 * 4);
      try {
        let msg = "";
        try {
          e.geluFwd(e.offset(p, 2), p, 8);
        } catch (err) {
          msg = (err as Error).message;
        }
        assert(msg.startsWith("le_gelu_fwd: out (0x"), `${e.backend}: ${msg}`);
        assert(msg.includes("is not aligned to 4 bytes"), `${e.backend}: ${msg}`);
      } finally {
        e.free(p);
      }
    }
  },
});

Deno.test({
  name: "emulated CUDA engine: uploads and repeated index checks need no host wait, and a " +
    "rewritten id array is checked again",
  ignore: !OK,
  fn() {
    const e = emulated(), lib = buildCudaEmu();
    const C = 4, V = 8, N = 3;
    const wte = e.alloc(V * C * 4), wpe = e.alloc(V * C * 4), out = e.alloc(N * C * 4);
    const ids = e.alloc(N * 4), pos = e.alloc(N * 4);
    try {
      e.upload(pos, Int32Array.of(0, 1, 2));
      const c0 = emuCounters(lib);
      e.upload(ids, Int32Array.of(1, 2, 3));
      assertEquals(emuCounters(lib).syncs - c0.syncs, 0, "a small upload waits");
      e.embedFwd(out, ids, pos, wte, wpe, N, C);
      const c1 = emuCounters(lib);
      assertEquals(c1.syncs - c0.syncs, 1, "the first check waits once");
      e.embedFwd(out, ids, pos, wte, wpe, N, C);
      e.embedBwd(wte, wpe, out, ids, pos, N, C);
      assertEquals(emuCounters(lib).syncs - c1.syncs, 0, "ids that passed were checked again");
      e.upload(ids, Int32Array.of(1, 99, 3));
      assertThrows(() => e.embedFwd(out, ids, pos, wte, wpe, N, C), EngineError, "99");
      e.zero(ids, N * 4);
      e.embedFwd(out, ids, pos, wte, wpe, N, C);
    } finally {
      for (const p of [wte, wpe, out, ids, pos]) e.free(p);
    }
  },
});
