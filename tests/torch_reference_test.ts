// check/torch_reference.py on a machine without PyTorch: it compiles, says "no torch" with exit
// status 3 (which the GPU check turns into SKIPPED), builds LOTUS batches exactly as
// train/batch.ts does, and, run on check/torch_shim (a numpy stand-in for the few torch
// calls its forward makes), computes the same losses and logits as the CPU engine, while a
// perturbed engine fails its comparison. Skips, saying so, where python3 with numpy is missing.
import { assert, assertEquals } from "./_assert.ts";
import { cpuEngine } from "./_tiny.ts";
import { writeTorchCase } from "../check/torch_case.ts";
import { LLAMA_STEP_SPEC, randomExamples, specialsFor, STEP_SPECS } from "../check/parity.ts";
import { lotusBatch } from "../train/batch.ts";
import type { Engine } from "../engine/ffi.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const SCRIPT = `${ROOT}check/torch_reference.py`;
const SHIM = `${ROOT}check/torch_shim`;

function python(args: string[], env: Record<string, string> = {}, exe = "python3") {
  const out = new Deno.Command(exe, {
    args,
    env: { PYTHONDONTWRITEBYTECODE: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

function has(module: string, exe = "python3"): boolean {
  try {
    return python(["-c", `import ${module}`], {}, exe).code === 0;
  } catch {
    return false; // no such interpreter
  }
}

const NUMPY = has("numpy");
const TORCH = NUMPY && has("torch");
if (!NUMPY) console.error("torch_reference_test: python3 with numpy not found: tests skipped");
// An interpreter with real PyTorch: python3, or the system's (Debian's python3-torch, where a
// version manager's python3 comes first on PATH).
const TORCH_PY = ["python3", "/usr/bin/python3"].find((p) => has("numpy", p) && has("torch", p));
if (!TORCH_PY) {
  console.error(
    "torch_reference_test: no python3 with PyTorch (e.g. Debian's python3-torch): the real-torch " +
      "tests are skipped",
  );
}

interface Row {
  name: string;
  err: number | null;
  tol: number;
  pass: boolean;
  skipped?: boolean;
}

async function compare(engines: [string, Engine][], spec = STEP_SPECS[0], exe?: string) {
  const dir = await Deno.makeTempDir({ prefix: "lotus-torch-ref-test-" });
  try {
    await writeTorchCase(dir, engines, spec);
    const args = [SCRIPT, "compare", dir, "--json", `${dir}/rows.json`];
    // Without `exe`, the numpy stand-in for torch (check/torch_shim); with it, real PyTorch.
    const r = exe ? python(args, {}, exe) : python(args, { PYTHONPATH: SHIM });
    const rows: Row[] = JSON.parse(await Deno.readTextFile(`${dir}/rows.json`));
    return { ...r, rows };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name:
    "torch reference: compiles; without torch it exits 3, which the GPU check reports as skipped",
  ignore: !NUMPY || TORCH,
  fn() {
    const src = JSON.stringify(SCRIPT);
    const c = python(["-c", `compile(open(${src}).read(), ${src}, "exec")`]);
    assertEquals(c.code, 0, c.stderr);
    const r = python([SCRIPT, "compare", "/nonexistent"]);
    assertEquals(r.code, 3);
    assert(r.stderr.includes("PyTorch is not installed"), r.stderr);
    assertEquals(python([SCRIPT, "--help"]).code, 0);
  },
});

Deno.test({
  name: "torch reference: LOTUS batches match train/batch.ts lotusBatch",
  ignore: !NUMPY,
  fn() {
    const V = 40, sp = specialsFor(V);
    for (const [K, R, c] of [[2, 2, 3], [0, 0, 4], [3, 1, 2]]) {
      const exs = randomExamples(5, V, 100 + K);
      const want = lotusBatch(exs, sp, { K, R, c });
      const plain = exs.map((
        e,
      ) => [Array.from(e.q), e.steps.map((s) => Array.from(s)), Array.from(e.ans)]);
      const code = `
import json, sys
import numpy as np
sys.path.insert(0, ${JSON.stringify(`${ROOT}check`)})
import torch_reference as t
exs, sp = json.loads(${JSON.stringify(JSON.stringify([plain, sp]))})
exs = [(np.array(q, np.int32), [np.array(s, np.int32) for s in st], np.array(a, np.int32)) for q, st, a in exs]
b = t.lotus_batch(exs, sp, ${K}, ${R}, ${c})
print(json.dumps({k: v.ravel().tolist() for k, v in b.items()}))`;
      const r = python(["-c", code]);
      assertEquals(r.code, 0, r.stderr);
      const got = JSON.parse(r.stdout) as Record<string, number[]>;
      const fields: [string, ArrayLike<number>][] = [
        ["prefix_ids", want.prefixIds],
        ["prefix_pos", want.prefixPos],
        ["prefix_valid", want.prefixValid],
        ["loop_ids", want.loopIds],
        ["loop_ids_replace", want.loopIdsReplace],
        ["loop_pos", want.loopPos],
        ["loop_valid", want.loopValid],
        ["suffix_ids", want.suffixIds],
        ["suffix_pos", want.suffixPos],
        ["suffix_valid", want.suffixValid],
        ["suffix_targets", want.suffixTargets],
        ["step_targets", want.stepTargets],
        ["step_block", want.stepBlock],
      ];
      assertEquals(Object.keys(got).sort(), fields.map((f) => f[0]).sort());
      for (const [name, arr] of fields) {
        assertEquals(got[name], Array.from(arr), `${name} (K=${K})`);
      }
    }
  },
});

Deno.test({
  name: "torch reference (numpy stand-in): the same losses and logits as the CPU engine",
  ignore: !NUMPY || TORCH,
  async fn() {
    for (const spec of STEP_SPECS) { // "add" + step loss after; "replace" + in-loop
      const r = await compare([["cpu", cpuEngine()]], spec);
      assertEquals(r.code, 0, r.stdout + r.stderr);
      const ours = r.rows.filter((x) => x.name.startsWith("torch reference vs cpu"));
      assertEquals(ours.length, 5, r.stdout);
      for (const x of ours) {
        assert(x.pass && x.err !== null && x.err <= x.tol, `${spec.name}: ${x.name}: ${x.err}`);
      }
      const hf = r.rows.find((x) => x.name === "GPT2LMHeadModel");
      assert(hf?.skipped, "without transformers the HF comparison is skipped, not failed");
    }
  },
});

Deno.test({
  name: "torch reference (numpy stand-in): an engine 0.1% off fails the comparison",
  ignore: !NUMPY || TORCH,
  async fn() {
    const eng = cpuEngine();
    const off = new Proxy(eng, {
      get(target, key) {
        if (key === "matmulFwd") {
          return (...a: Parameters<Engine["matmulFwd"]>) => {
            target.matmulFwd(...a);
            target.scale(a[0], 1.001, a[4] * a[6]);
          };
        }
        const v = Reflect.get(target, key, target);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    const r = await compare([["off", off]]);
    assertEquals(r.code, 1, r.stdout);
    const logits = r.rows.find((x) => x.name === "torch reference vs off: suffix logits")!;
    assert(!logits.pass && logits.err! > 1e-4, `${logits.err}`);
  },
});

Deno.test({
  name: "torch reference (real PyTorch): the same losses and logits as the CPU engine",
  ignore: !TORCH_PY,
  async fn() {
    for (const spec of STEP_SPECS) {
      const r = await compare([["cpu", cpuEngine()]], spec, TORCH_PY);
      const ours = r.rows.filter((x) => x.name.startsWith("torch reference vs cpu"));
      assertEquals(ours.length, 5, r.stdout + r.stderr);
      for (const x of ours) {
        assert(x.pass && x.err !== null && x.err <= x.tol, `${spec.name}: ${x.name}: ${x.err}`);
      }
    }
  },
});

Deno.test({
  name:
    "torch reference (real PyTorch): a Llama (GQA, rotary, SwiGLU) gives the CPU engine's losses and logits",
  ignore: !TORCH_PY,
  async fn() {
    const r = await compare([["cpu", cpuEngine()]], LLAMA_STEP_SPEC, TORCH_PY);
    const ours = r.rows.filter((x) => x.name.startsWith("torch reference vs cpu"));
    assertEquals(ours.length, 5, r.stdout + r.stderr);
    for (const x of ours) {
      assert(x.pass && x.err !== null && x.err <= x.tol, `${x.name}: ${x.err}`);
    }
    console.log(r.stdout.trim());
  },
});

Deno.test({
  name: "torch reference (real PyTorch): an engine 0.1% off fails the Llama comparison",
  ignore: !TORCH_PY,
  async fn() {
    const eng = cpuEngine();
    const off = new Proxy(eng, {
      get(target, key) {
        if (key === "swigluFwd") {
          return (...a: Parameters<Engine["swigluFwd"]>) => {
            target.swigluFwd(...a);
            target.scale(a[0], 1.001, a[2] * a[3]);
          };
        }
        const v = Reflect.get(target, key, target);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    const r = await compare([["off", off]], LLAMA_STEP_SPEC, TORCH_PY);
    assertEquals(r.code, 1, r.stdout);
    const logits = r.rows.find((x) => x.name === "torch reference vs off: suffix logits")!;
    assert(!logits.pass, `${logits.err}`);
  },
});

Deno.test({
  name: "torch reference (real PyTorch): the training benchmark runs and reports its shape",
  ignore: !TORCH_PY,
  fn() {
    const r = python(
      [
        SCRIPT,
        "bench",
        "--preset",
        "tiny",
        "--vocab",
        "120",
        "--batch",
        "2",
        "--k",
        "2",
        "--c",
        "3",
        "--question",
        "10",
        "--answer",
        "4",
        "--dtype",
        "fp32",
        "--steps",
        "1",
      ],
      {},
      TORCH_PY,
    );
    assertEquals(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split("\n").pop()!);
    // 10 question positions, 3 passes over BOT + 2*3 latents, EOT + 4 answer tokens.
    assertEquals(out.positions, 10 + 3 * 7 + 5);
    assert(out.results.eager.examples_per_s > 0, r.stdout);
    assert(Number.isFinite(out.results.eager.loss), r.stdout);
  },
});
