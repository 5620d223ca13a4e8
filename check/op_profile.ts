/**
 * Per-op device time of an engine, measured from the host: every op method of one `Engine`
 * instance is wrapped so that the engine is synchronised before and after the call, and the
 * wall time between is added to the op's total. The profile is of ops launched one by one (CUDA
 * graphs off): each op's time includes its launch and one synchronisation (about 10 µs on a
 * GPU), so a profile's total exceeds the unprofiled step time by roughly that much an op. An op
 * that calls another op is timed once, as the outer op.
 *
 * Ops are keyed by name, and by name with their integer arguments (the shapes), so that the
 * matrix products of different shapes are told apart. The matrix products also count their
 * floating-point operations, so that the table gives their rate (TFLOP/s), a lower bound since
 * the time includes the launch and the synchronisation.
 *
 * @module
 */
import { Engine } from "../engine/ffi.ts";

/** Engine methods that are not ops: bookkeeping, memory, graphs and collectives. */
const NOT_OPS = new Set([
  "constructor",
  "deviceInfo",
  "close",
  "setNumThreads",
  "setPrecision",
  "alloc",
  "free",
  "bytesInUse",
  "sync",
  "offset",
  "graphBegin",
  "graphEnd",
  "graphLaunch",
  "graphFree",
  "graphSlot",
  "commInit",
  "commProgress",
  "commWait",
  "commFinalize",
  "barrier",
]);

/** One op's totals. */
export interface OpTotal {
  /** The op's method name, or name and integer arguments. */
  key: string;
  /** Calls counted. */
  calls: number;
  /** Milliseconds, summed over the calls. */
  ms: number;
  /** Floating-point operations, summed over the calls (matrix products; 0 for other ops). */
  flops: number;
}

/**
 * The floating-point operations of a call of `name` with `args` (two a multiply-add), for the
 * matrix products: the forward's one product, the backward's one for each gradient asked for
 * (dinp, dW); 0 for other ops.
 */
export function opFlops(name: string, args: readonly unknown[]): number {
  const dims = (i: number) => Number(args[i]) * Number(args[i + 1]) * Number(args[i + 2]);
  if (name === "matmulFwd") return 2 * dims(4); // (out, inp, w, bias, N, Cin, Cout)
  if (name === "matmulBwd") { // (dinp, dw, dbias, dout, inp, w, N, Cin, Cout, accumulate)
    return 2 * dims(6) * ((args[0] !== null ? 1 : 0) + (args[1] !== null ? 1 : 0));
  }
  return 0;
}

/** A running profile of an engine's ops. */
export interface OpProfile {
  /** Totals by op name, largest first. */
  byName(): OpTotal[];
  /** Totals by op name and integer arguments, largest first. */
  byShape(): OpTotal[];
  /** Milliseconds over every op. */
  totalMs(): number;
  /** Forgets what was counted. */
  reset(): void;
  /** Removes the wrappers: the engine's methods are its class's again. */
  restore(): void;
}

/**
 * Wraps the op methods of `eng` (the instance only) with synchronised timers.
 *
 * @example
 * ```ts ignore
 * const prof = profileOps(eng);
 * step();
 * console.log(formatProfile(prof.byName(), stepMs));
 * prof.restore();
 * ```
 */
export function profileOps(eng: Engine): OpProfile {
  const names = new Map<string, OpTotal>();
  const shapes = new Map<string, OpTotal>();
  const add = (m: Map<string, OpTotal>, key: string, ms: number, flops: number) => {
    const t = m.get(key) ?? m.set(key, { key, calls: 0, ms: 0, flops: 0 }).get(key)!;
    t.calls++;
    t.ms += ms;
    t.flops += flops;
  };
  const sync = Engine.prototype.sync;
  const wrapped: string[] = [];
  let depth = 0;
  const own = eng as unknown as Record<string, unknown>;
  for (const name of Object.getOwnPropertyNames(Engine.prototype)) {
    if (NOT_OPS.has(name)) continue;
    const d = Object.getOwnPropertyDescriptor(Engine.prototype, name);
    if (!d || typeof d.value !== "function") continue;
    const orig = d.value as (...a: unknown[]) => unknown;
    own[name] = function (this: Engine, ...args: unknown[]) {
      if (depth > 0) return orig.apply(this, args);
      sync.call(this);
      const t = performance.now();
      depth++;
      try {
        return orig.apply(this, args);
      } finally {
        depth--;
        sync.call(this);
        const ms = performance.now() - t, flops = opFlops(name, args);
        add(names, name, ms, flops);
        const dims = args.filter((a) => typeof a === "number" && Number.isInteger(a));
        add(shapes, `${name}(${dims.join(",")})`, ms, flops);
      }
    };
    wrapped.push(name);
  }
  const sorted = (m: Map<string, OpTotal>) => [...m.values()].sort((a, b) => b.ms - a.ms);
  return {
    byName: () => sorted(names),
    byShape: () => sorted(shapes),
    totalMs: () => [...names.values()].reduce((s, t) => s + t.ms, 0),
    reset: () => (names.clear(), shapes.clear()),
    restore: () => {
      for (const n of wrapped) delete own[n];
    },
  };
}

/**
 * A text table of op totals divided by `per` (the number of steps profiled): ms and calls per
 * step, the share of the total, and for the rows of one op that counts floating-point operations
 * their rate in TFLOP/s; at most `top` rows, then one row for the rest.
 */
export function formatProfile(rows: OpTotal[], per = 1, top = 30): string {
  const total = rows.reduce((s, r) => s + r.ms, 0);
  const shown = rows.slice(0, top);
  const rest = rows.slice(top);
  const sum = (rs: OpTotal[], k: "ms" | "calls" | "flops") => rs.reduce((s, r) => s + r[k], 0);
  const line = (key: string, ms: number, calls: number, flops: number) =>
    `${key.padEnd(48)} ${(ms / per).toFixed(2).padStart(9)} ${
      (calls / per).toFixed(0).padStart(7)
    } ${(100 * ms / (total || 1)).toFixed(1).padStart(6)}%` +
    (flops > 0 && ms > 0 ? ` ${(flops / (ms * 1e9)).toFixed(1).padStart(8)}` : "");
  const out = [
    `${"op".padEnd(48)} ${"ms".padStart(9)} ${"calls".padStart(7)} ${"share".padStart(7)} ${
      "TFLOP/s".padStart(8)
    }`,
  ];
  for (const r of shown) out.push(line(r.key, r.ms, r.calls, r.flops));
  // The folded and total rows mix products with other ops: no rate.
  if (rest.length) out.push(line(`(${rest.length} more)`, sum(rest, "ms"), sum(rest, "calls"), 0));
  out.push(line("total", total, sum(rows, "calls"), 0));
  return out.join("\n");
}
