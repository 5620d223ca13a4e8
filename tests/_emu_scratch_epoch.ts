/**
 * Run by engine_cuda_emu_test.ts in a process of its own, so that the emulated engine's device
 * scratch starts empty: a graph recorded before a larger matmul grew the scratch is out of
 * date, its launch runs nothing, and recorded again it runs. Prints the outcome as JSON.
 */
import { buildCudaEmu } from "../check/cuda_emu.ts";
import { openEngine } from "../engine/ffi.ts";
import { Rng } from "../base/rng.ts";

const e = openEngine({ backend: "cuda", libPath: buildCudaEmu() });
const rng = new Rng(3);
const N = 4, Cin = 16, Cout = 8, BIG = 64;
const x = e.alloc(N * Cin * 4), w = e.alloc(Cout * Cin * 4), y = e.alloc(N * Cout * 4);
const big = e.alloc(BIG * Cin * 4), bigOut = e.alloc(BIG * Cout * 4);
e.setPrecision(1); // TF32: every operand is rounded into scratch
e.upload(x, rng.normals(N * Cin));
e.upload(w, rng.normals(Cout * Cin));
const want = new Float32Array(N * Cout), got = new Float32Array(N * Cout);
e.matmulFwd(y, x, w, null, N, Cin, Cout); // sizes the scratch for N rows
e.download(want, y);
e.graphBegin();
e.matmulFwd(y, x, w, null, N, Cin, Cout);
e.graphEnd(0);
e.zero(y, N * Cout * 4);
const before = e.graphLaunch(0);
e.download(got, y);
const ranBefore = got.every((v, i) => v === want[i]);
e.matmulFwd(bigOut, big, w, null, BIG, Cin, Cout); // grows the scratch: the old block is freed
e.zero(y, N * Cout * 4);
const after = e.graphLaunch(0);
e.download(got, y);
const ranAfter = got.some((v) => v !== 0);
e.graphBegin();
e.matmulFwd(y, x, w, null, N, Cin, Cout);
e.graphEnd(0);
const again = e.graphLaunch(0);
e.download(got, y);
const ranAgain = got.every((v, i) => v === want[i]);
console.log(JSON.stringify({ before, ranBefore, after, ranAfter, again, ranAgain }));
e.close();
