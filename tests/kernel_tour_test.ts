// The kernel tour (check/kernel_tour.ts) in the host emulation, built with ASan and UBSan: every
// row passes, nothing reads or writes past a device buffer or off a vector's alignment, and every
// LAUNCH site and compiled kernel instance of the CUDA engine runs, so that the sanitizer run on
// a GPU (check/gpu_sanitize.sh) checks them all; and the sanitizer script's own logic, with a
// stand-in compute-sanitizer.
import { assert, assertEquals } from "./_assert.ts";
import { tempDir } from "./_tmp.ts";
import { ROOT, runDeno } from "./_run.ts";
import {
  asanRuntime,
  buildCudaEmu,
  canEmulate,
  kernelInstances,
  launchSites,
} from "../check/cuda_emu.ts";

const OK = canEmulate();
if (!OK) console.error("kernel_tour_test: g++ cannot build the CUDA emulation: skipped");
const ASAN = OK && asanRuntime() !== null;
if (OK && !ASAN) {
  console.error("kernel_tour_test: g++ has no libasan: the tour runs without ASan and UBSan");
}

Deno.test("kernel tour: the source's LAUNCH sites are found, each by its file and line", () => {
  const sites = launchSites();
  const kernels = [...sites.values()];
  for (
    const k of ["gemv_bf16_kernel<float,true>", "attention_tc_dq_kernel<HSP,T>", "xent_kernel"]
  ) {
    assert(kernels.includes(k), `${k} among ${kernels.join(" ")}`);
  }
  assert(!kernels.includes("kernel"), "the macro's own definition is not a site");
  // Each site apart, by its file and line: the same kernel launched from two places is two.
  assert(kernels.filter((k) => k === "colsum_finish_kernel").length >= 3, kernels.join(" "));
  const text = Deno.readTextFileSync(`${ROOT}engine/cuda/elementwise.cuh`);
  const line = text.split("\n").findIndex((l) => l.includes("LAUNCH(add_kernel,")) + 1;
  assertEquals(sites.get(`engine/cuda/elementwise.cuh:${line}`), "add_kernel");
});

Deno.test({
  name: "kernel tour: the emulated library's kernel instances, each template instance apart",
  ignore: !OK,
  fn() {
    const names = [...kernelInstances(buildCudaEmu()).values()];
    for (
      const k of [
        "le::attention_tc_fwd_kernel<64, float>",
        "le::attention_tc_fwd_kernel<64, __nv_bfloat16>",
        "le::attention_tc_dq_kernel<128, __nv_bfloat16>",
        "le::layernorm_fwd_vec_kernel<8, true>",
        "le::gemv_bf16_kernel<float, true, 0>",
        "le::gemv_bf16_kernel<float, false, 1>",
        "le::gemv_bf16_kernel<float, false, 2>",
        "le::xent_kernel",
      ]
    ) assert(names.includes(k), `${k} among ${names.join(" ")}`);
    assert(names.every((n) => !n.includes("lambda") && !n.includes("tc_stage")), "kernels only");
    assertEquals(new Set(names).size, names.length, "one entry an instance");
  },
});

Deno.test({
  name: (ASAN
    ? "kernel tour (emulated, under ASan and UBSan): no access past a buffer's ends or off " +
      "its alignment, every row passes, "
    : "kernel tour (emulated; g++ has no libasan, so without ASan and UBSan): every row passes, ") +
    "and every LAUNCH site and compiled kernel instance ran",
  ignore: !OK,
  async fn() {
    const json = `${await tempDir()}/tour.json`;
    // A process of its own: the emulated library records the sites it launched since it was
    // loaded, and other tests' launches must not count. Under the sanitizers an access past a
    // device buffer's ends (a kernel reading 64 floats past its input, tried) or a float4 off
    // its 16-byte alignment (tried) stops it with a report naming the kernel's line.
    const mode = ASAN ? "--sanitize" : "--emulate";
    const r = await runDeno(["run", "--allow-all", "check/kernel_tour.ts", mode, "--json", json]);
    assert(!/AddressSanitizer|runtime error/.test(r.stderr), r.stderr.slice(0, 3000));
    const report = JSON.parse(Deno.readTextFileSync(json));
    const failed = report.rows.filter((x: { pass: boolean; skipped?: boolean }) =>
      !x.pass && !x.skipped
    );
    assertEquals(failed, [], r.stdout.slice(-3000));
    assertEquals(report.notRun, [], "every LAUNCH site and kernel instance ran");
    const coverage = report.rows.filter((x: { section: string }) =>
      x.section === "coverage"
    );
    assertEquals(coverage.length, 2);
    assertEquals(r.code, 0, r.stderr.slice(-2000));
    const sections = new Set(report.rows.map((x: { section: string }) => x.section));
    for (const s of ["ops", "lotus step", "training", "index checks", "generation", "coverage"]) {
      assert(sections.has(s), `section ${s}`);
    }
    assert(/kernel tour: \d+ passed, 0 failed/.test(r.stdout), r.stdout.slice(-500));
  },
});

