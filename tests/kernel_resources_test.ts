// The CUDA kernels' registers and spills as ptxas reports them (check/kernel_resources.ts):
// the report's parser on a written report, and the engine held to its spill budget where
// nvcc is installed (no GPU needed).
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import {
  compileKernels,
  findNvcc,
  formatKernelTable,
  KernelReportError,
  parsePtxasReport,
  pdlViolations,
  SPILL_BUDGET,
  spillViolations,
  warpsByRegisters,
} from "../check/kernel_resources.ts";

const NVCC = findNvcc();
if (!NVCC) console.error("kernel_resources_test: nvcc not found: the compiled report is skipped");

const REPORT = `ptxas info    : 272 bytes gmem
ptxas info    : Compiling entry function '_ZN2le4zetaEv' for 'sm_90'
ptxas info    : Function properties for _ZN2le4zetaEv
    32 bytes stack frame, 48 bytes spill stores, 80 bytes spill loads
ptxas info    : Used 168 registers, used 1 barriers, 32 bytes cumulative stack size
ptxas info    : Compile time = 165.169 ms
ptxas info    : Compiling entry function '_ZN2le5alphaEv' for 'sm_90'
ptxas info    : Function properties for _ZN2le5alphaEv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 27 registers, used 1 barriers, 384 bytes smem
`;

Deno.test("kernel report: every entry's registers, spills, stack and static shared memory", () => {
  const k = parsePtxasReport(REPORT, (s) => s.map((x) => `void ${x}(int)`));
  assertEquals(k.map((x) => x.name), ["_ZN2le4zetaEv", "_ZN2le5alphaEv"]);
  assertEquals(
    [k[0].registers, k[0].spillStoreBytes, k[0].spillLoadBytes, k[0].stackFrameBytes],
    [168, 48, 80, 32],
  );
  assertEquals([k[1].registers, k[1].spillStoreBytes, k[1].staticSmemBytes], [27, 0, 384]);
  // 168 registers: 5,376 a warp, 12 warps in 64 K; 27 rounds up to 1,024 a warp: the cap of 64.
  assertEquals([k[0].warpsBySM, k[1].warpsBySM], [12, 64]);
  assertEquals([warpsByRegisters(128), warpsByRegisters(255)], [16, 8]);
  const table = formatKernelTable(k);
  assert(table.split("\n")[1].startsWith("_ZN2le4zetaEv"), "sorted by name");
  assert(table.includes("48/80"), table);
});

Deno.test("kernel report: an entry without its register line is an error that says why", () => {
  const cut = REPORT.split("\n").filter((l) => !l.includes("Used 27")).join("\n");
  assertThrows(() => parsePtxasReport(cut), KernelReportError, "-Xptxas -v");
});

Deno.test("kernel report: spills over budget, and budget entries no kernel needs, are named", () => {
  const k = parsePtxasReport(REPORT);
  const bad = spillViolations(k, { "_ZN2le5alphaEv": { maxStoreBytes: 8, why: "x" } });
  assertEquals(bad.length, 2, bad.join("\n"));
  assert(bad[0].includes("_ZN2le4zetaEv spills 48 bytes") && bad[0].includes("budget of 0"));
  assert(bad[1].includes("no longer spills"));
  assertEquals(spillViolations(k, { "_ZN2le4zetaEv": { maxStoreBytes: 48, why: "x" } }), []);
  assert(
    spillViolations(k, { "le::gone": { maxStoreBytes: 8, why: "x" } })
      .some((m) => m.includes("no longer has")),
  );
});

const PTX = `.visible .entry _ZN2le4goodEPi(
	.param .u64 _ZN2le4goodEPi_param_0
)
{
	.reg .b64 %rd<3>;
	ld.param.u64 	%rd1, [_ZN2le4goodEPi_param_0];
	cvta.to.global.u64 	%rd2, %rd1;
	griddepcontrol.wait;
	griddepcontrol.launch_dependents;
	st.global.u32 	[%rd2], 0;
	ret;
}
.visible .entry _ZN2le5earlyEPi(
	.param .u64 _ZN2le5earlyEPi_param_0
)
{
	ld.param.u64 	%rd1, [_ZN2le5earlyEPi_param_0];
	ld.global.u32 	%r1, [%rd1];
	griddepcontrol.wait;
	ret;
}
.visible .entry _ZN2le6branchEPi(
	.param .u64 _ZN2le6branchEPi_param_0
)
{
	@%p1 bra 	$L__BB2_2;
	griddepcontrol.wait;
$L__BB2_2:
	ret;
}
.visible .entry _ZN2le5neverEPi(
	.param .u64 _ZN2le5neverEPi_param_0
)
{
	st.shared.u32 	[%r1], 0;
}
.visible .entry _ZN2le4predEPi(
	.param .u64 _ZN2le4predEPi_param_0
)
{
	.reg .pred %p<2>;
	mov.u32 	%r1, %tid.x; // a comment: ld.global
	setp.ne.s32 	%p1, %r1, 0;
	@%p1 griddepcontrol.wait;
}
.visible .entry _ZN2le6inlineEPi(
	.param .u64 _ZN2le6inlineEPi_param_0
)
{
	{ ldu.global.u32 %r2, [%rd1]; }
	griddepcontrol.wait;
}
`;

Deno.test("kernel PTX: a load, branch or store before griddepcontrol.wait, or no wait, is named", () => {
  const { entries, bad } = pdlViolations(PTX);
  assertEquals(entries, 6);
  assertEquals(bad.length, 5, bad.join("\n"));
  assert(bad[0].startsWith('_ZN2le5earlyEPi: "ld.global.u32'), bad[0]);
  assert(bad[1].startsWith('_ZN2le6branchEPi: "@%p1 bra'), bad[1]);
  assert(bad[2].startsWith('_ZN2le5neverEPi: "st.shared'), bad[2]);
  assert(bad[3].includes("the wait is predicated"), bad[3]);
  assert(bad[4].startsWith('_ZN2le6inlineEPi: "ldu.global'), bad[4]);
  const cut = PTX.replace("\tst.shared.u32 \t[%r1], 0;\n", "");
  assert(pdlViolations(cut).bad[2].includes("never calls griddepcontrol.wait"));
});

Deno.test({
  name: "kernel report: the CUDA engine's kernels keep to the spill budget and each waits for " +
    "the kernels before it before touching memory (nvcc, sm_90)",
  ignore: !NVCC,
  fn() {
    const { kernels: k, ptx } = compileKernels({ compiler: NVCC! });
    const pdl = pdlViolations(ptx);
    assertEquals(pdl.bad, []);
    assertEquals(pdl.entries, k.length, "every kernel's PTX was read");
    assert(k.length > 50, `${k.length} kernels`);
    assertEquals(spillViolations(k), []);
    // The kernels the budget names are the tensor-core attention's: the rest spill nothing.
    for (const name of Object.keys(SPILL_BUDGET)) assert(name.startsWith("le::attention_tc_"));
    // The few-row forward and the LayerNorm kernels leave room for their loads in flight.
    for (const x of k.filter((x) => /gemv|layernorm_fwd_vec/.test(x.name))) {
      assert(x.registers <= 128, `${x.name}: ${x.registers} registers`);
    }
  },
});
