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
 * Graphs by key, at most `maxGraphs`, the least recently used dropped first, so that calls
 * of ever new keys (batches of new shapes) recycle slots rather than run out of the engine's
 * 512, which every user of the engine shares.
 */
export class GraphCache {
  #graphs = new Map<string, number>();
  #seen = new Set<string>();

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
    const kept = this.#graphs.get(key);
    if (kept !== undefined) {
      this.#graphs.delete(key);
      if (e.graphLaunch(kept)) {
        this.#graphs.set(key, kept); // most recently used last
        return;
      }
      e.graphFree(kept); // out of date (memory it read was freed since): record it again
    }
    const slot = this.#freeSlot();
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

  /** Frees every graph kept (the keys seen are remembered). */
  clear(): void {
    for (const slot of this.#graphs.values()) this.eng.graphFree(slot);
    this.#graphs.clear();
  }

  /** A graph slot for a new recording, freeing this cache's least recently used ones. */
  #freeSlot(): number | null {
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
      e.graphFree(slot);
      this.#graphs.delete(key);
    }
  }
}
