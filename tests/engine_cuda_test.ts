// The CUDA engine on a machine without a GPU: it compiles with nvcc (no cuBLAS headers
// needed), exports exactly the ABI, loads, and fails cleanly; backend selection falls back
// to the CPU and says why. Tests that need nvcc skip, saying so, where it is missing.
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { buildEngine, EngineBuildError, planEngineBuild } from "../engine/build.ts";
import { EngineError, openEngine } from "../engine/ffi.ts";
import { probeCuda } from "../engine/cuda_probe.ts";
import { selectEngine } from "../engine/backend.ts";
import { findNvcc } from "../check/kernel_resources.ts";
import { ROOT, runDeno } from "./_run.ts";
import { tempDir } from "./_tmp.ts";

const ENGINE_DIR = new URL("../engine/", import.meta.url).pathname.replace(/\/$/, "");

const NVCC = findNvcc();
const GPU = probeCuda().available;
if (!NVCC) console.error("engine_cuda_test: nvcc not found: the CUDA build tests are skipped");
if (GPU) console.error("engine_cuda_test: a GPU is present: the no-GPU tests are skipped");

/** The le_* functions the header declares. */
function headerSymbols(): string[] {
  const h = Deno.readTextFileSync(`${ENGINE_DIR}/lotus_engine.h`);
  return [...new Set([...h.matchAll(/\b(le_[a-z0-9_]+)\s*\(/g)].map((m) => m[1]))].sort();
}

function run(cmd: string, args: string[]): string {
  const out = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).outputSync();
  assert(out.success, `${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

Deno.test({
  name: "cuda build: compiles without cuBLAS headers and exports exactly the ABI's symbols",
  ignore: !NVCC,
  fn() {
    const lib = buildEngine({ backend: "cuda", quiet: true, compiler: NVCC! });
    const want = headerSymbols();
    assertEquals(want.length, 66, "the header declares 66 functions");
    const exported = run("nm", ["-D", "--defined-only", lib]).split("\n")
      .map((l) => l.trim().split(/\s+/)).filter((f) => f.length === 3);
    // Every exported symbol, of any kind: no static CUDA runtime, no C++ instantiations.
    assertEquals(exported.map((f) => f[2]).sort(), want);
    assert(exported.every((f) => f[1] === "T"), "all exports are functions");
    // The CUDA runtime is linked statically and cuBLAS is loaded at run time, so the library
    // depends on neither.
    const needed = run("readelf", ["-d", lib]);
    for (const dep of ["libcudart", "libcublas", "libcuda.so"]) {
      assert(!needed.includes(dep), `the library must not depend on ${dep}`);
    }
    assert(needed.includes("NODELETE"), "-z nodelete: close() never unloads the CUDA runtime");
  },
});

Deno.test({
  name: "cuda build: the kernel files and the linker script are hashed; a missing script is named",
  ignore: !NVCC,
  fn() {
    const src = Deno.makeTempDirSync({ prefix: "lotus_cuda_src_" });
    try {
      Deno.mkdirSync(`${src}/cuda`);
      for (const f of ["engine_cuda.cu", "lotus_engine.h", "engine_checks.h", "comm_mpi.h"]) {
        Deno.copyFileSync(`${ENGINE_DIR}/${f}`, `${src}/${f}`);
      }
      for (const e of Deno.readDirSync(`${ENGINE_DIR}/cuda`)) {
        Deno.copyFileSync(`${ENGINE_DIR}/cuda/${e.name}`, `${src}/cuda/${e.name}`);
      }
      const plan = (extra?: string[]) =>
        planEngineBuild({
          backend: "cuda",
          sourceDir: src,
          outDir: src,
          compiler: NVCC!,
          extraFlags: extra,
        });
      const p1 = plan();
      assert(p1.hashedFiles.some((f) => f.endsWith("cuda/matmul.cuh")), "kernel files are hashed");
      assert(p1.hashedFiles.some((f) => f.endsWith("cuda/exports.map")), "the script is hashed");
      assert(p1.flags.includes(`--version-script=${src}/cuda/exports.map`));
      for (const f of ["-cudart", "static", "-fvisibility=hidden", "-z,nodelete", "-ldl"]) {
        assert(p1.flags.includes(f), `flag ${f}`);
      }
      Deno.writeTextFileSync(`${src}/cuda/matmul.cuh`, "// edited\n", { append: true });
      assert(plan().outPath !== p1.outPath, "editing a kernel file gives a new library name");
      Deno.removeSync(`${src}/cuda/exports.map`);
      assertThrows(() => plan(), EngineBuildError, "cuda/exports.map does not exist");
    } finally {
      Deno.removeSync(src, { recursive: true });
    }
  },
});

Deno.test({
  name: "cuda without a GPU: openEngine fails at once with an EngineError that says what to do",
  ignore: GPU,
  fn() {
    const e = assertThrows(() => openEngine({ backend: "cuda", quiet: true }), EngineError);
    assertEquals((e as EngineError).op, "cuInit");
    assert(/no NVIDIA driver|no GPU|failed to initialise/.test(e.message), e.message);
    assert(e.message.includes("--backend cpu"), e.message);
  },
});

/** The driver library's paths that `deno task train` grants --allow-ffi for, and the grant. */
const TRAIN_FFI = (JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).tasks.train as string)
  .match(/--allow-ffi=(\S+)/)![1];
const TASK_LIBCUDA = TRAIN_FFI.split(",").filter((p) => p.endsWith("/libcuda.so.1"));

function present(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "cuda without a driver: the probe says where it looked, and asks for --allow-ffi only " +
    "where it was denied",
  ignore: GPU || TASK_LIBCUDA.some(present),
  async fn() {
    const script = `${await tempDir()}/probe.ts`;
    const probe = new URL("../engine/cuda_probe.ts", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { probeCuda } from ${JSON.stringify(probe)};\nconsole.log(probeCuda().reason);\n`,
    );
    const reason = async (...flags: string[]) => {
      const r = await runDeno(["run", ...flags, script]);
      assertEquals(r.code, 0, r.stderr);
      return r.stdout.trim();
    };
    assert(TASK_LIBCUDA.length > 0, TRAIN_FFI);
    const none = `no NVIDIA driver on this machine (no driver library found: looked for ` +
      `${TASK_LIBCUDA.join(", ")}; one elsewhere needs --allow-ffi for its path)`;
    // As the tasks run it, reading the file system or not: every path granted, none there.
    assertEquals(await reason("--allow-read", `--allow-ffi=${TRAIN_FFI}`), none);
    assertEquals(await reason(`--allow-ffi=${TRAIN_FFI}`), none);
    // Paths not granted, and none there: no permission would find a driver.
    assertEquals(await reason("--allow-read", "--allow-ffi=build"), none);
    // Paths not granted that Deno may not read either: the permission is the advice.
    const denied = await reason("--allow-ffi=build");
    assert(denied.includes("grant --allow-ffi for libcuda.so.1"), denied);
    assert(denied.endsWith(`not granted: ${TASK_LIBCUDA.join(", ")}))`), denied);
  },
});

