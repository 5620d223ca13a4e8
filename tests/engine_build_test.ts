// The engine build: hashed file names, reuse, atomic replacement, and clear errors.
import {
  BUILD_STOP_SIGNALS,
  buildEngine,
  EngineBuildError,
  planEngineBuild,
} from "../engine/build.ts";
import { STOP_SIGNALS } from "../base/signals.ts";
import { LE_ABI_VERSION } from "../engine/ffi.ts";
import { assert, assertEquals, assertThrows } from "./_assert.ts";

const ENGINE_DIR = new URL("../engine/", import.meta.url).pathname.replace(/\/$/, "");

/** A scratch copy of the engine sources, so tests can edit them. */
function copySources(): string {
  const dir = Deno.makeTempDirSync({ prefix: "lotus_engine_src_" });
  for (const f of ["engine_cpu.cpp", "lotus_engine.h", "engine_checks.h", "comm_mpi.h"]) {
    Deno.copyFileSync(`${ENGINE_DIR}/${f}`, `${dir}/${f}`);
  }
  return dir;
}

function withTempDirs(fn: (src: string, out: string) => void): () => void {
  return () => {
    const src = copySources();
    const out = Deno.makeTempDirSync({ prefix: "lotus_engine_out_" });
    try {
      fn(src, out);
    } finally {
      Deno.removeSync(src, { recursive: true });
      Deno.removeSync(out, { recursive: true });
    }
  };
}

Deno.test("plan: stable name under build/; a changed flag, source or header changes it", () => {
  const a = planEngineBuild();
  const b = planEngineBuild();
  assertEquals(a.outPath, b.outPath);
  assert(
    /\/build\/liblotus_engine_cpu-[0-9a-f]{16}\.so$/.test(a.outPath),
    `unexpected path ${a.outPath}`,
  );
  assert(!a.outPath.includes(".."), "the path is normalised");
  assertEquals(a.outPath.slice(-19, -3), a.hash.slice(0, 16));
  for (const f of ["-O3", "-std=c++17", "-fopenmp", "-fPIC", "-shared"]) {
    assert(a.flags.includes(f), `flag ${f}`);
  }
  if (Deno.build.os === "linux") {
    assert(a.flags.includes("-march=native"), "-march=native where the CPU can be identified");
  }
  const flagged = planEngineBuild({ extraFlags: ["-DLE_TEST_FLAG=1"] });
  assert(flagged.outPath !== a.outPath, "a changed flag gives a new name");
});

Deno.test(
  "plan: editing the source or the header gives a new name",
  withTempDirs((src, out) => {
    const p1 = planEngineBuild({ sourceDir: src, outDir: out }).outPath;
    assertEquals(planEngineBuild({ sourceDir: src, outDir: out }).outPath, p1);
    Deno.writeTextFileSync(`${src}/engine_cpu.cpp`, "// edited\n", { append: true });
    const p2 = planEngineBuild({ sourceDir: src, outDir: out }).outPath;
    assert(p2 !== p1, "an edited source gives a new name");
    Deno.writeTextFileSync(`${src}/lotus_engine.h`, "/* edited */\n", { append: true });
    const p3 = planEngineBuild({ sourceDir: src, outDir: out }).outPath;
    assert(p3 !== p2 && p3 !== p1, "an edited header gives a new name");
    Deno.writeTextFileSync(`${src}/engine_checks.h`, "// edited\n", { append: true });
    const p4 = planEngineBuild({ sourceDir: src, outDir: out }).outPath;
    assert(![p1, p2, p3].includes(p4), "edited shared checks give a new name");
  }),
);

Deno.test(
  "build: compiles once, then reuses; force replaces the file atomically under a loaded copy",
  withTempDirs((src, out) => {
    const path = buildEngine({ sourceDir: src, outDir: out, quiet: true });
    const st1 = Deno.statSync(path);
    assertEquals(buildEngine({ sourceDir: src, outDir: out, quiet: true }), path);
    assertEquals(Deno.statSync(path).mtime, st1.mtime, "an up-to-date library is not rebuilt");

    const lib = Deno.dlopen(path, { le_abi_version: { parameters: [], result: "i32" } });
    try {
      assertEquals(buildEngine({ sourceDir: src, outDir: out, quiet: true, force: true }), path);
      // A new file renamed into place (new inode), not the loaded one overwritten: the loaded
      // copy keeps working.
      assert(Deno.statSync(path).ino !== st1.ino, "force writes a new file and renames it");
      assertEquals(lib.symbols.le_abi_version(), LE_ABI_VERSION);
    } finally {
      lib.close();
    }
    const names = [...Deno.readDirSync(out)].map((e) => e.name).filter((n) =>
      n !== "compilers.json"
    );
    assertEquals(names, [path.slice(out.length + 1)], "no temporary files are left behind");
  }),
);

