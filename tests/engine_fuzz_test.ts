// The engine's API under random calls: every op with random shapes, strides, sizes and
// pointers (live buffers, pointers inside and past them, freed ones, null), through the
// TypeScript binding. A call either works or throws an EngineError (a TypeError or RangeError
// for a number the binding cannot pass); it never crashes the process, and the engine keeps
// working after it. Run under the sanitizer build (see docs/engine.md), the same calls also
// check that no op reads or writes outside its buffers.
import { assert, assertEquals } from "./_assert.ts";
import { Rng } from "../base/rng.ts";
import { type Engine, EngineError, openEngine, type Ptr } from "../engine/ffi.ts";

type Kind = "p" | "i" | "n" | "f" | "b" | "s";

/**
 * Every op of the engine and the kind of each argument: pointer, int, size, float, bool, or a
 * 64-bit seed.
 */
const OPS: Record<string, Kind[]> = {
  zero: ["p", "n"],
  copy: ["p", "p", "n"],
  copyRows: ["p", "p", "i", "i", "i", "i", "i", "i", "i", "b"],
  add: ["p", "p", "p", "i"],
  scale: ["p", "f", "i"],
  embedFwd: ["p", "p", "p", "p", "p", "i", "i"],
  embedBwd: ["p", "p", "p", "p", "p", "i", "i"],
  layernormFwd: ["p", "p", "p", "p", "p", "p", "i", "i"],
  layernormBwd: ["p", "p", "p", "p", "p", "p", "p", "p", "i", "i"],
  residualLayernormFwd: ["p", "p", "p", "p", "p", "p", "p", "p", "i", "i"],
  matmulFwd: ["p", "p", "p", "p", "i", "i", "i"],
  matmulBwd: ["p", "p", "p", "p", "p", "p", "i", "i", "i"],
  geluFwd: ["p", "p", "i"],
  geluBwd: ["p", "p", "p", "i"],
  dropoutFwd: ["p", "p", "i", "f", "s"],
  dropoutBwd: ["p", "p", "p", "i", "f"],
  attentionFwd: ["p", "p", "p", "p", "p", "i", "i", "i", "i", "i", "i", "i"],
  attentionBwd: ["p", "p", "p", "p", "p", "p", "i", "i", "i", "i", "i", "i", "i"],
  attentionStatsFwd: ["p", "p", "p", "p", "p", "i", "i", "i", "i", "i", "i", "i"],
  attentionStatsBwd: ["p", "p", "p", "p", "p", "p", "p", "p", "i", "i", "i", "i", "i", "i", "i"],
  xentFwdBwd: ["p", "p", "p", "i", "i", "f"],
  rmsnormFwd: ["p", "p", "p", "p", "i", "i", "f"],
  rmsnormBwd: ["p", "p", "p", "p", "p", "p", "i", "i"],
  residualRmsnormFwd: ["p", "p", "p", "p", "p", "p", "i", "i", "f"],
  rope: ["p", "p", "p", "i", "i", "i", "i", "b"],
  swigluFwd: ["p", "p", "i", "i"],
  swigluBwd: ["p", "p", "p", "i", "i"],
  attentionGqaFwd: ["p", "p", "p", "p", "p", "i", "i", "i", "i", "i", "i", "i", "i"],
  attentionGqaBwd: ["p", "p", "p", "p", "p", "p", "i", "i", "i", "i", "i", "i", "i", "i"],
  attentionGqaStatsFwd: ["p", "p", "p", "p", "p", "i", "i", "i", "i", "i", "i", "i", "i"],
  attentionGqaStatsBwd: [
    "p",
    "p",
    "p",
    "p",
    "p",
    "p",
    "p",
    "p",
    "i",
    "i",
    "i",
    "i",
    "i",
    "i",
    "i",
    "i",
  ],
  argmax: ["p", "p", "i", "i"],
  sumsq: ["p", "p", "i"],
  adamw: ["p", "p", "p", "p", "i", "f", "f", "f", "f", "f", "i", "p", "f"],
  keepBf16: ["p", "i"],
};

