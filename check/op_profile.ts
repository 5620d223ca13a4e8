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
import { Engine, MARKS } from "../engine/ffi.ts";

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
  "hasMarks",
  "mark",
  "markElapsed",
  "operandOnly",
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

/** Totals kept by op name and by op name and shape. */
class Tally {
  #names = new Map<string, OpTotal>();
  #shapes = new Map<string, OpTotal>();

  add(name: string, args: readonly unknown[], ms: number): void {
    const flops = opFlops(name, args);
    const dims = args.filter((a) => typeof a === "number" && Number.isInteger(a));
    for (
      const [m, key] of [[this.#names, name], [this.#shapes, `${name}(${dims.join(",")})`]] as const
    ) {
      const t = m.get(key) ?? m.set(key, { key, calls: 0, ms: 0, flops: 0 }).get(key)!;
      t.calls++;
      t.ms += ms;
      t.flops += flops;
    }
  }

  byName = () => Tally.#sorted(this.#names);
  byShape = () => Tally.#sorted(this.#shapes);
  totalMs = () => [...this.#names.values()].reduce((s, t) => s + t.ms, 0);
  clear = () => (this.#names.clear(), this.#shapes.clear());

  /** Copies, largest first: later counting leaves a returned table as it was. */
  static #sorted(m: Map<string, OpTotal>): OpTotal[] {
    return [...m.values()].map((t) => ({ ...t })).sort((a, b) => b.ms - a.ms);
  }
}

type Method = (...a: unknown[]) => unknown;

/**
 * Puts a wrapper on the instance `eng` for each op method (not those in NOT_OPS): a top-level
 * call runs `around(name, args, call)`, where `call()` runs the op; an op that an op calls
 * runs as it is. `extra` wraps more methods by name (given the class's method). Returns the
 * function that removes every wrapper.
 */
function wrapOps(
  eng: Engine,
  around: (name: string, args: unknown[], call: () => unknown) => unknown,
  extra: Record<string, (orig: Method) => Method> = {},
): () => void {
  const own = eng as unknown as Record<string, unknown>;
  const wrapped: string[] = [];
  let depth = 0;
  for (const name of Object.getOwnPropertyNames(Engine.prototype)) {
    const d = Object.getOwnPropertyDescriptor(Engine.prototype, name);
    if (!d || typeof d.value !== "function") continue;
    const orig = d.value as Method;
    if (extra[name]) {
      own[name] = extra[name](orig);
    } else if (!NOT_OPS.has(name)) {
      own[name] = function (this: Engine, ...args: unknown[]) {
        if (depth > 0) return orig.apply(this, args);
        depth++;
        try {
          return around(name, args, () => orig.apply(this, args));
        } finally {
          depth--;
        }
      };
    } else continue;
    wrapped.push(name);
  }
  return () => {
    for (const n of wrapped) delete own[n];
  };
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
  const tally = new Tally();
  const sync = () => Engine.prototype.sync.call(eng);
  const restore = wrapOps(eng, (name, args, call) => {
    sync();
    const t = performance.now();
    try {
      return call();
    } finally {
      sync();
      tally.add(name, args, performance.now() - t);
    }
  });
  return {
    byName: tally.byName,
    byShape: tally.byShape,
    totalMs: tally.totalMs,
    reset: tally.clear,
    restore,
  };
}

/** A profile timed on the device's clock ({@linkcode timeOpsOnDevice}). */
export interface DeviceProfile extends OpProfile {
  /**
   * Reads the marks of the ops that have been issued and not read yet, waiting for the device
   * to reach them. The totals call it themselves; a graph launch and `reset` call it first.
   */
  collect(): void;
  /**
   * Milliseconds between ops: in each stretch of ops read together (those issued between two
   * reads), the time from the first op's start to the last op's end, less the ops' own times.
   * Launch gaps, waits for the host and work done outside ops (a bf16 weight copy refreshed
   * before a graph replay) land here.
   */
  betweenMs(): number;
}

/** One timed call: the op, its arguments, its start and end marks, and whether a graph holds them. */
interface Timed {
  name: string;
  args: unknown[];
  start: number;
  end: number;
  inGraph: boolean;
}

/**
 * Wraps the op methods of `eng` (the instance only) with timing marks on the device's clock
 * (`Engine.mark`): a mark before and after each op, read later, so that nothing waits between
 * ops and the ops run as they do unprofiled (a bf16 copy that an op produces for the matmul
 * after it is still used, which a host timer's synchronisation prevents). Ops recorded into a
 * CUDA graph take their marks into the graph: each replay times them as training runs them,
 * back to back. On the CPU engine a mark is the clock at the call, and an op's time is its
 * host time.
 *
 * Throws when the engine library has no marks (`eng.hasMarks`).
 *
 * @example
 * ```ts ignore
 * const prof = timeOpsOnDevice(eng);
 * for (let i = 0; i < 3; i++) step(); // the first records the graphs, say
 * prof.reset();
 * step();
 * console.log(formatProfile(prof.byName()));
 * prof.restore();
 * ```
 */
export function timeOpsOnDevice(eng: Engine): DeviceProfile {
  if (!eng.hasMarks) {
    throw new Error(
      `${eng.libPath} has no timing marks (le_mark); rebuild it with deno task build-engine --force`,
    );
  }
  const tally = new Tally();
  const mark = (i: number) => Engine.prototype.mark.call(eng, i);
  const elapsed = (a: number, b: number) => Engine.prototype.markElapsed.call(eng, a, b);
  let fresh = 0, between = 0;
  const free: number[] = []; // read marks of ops run outside graphs, for reuse
  const graphs = new Map<number, Timed[]>(); // each graph slot's ops, with the marks it holds
  let recording: Timed[] | null = null; // the ops of the graph being recorded
  let pending: Timed[] = []; // issued, not read yet, in the order the device runs them
  const release = (ts: readonly Timed[]) => {
    for (const t of ts) free.push(t.start, t.end);
  };
  const collect = () => {
    if (recording || pending.length === 0) return;
    let own = 0;
    for (const t of pending) {
      const ms = elapsed(t.start, t.end);
      own += ms;
      tally.add(t.name, t.args, ms);
    }
    between += Math.max(0, elapsed(pending[0].start, pending.at(-1)!.end) - own);
    release(pending.filter((t) => !t.inGraph)); // a graph's marks are its own until freed
    pending = [];
  };
  const take = () => {
    if (free.length === 0 && fresh === MARKS) collect();
    const i = free.pop() ?? (fresh < MARKS ? fresh++ : -1);
    if (i < 0) {
      throw new Error(
        `timeOpsOnDevice: all ${MARKS} timing marks are held by recorded graphs and the ops ` +
          "being recorded; free graphs (graphFree) or profile fewer",
      );
    }
    return i;
  };
  const restore = wrapOps(eng, (name, args, call) => {
    const t: Timed = { name, args, start: take(), end: -1, inGraph: recording !== null };
    mark(t.start);
    let r: unknown;
    try {
      r = call();
    } catch (e) {
      free.push(t.start);
      throw e;
    }
    t.end = take();
    mark(t.end);
    (recording ?? pending).push(t);
    return r;
  }, {
    graphBegin: (orig) =>
      function (this: Engine) {
        collect();
        orig.call(this);
        recording = [];
      },
    graphEnd: (orig) =>
      function (this: Engine, slot: unknown) {
        const ops = recording!;
        recording = null;
        try {
          orig.call(this, slot);
        } catch (e) {
          release(ops);
          throw e;
        }
        if ((slot as number) < 0) return release(ops);
        release(graphs.get(slot as number) ?? []);
        graphs.set(slot as number, ops);
      },
    graphLaunch: (orig) =>
      function (this: Engine, slot: unknown) {
        collect();
        const ran = orig.call(this, slot);
        if (ran) pending.push(...(graphs.get(slot as number) ?? []));
        return ran;
      },
    graphFree: (orig) =>
      function (this: Engine, slot: unknown) {
        collect();
        orig.call(this, slot);
        for (const s of (slot as number) < 0 ? [...graphs.keys()] : [slot as number]) {
          release(graphs.get(s) ?? []);
          graphs.delete(s);
        }
      },
  });
  const read = <T>(f: () => T) => () => (collect(), f());
  return {
    byName: read(tally.byName),
    byShape: read(tally.byShape),
    totalMs: read(tally.totalMs),
    betweenMs: read(() => between),
    collect,
    reset: () => {
      collect();
      tally.clear();
      between = 0;
    },
    restore: () => {
      collect();
      restore();
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
