// The host emulation's own checks (check/cuda_emu/emu.h): deliberately faulty kernels that
// the emulation must catch, beside correct versions it must accept. Then the engine's real
// kernels under the expensive checks (LOTUS_EMU_CHECK=all, and every launch in reverse
// order). Skips, saying so, where g++ cannot build the emulation.
import { assert, assertEquals } from "./_assert.ts";
import { buildCudaEmu, buildEmuSelftest, canEmulate } from "../check/cuda_emu.ts";
import { cpuEngine } from "./_tiny.ts";
import { openEngine } from "../engine/ffi.ts";
import { compareLotusStep, compareOps, LLAMA_STEP_SPEC, STEP_SPECS } from "../check/parity.ts";

const OK = canEmulate();
if (!OK) console.error("cuda_emu_selftest_test: g++ (C++20, Linux) not found: tests skipped");

Deno.test({
  name: "cuda emulation: each faulty kernel is caught, and its correct version passes",
  ignore: !OK,
  fn() {
    const out = new Deno.Command(buildEmuSelftest(), { stdout: "piped", stderr: "piped" })
      .outputSync();
    assert(out.success, new TextDecoder().decode(out.stderr));
    const got: Record<string, number> = {};
    for (const l of new TextDecoder().decode(out.stdout).trim().split("\n")) {
      const [name, caught] = l.split(" ");
      got[name] = Number(caught);
    }
    assertEquals(got, {
      // (a) a missing __syncthreads: hidden by index order, caught by the order check and
      // shown as NaN by reverse order with poisoned shared memory
      "missing-sync": 1,
      "with-sync": 0,
      "missing-sync-unchecked": 0,
      "missing-sync-reverse": 1,
      // (b) races between blocks: a non-atomic += by every block, a chain of reads of
      // another block's write; atomics and owned words pass
      "block-race": 1,
      "block-owned": 0,
      "block-chain": 1,
      "atomic-min": 0,
      // (c) full-mask shuffles without 32 live lanes
      "shuffle-exited": 1,
      "shuffle-small-block": 1,
      "shuffle-full": 0,
      "shuffle-half-mask": 0,
      // (d) launch limits
      "threads-1025": 1,
      "threads-1024": 0,
      "smem-49k": 1,
      "smem-49k-optin": 0,
      "grid-y-65536": 1,
      // (e) shared memory never carries a value from an earlier block
      "stale-shared": 1,
      // (f) cudaMemcpyAsync lands at the synchronisation, not before
      "async-copy": 1,
      // (g) the tensor-core product: exact from registers laid out as PTX documents them;
      // a warp with lanes gone faults
      "mma-product": 0,
      "mma-exited": 1,
      // (h) cp.async: its bytes are in shared memory only after the thread's wait and a
      // barrier; a thread may not return with copies in flight
      "cp-async": 0,
      "cp-async-before-wait": 1,
      "cp-async-no-barrier": 1,
      "cp-async-never-waited": 1,
      // ... and a copy over a buffer that another thread may still read is caught by the order
      // check, whose second run lands copies when they are issued
      "cp-async-overwrite": 1,
      "cp-async-overwrite-barrier": 0,
    });
    const err = new TextDecoder().decode(out.stderr);
    assert(err.includes("neighbour_nosync: the result depends on the order"), err);
    assert(err.includes("sum_race: blocks 0 and 1 both wrote"), err);
  },
});

function withEnv(vars: Record<string, string>, fn: () => void): void {
  for (const [k, v] of Object.entries(vars)) Deno.env.set(k, v);
  try {
    fn();
  } finally {
    for (const k of Object.keys(vars)) Deno.env.delete(k);
  }
}