class Fuzzer {
  #live: { p: Ptr; bytes: number }[] = [];
  #freed: Ptr[] = [];
  constructor(readonly eng: Engine, readonly rng: Rng) {}

  /** A pool of live buffers, some freed, with random float contents. */
  fill(n: number): void {
    for (let i = 0; i < n; i++) {
      const bytes = 4 * this.rng.int(1, 512);
      const p = this.eng.alloc(bytes);
      this.eng.upload(p, this.rng.normals(bytes / 4));
      this.#live.push({ p, bytes });
    }
    for (let i = 0; i < 3; i++) {
      const p = this.eng.alloc(64);
      this.eng.free(p);
      this.#freed.push(p);
    }
  }

  pointer(): Ptr {
    const r = this.rng.float();
    if (r < 0.05) return null;
    if (r < 0.1) return this.rng.pick(this.#freed);
    const b = this.rng.pick(this.#live);
    if (r < 0.7) return b.p;
    // Inside the buffer, at its end, or past it.
    const off = this.rng.chance(0.7)
      ? 4 * this.rng.int(0, b.bytes / 4 - 1)
      : b.bytes + 4 * this.rng.int(0, 16);
    return this.eng.offset(b.p, off);
  }

  int(): number {
    const r = this.rng.float();
    if (r < 0.5) return this.rng.int(1, 8);
    if (r < 0.7) return this.rng.int(0, 64);
    return this.rng.pick([0, -1, -7, 2 ** 31 - 1, -(2 ** 31), 2 ** 16, 3 * 2 ** 20, 1e9]);
  }

  size(): number {
    return this.rng.chance(0.8) ? 4 * this.rng.int(0, 256) : this.rng.pick([1, 3, 2 ** 33]);
  }

  float(): number {
    return this.rng.chance(0.85)
      ? this.rng.normal()
      : this.rng.pick([0, NaN, Infinity, -Infinity, 1e30]);
  }

  args(kinds: Kind[]): unknown[] {
    return kinds.map((k) =>
      k === "p"
        ? this.pointer()
        : k === "i"
        ? this.int()
        : k === "n"
        ? this.size()
        : k === "f"
        ? this.float()
        : k === "s"
        ? BigInt(this.rng.next())
        : this.rng.chance(0.5)
    );
  }

  freeAll(): void {
    for (const b of this.#live) this.eng.free(b.p);
    this.#live = [];
  }
}

/** The engine still allocates, copies and frees correctly. */
function canary(eng: Engine): void {
  const x = Float32Array.of(1, 2, 3, 4), y = new Float32Array(4);
  const p = eng.alloc(16);
  eng.upload(p, x);
  eng.download(y, p);
  eng.free(p);
  assertEquals(Array.from(y), [1, 2, 3, 4]);
}

Deno.test({
  name: "engine fuzz: 6,000 random calls fail cleanly or work, and never break the engine",
  fn() {
    const eng = openEngine({ quiet: true, threads: 1 });
    const rng = new Rng(20260601);
    const tally = { ok: 0, engineError: 0, argumentError: 0 };
    try {
      for (let round = 0; round < 60; round++) {
        const fz = new Fuzzer(eng, rng);
        fz.fill(8);
        for (let i = 0; i < 100; i++) {
          const op = rng.pick(Object.keys(OPS));
          const args = fz.args(OPS[op]);
          try {
            (eng as unknown as Record<string, (...a: unknown[]) => void>)[op](...args);
            tally.ok++;
          } catch (e) {
            if (e instanceof EngineError) tally.engineError++;
            else if (e instanceof TypeError || e instanceof RangeError) tally.argumentError++;
            else throw new Error(`${op}(${args.map(String).join(", ")}) threw ${e}`);
          }
        }
        fz.freeAll();
        canary(eng);
      }
    } finally {
      eng.close();
    }
    const total = tally.ok + tally.engineError + tally.argumentError;
    assertEquals(total, 6000);
    // Both outcomes occur: the fuzzer reaches the ops' bodies, not only their checks.
    assert(tally.ok > 100 && tally.engineError > 1000, JSON.stringify(tally));
  },
});
