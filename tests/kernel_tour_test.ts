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

Deno.test("kernel tour: the source's LAUNCH sites are found, spelt as the emulation spells them", () => {
  const sites = launchSites();
  for (
    const k of ["gemv_bf16_kernel<float,true>", "attention_tc_dq_kernel<HSP,T>", "xent_kernel"]
  ) {
    assert(sites.has(k), `${k} among ${[...sites.keys()].join(" ")}`);
  }
  assert(!sites.has("kernel"), "the macro's own definition is not a site");
  const text = Deno.readTextFileSync(`${ROOT}engine/cuda/elementwise.cuh`);
  const line = text.split("\n").findIndex((l) => l.includes("LAUNCH(add_kernel,")) + 1;
  assertEquals(sites.get("add_kernel"), `engine/cuda/elementwise.cuh:${line}`);
});

Deno.test({
  name: "kernel tour: the emulated library's kernel instances, each template instance apart",
  ignore: !OK,
  fn() {
    const names = [...kernelInstances(buildCudaEmu()).values()];
    for (
      const k of [
        "le::attention_tc_fwd_kernel<64>",
        "le::attention_tc_dq_kernel<128, __nv_bfloat16>",
        "le::layernorm_fwd_vec_kernel<8, true>",
        "le::gemv_bf16_kernel<float, true>",
        "le::xent_kernel",
      ]
    ) assert(names.includes(k), `${k} among ${names.join(" ")}`);
    assert(names.every((n) => !n.includes("lambda") && !n.includes("tc_stage")), "kernels only");
    assertEquals(new Set(names).size, names.length, "one entry an instance");
  },
});

Deno.test({
  name: "kernel tour (emulated, under ASan and UBSan): no access past a buffer's ends or off " +
    "its alignment, every row passes, and every LAUNCH site and compiled kernel instance ran",
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
    const coverage = report.rows.filter((x: { section: string }) => x.section === "coverage");
    assertEquals(coverage.length, 2);
    assertEquals(r.code, 0, r.stderr.slice(-2000));
    const sections = new Set(report.rows.map((x: { section: string }) => x.section));
    for (const s of ["ops", "lotus step", "training", "index checks", "generation", "coverage"]) {
      assert(sections.has(s), `section ${s}`);
    }
    assert(/kernel tour: \d+ passed, 0 failed/.test(r.stdout), r.stdout.slice(-500));
  },
});

/** A compute-sanitizer stand-in: each tool's summary, as the real one writes it. */
const STAND_IN = `#!/usr/bin/env bash
tool= log=
while [ $# -gt 0 ]; do
  case $1 in
    --tool) tool=$2; shift 2 ;;
    --log-file) log=$2; shift 2 ;;
    --error-exitcode|--print-limit) shift 2 ;;
    *) break ;;
  esac
done
echo "$*" >"$log.cmd"
case $tool in
  memcheck) echo "========= ERROR SUMMARY: 0 errors" >"$log"
    echo "kernel tour: 57 passed, 0 failed, 1 skipped in 3.0 s" ;;
  racecheck) echo "========= RACECHECK SUMMARY: 3 hazards displayed (2 errors, 1 warnings)" >"$log"
    echo "kernel tour: 57 passed, 0 failed, 1 skipped in 3.0 s"; exit 86 ;;
  synccheck) echo "========= Barrier error detected. Divergent thread(s) in warp" >"$log"; sleep 20 ;;
  *) exit 3 ;;
esac
`;

Deno.test("gpu sanitize: each tool's summary, a run stopped at its limit, and the exit status", async () => {
  const dir = await tempDir();
  const fake = `${dir}/compute-sanitizer`;
  Deno.writeTextFileSync(fake, STAND_IN, { mode: 0o755 });
  const lib = `${dir}/engine.so`;
  Deno.writeTextFileSync(lib, "");
  const out = `${dir}/out`;
  const r = await new Deno.Command("bash", {
    args: ["check/gpu_sanitize.sh", "--limit", "2", "--engine-lib", lib, out],
    cwd: ROOT,
    env: { COMPUTE_SANITIZER: fake, DENO: Deno.execPath(), NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(r.stdout);
  assertEquals(r.code, 1, stdout + new TextDecoder().decode(r.stderr));
  const lines = Deno.readTextFileSync(`${out}/sanitize.txt`).trim().split("\n");
  assertEquals(lines.length, 4, lines.join("\n"));
  assert(lines[0].startsWith("sanitize memcheck: 0 errors; tour 57 passed, 0 failed;"), lines[0]);
  assert(lines[1].startsWith("sanitize racecheck: 2 errors (3 hazards displayed"), lines[1]);
  assert(
    lines[2].startsWith("sanitize synccheck: stopped at the 2 s limit, 1 reports before it;"),
    lines[2],
  );
  assert(
    lines[3].startsWith("sanitize initcheck: no summary from the sanitizer (exit 3"),
    lines[3],
  );
  // The tour runs under the sanitizer on the library given, not one built under it.
  const cmd = Deno.readTextFileSync(`${out}/sanitize-memcheck.log.cmd`);
  assert(cmd.includes(`check/kernel_tour.ts --engine-lib ${lib}`), cmd);
  const clean = await new Deno.Command("bash", {
    args: ["check/gpu_sanitize.sh", "--tools", "memcheck", "--engine-lib", lib, `${dir}/clean`],
    cwd: ROOT,
    env: { COMPUTE_SANITIZER: fake, DENO: Deno.execPath(), NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(clean.code, 0, new TextDecoder().decode(clean.stdout));
});

Deno.test("gpu sanitize: without compute-sanitizer it says where it looked and exits 2", async () => {
  const where = ["/usr/local/cuda/bin", "/usr/local/cuda/compute-sanitizer"];
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