Deno.test(
  "plan: the compiler's --version is remembered, so a built engine opens without running it",
  withTempDirs((src, out) => {
    // A compiler wrapper that counts its runs.
    const count = `${src}/runs.txt`, wrapper = `${src}/cxx.sh`;
    Deno.writeTextFileSync(wrapper, `#!/bin/sh\necho x >> '${count}'\nexec g++ "$@"\n`);
    Deno.chmodSync(wrapper, 0o755);
    const runs = () => {
      try {
        return Deno.readTextFileSync(count).split("\n").filter((l) => l).length;
      } catch {
        return 0;
      }
    };
    const p1 = planEngineBuild({ sourceDir: src, outDir: out, compiler: wrapper }).outPath;
    assertEquals(runs(), 1, "the first plan asks the compiler its version");
    const p2 = planEngineBuild({ sourceDir: src, outDir: out, compiler: wrapper }).outPath;
    assertEquals(p2, p1);
    assertEquals(runs(), 1, "the second plan reads it from compilers.json");
    // Another compiler file (another size and date) is asked again.
    Deno.writeTextFileSync(wrapper, "\n# changed\n", { append: true });
    planEngineBuild({ sourceDir: src, outDir: out, compiler: wrapper });
    assertEquals(runs(), 2);
  }),
);

Deno.test(
  "build: the first build into a directory not made yet remembers the compiler's --version",
  withTempDirs((src, out) => {
    // A compiler that answers --version with a line of its own and "compiles" by copying the
    // engine already built (the build is not what this test is about).
    const built = buildEngine({ quiet: true }), wrapper = `${src}/cxx.sh`;
    Deno.writeTextFileSync(
      wrapper,
      `#!/bin/sh\ncase "$*" in *--version*) echo "cxx ${src}"; exit 0;; esac\n` +
        `while [ $# -gt 0 ]; do [ "$1" = -o ] && cp '${built}' "$2"; shift; done\n`,
    );
    Deno.chmodSync(wrapper, 0o755);
    const fresh = `${out}/not-yet`;
    buildEngine({ sourceDir: src, outDir: fresh, compiler: wrapper, quiet: true });
    const known = JSON.parse(Deno.readTextFileSync(`${fresh}/compilers.json`));
    assertEquals(Object.values(known), [`cxx ${src}`], "the next process need not ask again");
  }),
);

Deno.test(
  "build: a compiler stopped by a signal (Ctrl-C reaches it too) is a stopped build, not an error",
  withTempDirs((src, out) => {
    // Answers --version as g++ does; a compile kills itself as Ctrl-C would.
    const wrapper = `${src}/cxx.sh`;
    Deno.writeTextFileSync(
      wrapper,
      `#!/bin/sh\ncase "$*" in *--version*) exec g++ "$@";; esac\nkill -INT $$\nsleep 5\n`,
    );
    Deno.chmodSync(wrapper, 0o755);
    const e = assertThrows(
      () => buildEngine({ sourceDir: src, outDir: out, compiler: wrapper, quiet: true }),
      EngineBuildError,
      "the cpu engine's build was stopped by SIGINT: nothing was built",
    ) as EngineBuildError;
    assert(!e.message.includes("failed to compile"), e.message);
    assertEquals([...Deno.readDirSync(out)].filter((f) => f.name.endsWith(".so")).length, 0);
    // A compiler that crashes failed: its own signal is named, not a stop.
    Deno.writeTextFileSync(
      wrapper,
      `#!/bin/sh\ncase "$*" in *--version*) exec g++ "$@";; esac\necho boom >&2\nkill -SEGV $$\n`,
    );
    assertThrows(
      () => buildEngine({ sourceDir: src, outDir: out, compiler: wrapper, quiet: true }),
      EngineBuildError,
      "the cpu engine failed to compile (killed by SIGSEGV)",
    );
  }),
);