Deno.test({
  name: "kernel tour --quick (emulated): fewer launches, still every compiled kernel instance",
  ignore: !OK,
  async fn() {
    const json = `${await tempDir()}/quick.json`;
    const r = await runDeno([
      "run",
      "--allow-all",
      "check/kernel_tour.ts",
      "--emulate",
      "--quick",
      "--json",
      json,
    ]);
    assertEquals(r.code, 0, r.stdout.slice(-3000) + r.stderr.slice(-1000));
    const report = JSON.parse(Deno.readTextFileSync(json));
    assertEquals(report.notRun, [], "every LAUNCH site and kernel instance ran");
    const launches = Number(/(\d+) kernel launches/.exec(r.stderr)?.[1]);
    assert(launches > 0 && launches < 20000, `${launches} launches`);
  },
});

/** A compute-sanitizer stand-in: each tool's summary, as the real one writes it. */
const STAND_IN = `#!/usr/bin/env bash
tool= log=
while [ $# -gt 0 ]; do
  case $1 in
    --tool) tool=$2; shift 2 ;;
    --log-file) log=$2; shift 2 ;;
    --error-exitcode|--print-limit|--launch-timeout|--destroy-on-device-error) shift 2 ;;
    *) break ;;
  esac
done
echo "$*" >"$log.cmd"
tour="kernel tour: 58 passed, 0 failed, 1 skipped in 3.0 s"
case $tool in
  memcheck)
    [ -n "\${FAKE_BROKEN:-}" ] && echo "========= Internal Sanitizer Error: the launch was not tracked" >"$log"
    echo "========= ERROR SUMMARY: 0 errors" >>"$log"; echo "$tour" ;;
  racecheck) echo "========= RACECHECK SUMMARY: 3 hazards displayed (2 errors, 1 warnings)" >"$log"
    echo "$tour"; exit 86 ;;
  synccheck) echo "========= Barrier error detected. Divergent thread(s) in warp" >"$log"; sleep 20 ;;
  initcheck) printf '%s\\n' "========= ERROR SUMMARY: 1,234 errors" \\
    "========= ERROR SUMMARY: 1,209 errors were not printed. Use --print-limit to see them" >"$log"
    echo "$tour"; exit 86 ;;
  *) exit 3 ;;
esac
`;

async function sanitize(args: string[], env: Record<string, string> = {}) {
  const dir = await tempDir();
  const fake = `${dir}/compute-sanitizer`;
  Deno.writeTextFileSync(fake, STAND_IN, { mode: 0o755 });
  const lib = `${dir}/engine.so`;
  Deno.writeTextFileSync(lib, "");
  const out = `${dir}/out`;
  const r = await new Deno.Command("bash", {
    args: ["check/gpu_sanitize.sh", ...args, "--engine-lib", lib, out],
    cwd: ROOT,
    env: { COMPUTE_SANITIZER: fake, DENO: Deno.execPath(), NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const said = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  const lines = Deno.readTextFileSync(`${out}/sanitize.txt`).trim().split("\n");
  return { code: r.code, said, lines, out, lib };
}

Deno.test("gpu sanitize: each tool's summary, a run stopped at its limit, and the exit status", async () => {
  const r = await sanitize(["--limit", "2"]);
  assertEquals(r.code, 1, r.said);
  const [mem, race, sync, init] = r.lines;
  assertEquals(r.lines.length, 4, r.lines.join("\n"));
  assert(mem.startsWith("sanitize memcheck: 0 errors; tour 58 passed, 0 failed, 1 skipped;"), mem);
  // Every hazard counts, warnings too.
  assert(
    race.startsWith(
      "sanitize racecheck: 3 hazards (3 hazards displayed (2 errors, 1 warnings)); tour 58 passed",
    ),
    race,
  );
  assert(
    sync.startsWith("sanitize synccheck: stopped at the 2 s limit, 1 reports before it;"),
    sync,
  );
  // The count of all errors, not of those left unprinted.
  assert(init.startsWith("sanitize initcheck: 1234 errors;"), init);
  // The tour runs under the sanitizer on the library given, not one built under it.
  const cmd = Deno.readTextFileSync(`${r.out}/sanitize-memcheck.log.cmd`);
  assert(cmd.includes(`check/kernel_tour.ts --quick --engine-lib ${r.lib}`), cmd);
  const clean = await sanitize(["--tools", "memcheck"]);
  assertEquals([clean.code, clean.lines.length], [0, 1], clean.said);
  // The sanitizer's own failure is one, even where its summary says 0 errors.
  const broken = await sanitize(["--tools", "memcheck"], { FAKE_BROKEN: "1" });
  assertEquals(broken.code, 1, broken.said);
  assert(
    broken.lines[0].startsWith("sanitize memcheck: the sanitizer failed: Internal"),
    broken.lines[0],
  );
});

Deno.test("gpu sanitize: without compute-sanitizer it says where it looked and exits 2", async () => {
  const where = ["/usr/bin", "/bin", "/usr/local/cuda/bin", "/usr/local/cuda/compute-sanitizer"];
  if (
    where.some((d) => {
      try {
        return Deno.statSync(`${d}/compute-sanitizer`).isFile;
      } catch {
        return false;
      }
    })
  ) {
    console.error("gpu_sanitize: this machine has compute-sanitizer: the missing case is skipped");
    return;
  }
  const out = `${await tempDir()}/out`;
  const r = await new Deno.Command("bash", {
    args: ["check/gpu_sanitize.sh", out],
    cwd: ROOT,
    env: { PATH: "/usr/bin:/bin", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(r.code, 2);
  const said = Deno.readTextFileSync(`${out}/sanitize.txt`);
  assert(said.startsWith("sanitize: no compute-sanitizer (looked on PATH"), said);
});