Deno.test({
  name:
    "cuda emulation: the engine's kernels (GPT-2 and Llama steps) pass the order and write checks, and reverse order",
  ignore: !OK,
  fn() {
    const e = openEngine({ backend: "cuda", libPath: buildCudaEmu() });
    try {
      const envs: Record<string, string>[] = [
        { LOTUS_EMU_CHECK: "all" },
        { LOTUS_EMU_ORDER: "reverse" },
      ];
      for (const env of envs) {
        withEnv(env, () => {
          const rows = compareOps(e, cpuEngine(), "fp32");
          const failed = rows.filter((r) => !r.pass).map((r) => `${r.name}: ${r.err}`);
          assertEquals(failed, [], `${JSON.stringify(env)}: ${failed.join("; ")}`);
          for (const spec of [STEP_SPECS[1], LLAMA_STEP_SPEC]) {
            for (const r of compareLotusStep(e, cpuEngine(), "fp32", spec)) {
              assert(r.pass, `${JSON.stringify(env)}: ${spec.name}: ${r.name}: ${r.err}`);
            }
          }
        });
      }
    } finally {
      e.close();
    }
  },
});

Deno.test({
  name: "cuBLAS lookup: explicit file, sonames, toolkit directories, then pip packages, in order",
  ignore: !OK,
  async fn() {
    const root = await Deno.makeTempDir({ prefix: "lotus-cublas-" });
    try {
      const lib = (dir: string, v = "13") => {
        Deno.mkdirSync(`${root}${dir}`, { recursive: true });
        Deno.writeTextFileSync(`${root}${dir}/libcublas.so.${v}`, "");
      };
      lib("/usr/local/cuda/lib64");
      lib("/usr/local/cuda-12.4/targets/x86_64-linux/lib", "12");
      lib("/usr/local/cuda-13.0/targets/x86_64-linux/lib");
      lib("/venv/lib/python3.12/site-packages/nvidia/cublas/lib");
      lib("/usr/local/lib/python3.11/dist-packages/nvidia/cu13/lib");
      lib("/home/u/.local/lib/python3.10/site-packages/nvidia/cublas/lib", "12");
      lib("/toolkit/lib64");
      const run = (env: Record<string, string>) => {
        const out = new Deno.Command(buildEmuSelftest(), {
          args: ["cublas-candidates", root],
          env: { HOME: `${root}/home/u`, ...env },
          clearEnv: true,
          stdout: "piped",
        }).outputSync();
        assert(out.success);
        return new TextDecoder().decode(out.stdout).trim().split("\n").map((l) =>
          l.replaceAll(root, "")
        );
      };
      assertEquals(run({ VIRTUAL_ENV: `${root}/venv`, CUDA_HOME: `${root}/toolkit` }), [
        "libcublas.so.13 libcublasLt.so.13",
        "libcublas.so.12 libcublasLt.so.12",
        "/toolkit/lib64/libcublas.so.13 /toolkit/lib64/libcublasLt.so.13",
        "/usr/local/cuda/lib64/libcublas.so.13 /usr/local/cuda/lib64/libcublasLt.so.13",
        "/usr/local/cuda-13.0/targets/x86_64-linux/lib/libcublas.so.13 " +
        "/usr/local/cuda-13.0/targets/x86_64-linux/lib/libcublasLt.so.13",
        "/usr/local/cuda-12.4/targets/x86_64-linux/lib/libcublas.so.12 " +
        "/usr/local/cuda-12.4/targets/x86_64-linux/lib/libcublasLt.so.12",
        "/venv/lib/python3.12/site-packages/nvidia/cublas/lib/libcublas.so.13 " +
        "/venv/lib/python3.12/site-packages/nvidia/cublas/lib/libcublasLt.so.13",
        "/home/u/.local/lib/python3.10/site-packages/nvidia/cublas/lib/libcublas.so.12 " +
        "/home/u/.local/lib/python3.10/site-packages/nvidia/cublas/lib/libcublasLt.so.12",
        "/usr/local/lib/python3.11/dist-packages/nvidia/cu13/lib/libcublas.so.13 " +
        "/usr/local/lib/python3.11/dist-packages/nvidia/cu13/lib/libcublasLt.so.13",
      ]);
      // An explicit file is the only candidate: a wrong path fails instead of falling back.
      assertEquals(run({ LOTUS_CUBLAS: "/opt/x/libcublas.so.12" }), [
        "/opt/x/libcublas.so.12 /opt/x/libcublasLt.so.12",
      ]);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});