Deno.test({
  name: "cuda without a GPU: the library loads, and le_init fails with a message, not a crash",
  ignore: GPU || !NVCC,
  fn() {
    const lib = buildEngine({ backend: "cuda", quiet: true, compiler: NVCC! });
    for (let i = 0; i < 2; i++) { // the state after a failed le_init allows another try
      const e = assertThrows(() => openEngine({ backend: "cuda", libPath: lib }), EngineError);
      assertEquals((e as EngineError).op, "le_init");
      // No libcuda at all, or a libcuda without a usable GPU.
      assert(/^le_init: no (NVIDIA driver|usable NVIDIA GPU)/.test(e.message), e.message);
      assert(e.message.includes("--backend cpu"), e.message);
    }
    // Every op before le_init fails cleanly too.
    const raw = Deno.dlopen(lib, {
      le_alloc: { parameters: ["u64"], result: "usize" },
      le_matmul_fwd: {
        parameters: ["usize", "usize", "usize", "usize", "i32", "i32", "i32"],
        result: "i32",
      },
      le_last_error: { parameters: ["buffer", "u64"], result: "u64" },
      le_set_precision: { parameters: ["i32"], result: "i32" },
      le_backend: { parameters: [], result: "i32" },
    });
    try {
      const msg = () => {
        const buf = new Uint8Array(1024);
        const n = Number(raw.symbols.le_last_error(buf, 1024n));
        return new TextDecoder().decode(buf.subarray(0, n));
      };
      assertEquals(raw.symbols.le_backend(), 1, "the CUDA engine");
      assertEquals(Number(raw.symbols.le_alloc(16n)), 0);
      assert(msg().includes("call le_init first"), msg());
      assertEquals(raw.symbols.le_matmul_fwd(0n, 0n, 0n, 0n, 1, 1, 1), 1);
      assert(msg().startsWith("le_matmul_fwd: the CUDA engine is not initialised"), msg());
      assertEquals(raw.symbols.le_set_precision(2), 0, "bf16 is a CUDA mode");
      assertEquals(raw.symbols.le_set_precision(3), 1);
      assert(msg().includes("mode must be 0 (fp32), 1 (TF32) or 2 (bf16)"), msg());
      assertEquals(raw.symbols.le_set_precision(0), 0);
    } finally {
      raw.close();
    }
  },
});

