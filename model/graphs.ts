/**
 * Recorded op sequences (CUDA graphs) kept by key: the first call of a key records the ops
 * and replays them, later calls replay. Used by the generator (prefill, loop passes, decoding
 * steps) and by the training runners (a whole forward and backward).
 *
 * A graph replays the kernels it recorded on the buffers it recorded, with the scalar
 * arguments it recorded: whatever differs between calls of one key must be read from engine
 * memory (uploaded before the replay), and the ops must be the same sequence for every call
 * of the key. The engine refuses a replay whose index arrays no longer pass their checks,
 * and reports a graph out of date once memory it may read was freed (le_graph_launch in
 * lotus_engine.h); an out-of-date graph is recorded again.
 *
 * @module
 */

import { type Engine, EngineError } from "../engine/ffi.ts";

/**
 * Graphs by key, at most `maxGraphs`, so that calls of ever new keys (batches of new shapes)
 * recycle slots rather than run out of the engine's 512, which every user of the engine
 * shares. When the cache is full, a key is recorded only if it has been run more often than
 * the least recently used graph, which it then replaces; otherwise its ops run op by op.
 * Run counts are halved every `8 maxGraphs` runs (at least 64), so that keys that stopped
 * coming (a finished curriculum stage) give way. Without that admission rule, more keys in
 * turn than the cache holds would be recorded at every call and never replayed: a recording
 * costs the ops' host time plus the graph's instantiation.
 */
export class GraphCache {
  #graphs = new Map<string, number>();
  #seen = new Set<string>();
  #runs = new Map<string, number>();
  #ticks = 0;

  /** A cache of at most `maxGraphs` graphs (0: none; every call runs op by op). */
  constructor(readonly eng: Engine, readonly maxGraphs: number) {}

  /** Graphs kept now. */
  get size(): number {
    return this.#graphs.size;
  }

  /**
   * Whether `key` was seen before (remembering it for the next call): callers record a
   * key's ops from its second call, after a first has grown the engine's scratch and made
   * the weights' bf16 copy (neither can happen while recording).
   */
  seen(key: string): boolean {
    if (this.#seen.has(key)) return true;
    if (this.#seen.size >= 4096) this.#seen.clear();
    this.#seen.add(key);
    return false;
  }

  /**
   * Runs `ops` from the graph recorded under `key`, recording it first if there is none; runs
   * them op by op if every graph slot of the engine is held by its other users, or if they
   * cannot be recorded (an error they raise then is raised again, by running them).
   */
  run(key: string, ops: () => void): void {
    const e = this.eng;
    const runs = this.#count(key);
    const kept = this.#graphs.get(key);
    if (kept !== undefined) {
      this.#graphs.delete(key);
      if (e.graphLaunch(kept)) {
        this.#graphs.set(key, kept); // most recently used last
        return;
      }
      e.graphFree(kept); // out of date (memory it read was freed since): record it again
    }
    const slot = this.#freeSlot(runs);
    if (slot === null) return ops();
    let recorded = false;
    try {
      e.graphBegin();
      try {
        ops();
      } catch (err) {
        e.graphEnd(-1);
        throw err;
      }
      e.graphEnd(slot);
      recorded = true;
    } catch {
      // Something in ops cannot be recorded yet (a scratch buffer that would have to grow, an
      // upload or a host wait): nothing ran, so run them op by op.
    }
    if (!recorded) {
      e.graphFree(slot);
      return ops();
    }
    this.#graphs.set(key, slot);
    if (!e.graphLaunch(slot)) throw new Error("a graph recorded just now is out of date");
  }

  /** Frees every graph kept (the keys seen, and how often they ran, are remembered). */
  clear(): void {
    for (const slot of this.#graphs.values()) this.eng.graphFree(slot);
    this.#graphs.clear();
  }

  /** Counts a run of `key` (ageing every count now and then); returns its count. */
  #count(key: string): number {
    const n = (this.#runs.get(key) ?? 0) + 1;
    this.#runs.set(key, n);
    if (++this.#ticks >= Math.max(64, 8 * this.maxGraphs)) {
      this.#ticks = 0;
      for (const [k, c] of this.#runs) {
        if (c > 1) this.#runs.set(k, c >> 1);
        else if (!this.#graphs.has(k)) this.#runs.delete(k);
      }
    }
    return n;
  }

  /**
   * A graph slot for a new recording of a key run `runs` times, freeing this cache's least
   * recently used graphs as long as they were run less often; null: run op by op.
   */
  #freeSlot(runs: number): number | null {
    const e = this.eng;
    for (;;) {
      if (this.#graphs.size < this.maxGraphs) {
        try {
          return e.graphSlot();
        } catch (err) {
          if (!(err instanceof EngineError)) throw err;
          if (this.#graphs.size === 0) return null; // all held elsewhere
        }
      }
      const oldest = this.#graphs.entries().next();
      if (oldest.done) return null; // maxGraphs 0
      const [key, slot] = oldest.value;
      if ((this.#runs.get(key) ?? 0) >= runs) return null; // it stays: run this key op by op
      e.graphFree(slot);
      this.#graphs.delete(key);
    }
  }
}