Deno.test(
  "build: a compile error reports the compiler's stderr and the command line",
  withTempDirs((src, out) => {
    Deno.writeTextFileSync(`${src}/engine_cpu.cpp`, "int le_abi_version(void) { return }\n");
    const e = assertThrows(
      () => buildEngine({ sourceDir: src, outDir: out, quiet: true }),
      EngineBuildError,
      "the cpu engine failed to compile",
    ) as EngineBuildError;
    assert(e.message.includes(`command: ${e.command}`), e.message);
    assert(e.command.includes(`${src}/engine_cpu.cpp`), `command names the source: ${e.command}`);
    assert(e.command.includes("-fopenmp"), "command has the flags");
    assert(/error/.test(e.stderr) && e.message.includes(e.stderr.trimEnd()), "stderr included");
    assertEquals([...Deno.readDirSync(out)].length, 0, "nothing is left in the output directory");
  }),
);

Deno.test(
  "build: a missing compiler, source or CUDA toolchain gives a clear error",
  withTempDirs((src, out) => {
    assertThrows(
      () => planEngineBuild({ sourceDir: src, outDir: out, compiler: "/nonexistent/g++" }),
      EngineBuildError,
      "compiler not found: /nonexistent/g++; install a C++17 compiler",
    );
    Deno.removeSync(`${src}/engine_cpu.cpp`);
    assertThrows(
      () => planEngineBuild({ sourceDir: src, outDir: out }),
      EngineBuildError,
      `the CPU engine's source ${src}/engine_cpu.cpp does not exist`,
    );
    assertThrows(
      () => planEngineBuild({ sourceDir: src, outDir: out, backend: "cuda" }),
      EngineBuildError,
      `the CUDA engine's source ${src}/engine_cuda.cu does not exist; is this a complete ` +
        "checkout? Or use --backend cpu",
    );
    Deno.writeTextFileSync(`${src}/engine_cuda.cu`, "// placeholder\n");
    assertThrows(
      () =>
        planEngineBuild({
          sourceDir: src,
          outDir: out,
          backend: "cuda",
          compiler: "/nonexistent/nvcc",
        }),
      EngineBuildError,
      "compiler not found: /nonexistent/nvcc; install the CUDA toolkit",
    );
    assertThrows(
      () => planEngineBuild({ backend: "tpu" as "cpu" }),
      EngineBuildError,
      'unknown backend "tpu"',
    );
  }),
);

Deno.test("CLI: prints the library path; rejects a bad backend", () => {
  const run = (...args: string[]) => {
    const out = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", "--allow-write", "--allow-env", "--allow-run", ...args],
      stdout: "piped",
      stderr: "piped",
      cwd: `${ENGINE_DIR}/..`,
    }).outputSync();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  };
  const expected = buildEngine({ quiet: true });
  const ok = run("cli/build_engine.ts", "--quiet");
  assertEquals(ok.code, 0, ok.stderr);
  assertEquals(ok.stdout.trim(), expected);
  const bad = run("cli/build_engine.ts", "--backend", "tpu");
  assertEquals(bad.code, 2);
  assert(bad.stderr.includes("--backend must be one of cpu|cuda"), bad.stderr);
});

Deno.test(
  "plan: the name names no machine path: another checkout or compiler path gives the same name",
  withTempDirs((src, out) => {
    const src2 = copySources();
    const bin = Deno.makeTempDirSync({ prefix: "lotus_engine_bin_" });
    try {
      const gpp = new Deno.Command("sh", { args: ["-c", "command -v g++"], stdout: "piped" })
        .outputSync();
      const real = new TextDecoder().decode(gpp.stdout).trim();
      Deno.symlinkSync(real, `${bin}/g++`);
      const a = planEngineBuild({ sourceDir: src, outDir: out, compiler: "g++" });
      const b = planEngineBuild({ sourceDir: src2, outDir: out, compiler: `${bin}/g++` });
      assertEquals(a.hash, b.hash, "same sources, flags and compiler version: same hash");
    } finally {
      Deno.removeSync(src2, { recursive: true });
      Deno.removeSync(bin, { recursive: true });
    }
  }),
);

Deno.test(
  "plan: a PATH entry that cannot be searched (not a directory, no permission) is passed over",
  withTempDirs((src, out) => {
    const path = Deno.env.get("PATH") ?? "";
    const want = planEngineBuild({ sourceDir: src, outDir: out, compiler: "g++" }).hash;
    const file = Deno.makeTempFileSync({ prefix: "lotus_not_a_dir_" });
    try {
      Deno.env.set("PATH", `${file}:${path}`);
      assertEquals(planEngineBuild({ sourceDir: src, outDir: out, compiler: "g++" }).hash, want);
    } finally {
      Deno.env.set("PATH", path);
      Deno.removeSync(file);
    }
  }),
);

Deno.test("build: the engine's stop signals are the commands' (it repeats the list)", () => {
  assertEquals(BUILD_STOP_SIGNALS, STOP_SIGNALS);
});
