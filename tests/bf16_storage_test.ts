// bf16 storage (le_alloc_bf16): each op that takes it against fp32 buffers of the same values on
// the CPU engine and the emulated CUDA engine at every precision (check/bf16_storage.ts), the
// arguments that refuse it, and a LOTUS step whose qkv or MLP projection is kept in bf16.
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { cpuEngine } from "./_tiny.ts";
import { buildCudaEmu, canEmulate } from "../check/cuda_emu.ts";
import { bf16Bits, bf16Widen, compareBf16Storage } from "../check/bf16_storage.ts";
import {
  LLAMA_STEP_SPEC,
  lotusLossAndGrad,
  perturbedParams,
  randomExamples,
  relErr,
  STEP_SPECS,
  TOLERANCES,
} from "../check/parity.ts";
import { type Engine, EngineError, openEngine } from "../engine/ffi.ts";
import { Arena, Chunk, stackWidths } from "../model/stack.ts";
import { stackShapeOf } from "../model/model.ts";
import { ModelConfigSchema } from "../model/config.ts";

Deno.test("bf16Bits rounds to nearest, ties to even, and bf16Widen is exact", () => {
  const x = Float32Array.of(1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -2.5, 1 + 2 ** -7 + 2 ** -9, NaN);
  const h = bf16Bits(x);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to the even one, 1; 1 + 3 * 2^-8 to 1 + 2^-6;
  // a quarter step over 1 + 2^-7 down to it.
  assertEquals(Array.from(bf16Widen(h)).slice(0, 5), [1, 1, 1 + 2 ** -6, -2.5, 1 + 2 ** -7]);
  assert(Number.isNaN(bf16Widen(h)[5]));
});

Deno.test("CPU engine: bf16 storage gives the bits of fp32 buffers of the same values", () => {
  for (const r of compareBf16Storage(cpuEngine(), "fp32")) {
    assert(r.pass && r.err === 0, `${r.name}: err ${r.err} (${r.note})`);
  }
});

/** The arguments that refuse a bf16 block, each failing with a message that names it. */
function refusals(e: Engine): void {
  const h = e.allocBf16(64), f = e.alloc(64 * 4);
  try {
    const fails = (fn: () => void, want: string) => {
      const err = assertThrows(fn, EngineError);
      assert(err.message.includes(want), err.message);
    };
    fails(() => e.geluFwd(h, f, 16), "le_gelu_fwd: out (");
    fails(() => e.geluFwd(h, f, 16), "lies in a bf16 block");
    fails(() => e.geluBwd(f, h, h, 16, true), "le_gelu_bwd: dout (");
    fails(() => e.matmulFwd(f, h, f, null, 2, 4, 4), "le_matmul_fwd: inp (");
    fails(() => e.copyRows(h, f, 1, 2, 4, 8, 4, 8, 4, false), "dst is bf16 and src is fp32");
    fails(() => e.copyRows(h, h, 1, 2, 4, 8, 8, 8, 4, true), "accumulate = 1 into a bf16 block");
    fails(() => e.copyRows(h, h, 1, 3, 8, 24, 4, 24, 8, false), "destination rows overlap");
    // qkv [1, 2, 3C] in bf16 with a past of one position in fp32 (C = 8, one head).
    fails(
      () => e.attentionStatsFwd(f, null, h, e.offset(f, 8 * 4), null, 1, 2, 1, 8, 1, 24, 24),
      "qkv is bf16 and kv_past is fp32",
    );
    fails(() => e.keepBf16(h, 8), "le_keep_bf16: p (");
  } finally {
    e.free(h);
    e.free(f);
  }
}

Deno.test("CPU engine: arguments that take no bf16 storage refuse it, naming it", () => {
  const e = cpuEngine();
  const before = e.bytesInUse();
  const h = e.allocBf16(10);
  assertEquals(e.bytesInUse() - before, 20);
  e.free(h);
  refusals(e);
});

Deno.test("CPU engine: a LOTUS step with qkv or the MLP's first projection in bf16 storage stays within bf16's step bounds", () => {
  const e = cpuEngine();
  for (const spec of STEP_SPECS) {
    const exs = randomExamples(spec.B, spec.model.vocabSize, 3);
    const params = perturbedParams(spec.model, 3);
    const f32 = lotusLossAndGrad(e, spec, params, exs);
    for (const [what, over] of [["qkv", { qkvBf16: true }], ["fch", { fchBf16: true }]] as const) {
      const b16 = lotusLossAndGrad(e, spec, params, exs, over);
      const lossRel = Math.abs(b16.loss - f32.loss) / Math.abs(f32.loss);
      assert(lossRel > 0, `${spec.name}: the losses are equal, so ${what} was not rounded`);
      assert(lossRel <= TOLERANCES.bf16.stepLoss, `${spec.name}, ${what}: loss ${lossRel}`);
      const g = relErr(b16.grad, f32.grad);
      assert(g <= TOLERANCES.bf16.stepGrad, `${spec.name}, ${what}: gradient ${g}`);
    }
  }
});

Deno.test("a Llama chunk refuses bf16 storage of qkv and of the MLP's projection", () => {
  const e = cpuEngine();
  const shape = stackShapeOf(LLAMA_STEP_SPEC.model, false);
  assert(stackWidths(shape).llama);
  const a = new Arena(e);
  try {
    for (const share of [{ qkvBf16: true }, { fchBf16: true }]) {
      assertThrows(() => new Chunk(a, shape, 1, 4, 0, true, false, share), Error, "Llama");
    }
  } finally {
    a.free();
  }
});

Deno.test({
  name: "emulated CUDA engine: bf16 storage at every precision, and its refusals",
  ignore: !canEmulate(),
  fn() {
    const e = openEngine({ backend: "cuda", libPath: buildCudaEmu() });
    try {
      for (const p of ["fp32", "tf32", "bf16"] as const) {
        for (const r of compareBf16Storage(e, p)) {
          assert(r.pass && r.err === 0, `${p} ${r.name}: err ${r.err} (${r.note})`);
        }
      }
      refusals(e);
      e.setPrecision(2);
      assert(e.keepsQkvBf16(64), "bf16 mode with the tensor-core attention keeps qkv in bf16");
      assert(!e.keepsQkvBf16(192), "heads over 128 take the fp32 kernels: fp32 qkv");
      assert(e.keepsFchBf16(), "bf16 mode keeps the MLP's first projection in bf16");
      const d = e.deviceInfo();
      assert(Number(d.bf16OutLt) > 0, "cuBLASLt wrote bf16 outputs in bf16 mode");
      assert(Number(d.bf16OutRounded) > 0, "a rounding pass wrote them in fp32 and TF32 modes");
      // A Llama model's aux decoder is a Llama stack too: the runner keeps its storage fp32 (the
      // default asks the stack's architecture), and a step runs.
      const spec = {
        ...LLAMA_STEP_SPEC,
        model: ModelConfigSchema.parse({ ...LLAMA_STEP_SPEC.model, auxLayers: 1 }),
        opts: { ...LLAMA_STEP_SPEC.opts, auxWeight: 0.5 },
      };
      const exs = randomExamples(spec.B, spec.model.vocabSize, 5);
      const r = lotusLossAndGrad(e, spec, perturbedParams(spec.model, 5), exs);
      assert(Number.isFinite(r.loss), `a Llama LOTUS-aux step in bf16: loss ${r.loss}`);
      e.setPrecision(0);
      assert(!e.keepsQkvBf16(64) && !e.keepsFchBf16(), "fp32 mode keeps fp32 storage");
    } finally {
      e.close();
    }
  },
});