Deno.test({
  name: "backend auto without a GPU: falls back to the CPU and says why",
  ignore: GPU,
  fn() {
    const lines: string[] = [];
    const eng = selectEngine("auto", { quiet: true, log: (s) => lines.push(s) });
    try {
      assertEquals(eng.backend, "cpu");
      assertEquals(lines.length, 1);
      assert(lines[0].startsWith("backend auto: "), lines[0]);
      assert(lines[0].endsWith("; using the CPU"), lines[0]);
      assert(/NVIDIA|GPU/.test(lines[0]), lines[0]);
    } finally {
      eng.close();
    }
    // The trainer's and inference's entry point does the same, and a reduced precision falls
    // back to fp32 with a word about it.
    const lines2: string[] = [];
    const eng2 = selectEngine("auto", {
      threads: 1,
      log: (s) => lines2.push(s),
      precision: "bf16",
    });
    try {
      assertEquals(eng2.backend, "cpu");
      assert(
        lines2[0].endsWith("using the CPU in fp32 (bf16 matmuls need the CUDA engine)"),
        lines2[0],
      );
    } finally {
      eng2.close();
    }
    // Training's CUDA default (cudaPrecision) is no request: the CPU runs fp32 without a word.
    const lines3: string[] = [];
    const eng3 = selectEngine("auto", {
      threads: 1,
      log: (s) => lines3.push(s),
      cudaPrecision: "bf16",
    });
    try {
      assertEquals(eng3.backend, "cpu");
      assert(lines3[0].endsWith("; using the CPU"), lines3[0]);
    } finally {
      eng3.close();
    }
    const eng4 = selectEngine("cpu", { cudaPrecision: "bf16", quiet: true });
    assertEquals(eng4.backend, "cpu");
    eng4.close();
  },
});

Deno.test("precision: the CPU engine takes fp32 only; an unknown precision is an error", () => {
  const e = assertThrows(
    () => selectEngine("cpu", { precision: "bf16", quiet: true }),
    EngineError,
    "the CPU engine computes in fp32 only (mode 0); mode 2 needs the CUDA engine",
  );
  assertEquals((e as EngineError).op, "le_set_precision");
  assertThrows(
    () => openEngine({ precision: "fp16" as "fp32", quiet: true }),
    EngineError,
    'unknown precision "fp16": use fp32, tf32 or bf16',
  );
  // A name of Object.prototype's is no precision either.
  assertThrows(
    () => openEngine({ precision: "toString" as "fp32", quiet: true }),
    EngineError,
    'unknown precision "toString"',
  );
  assertThrows(() => selectEngine("tpu" as "cpu", {}), EngineError, 'unknown backend "tpu"');
  const eng = selectEngine("cpu", { precision: "fp32", quiet: true });
  assertEquals(eng.backend, "cpu");
  eng.close();
});
