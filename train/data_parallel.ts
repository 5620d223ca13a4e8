/**
 * Data-parallel training: `mpirun -np N deno task train …` runs N ranks that train one model.
 * Every rank reads the same data in the same order and builds the same global batch; rank r
 * runs forward and backward on its own contiguous part of it ({@linkcode shardRange}), with
 * each loss divided by the token count of the whole global batch, so that the gradients summed
 * over the ranks (all-reduces through the engine) are exactly the single-process
 * gradient, up to the order of summation. Each block's part of the gradient is summed as soon
 * as the backward has finished with it, while the backward goes on
 * ({@linkcode DataParallel.overlap}). The loss reported is the same sum. Every rank then
 * applies the same update to the same weights, and the weights stay identical without being
 * sent again; rank 0 broadcasts them once at the start.
 *
 * Rank 0 alone writes the log, evaluations and checkpoints. The run's length, data and resume
 * state are checked to agree across ranks before the first step.
 *
 * docs/distributed.md has the commands, the failure behaviour and a scaling model.
 *
 * @example
 * ```ts
 * import { shardRange } from "./data_parallel.ts";
 * // A global batch of 10 over 4 ranks: 2, 3, 2 and 3 examples.
 * console.assert(shardRange(10, 1, 4).start === 2 && shardRange(10, 1, 4).end === 5);
 * ```
 *
 * @module
 */

import type { Engine, Ptr } from "../engine/ffi.ts";
import type { Model } from "../model/model.ts";
import type { ParamLayout } from "../model/params.ts";
import type { GradReady } from "./step.ts";

/** Where this process stands in a job started by mpirun. */
export interface World {
  /** This process's rank, 0..size-1. */
  rank: number;
  /** Processes in the job. */
  size: number;
  /** This process's rank among those on its machine (which GPU it takes). */
  localRank: number;
  /** The launcher's variables the rank and size were read from, as `NAME=value`. */
  from: string[];
}

/** The environment variables a launcher sets, in the order they are read. */
const RANK_VARS = ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"] as const;
const SIZE_VARS = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"] as const;
const LOCAL_RANK_VARS = ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"] as const;

/** The first of `names` set to a whole number: its name and value. */
function firstInt(
  get: (name: string) => string | undefined,
  names: readonly string[],
): { name: string; value: number } | undefined {
  for (const name of names) {
    let v: string | undefined;
    try {
      v = get(name);
    } catch {
      v = undefined; // not allowed to read it: as if unset
    }
    if (v !== undefined && /^\d+$/.test(v)) return { name, value: Number(v) };
  }
  return undefined;
}

/**
 * The job this process belongs to, from the variables Open MPI's mpirun sets
 * (OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK; PMIX_RANK,
 * PMI_RANK, PMI_SIZE and MPI_LOCALRANKID are read too); null when the process was not started
 * by a launcher, or is a job's only process: training then runs as one process, with no MPI at
 * all.
 */
export function worldFromEnv(
  get: (name: string) => string | undefined = (n) => Deno.env.get(n),
): World | null {
  const size = firstInt(get, SIZE_VARS);
  const rank = firstInt(get, RANK_VARS);
  if (size === undefined || size.value <= 1 || rank === undefined) return null;
  const from = [`${rank.name}=${rank.value}`, `${size.name}=${size.value}`];
  if (rank.value >= size.value) {
    throw new Error(
      `the launcher gives rank ${rank.value} in a job of ${size.value} (${from.join(", ")}): ` +
        `inconsistent`,
    );
  }
  return {
    rank: rank.value,
    size: size.value,
    localRank: firstInt(get, LOCAL_RANK_VARS)?.value ?? 0,
    from,
  };
}

/**
 * The line a data-parallel run prints as it starts: that this process is a rank of a job, and
 * the launcher's variables that made it one, so that a process which inherited them without
 * being started by mpirun says why it does not train alone.
 */
export function worldNote(world: World): string {
  return `data parallel: rank ${world.rank} of ${world.size}, as the launcher's ` +
    `${world.from.join(" and ")} say (mpirun sets them; a process not started by mpirun ` +
    `trains alone once they are unset)`;
}

/**
 * The part of a global batch of `n` items that rank `rank` of `size` takes: items
 * [floor(rank*n/size), floor((rank+1)*n/size)). The parts are contiguous, cover the batch in
 * order, and differ in length by at most one.
 */
export function shardRange(n: number, rank: number, size: number): { start: number; end: number } {
  return { start: Math.floor(rank * n / size), end: Math.floor((rank + 1) * n / size) };
}

/** A part of the gradient slab reduced in one all-reduce: floats [start, end). */
export interface GradBucket {
  /** First float. */
  start: number;
  /** One past the last float. */
  end: number;
}

/**
 * The parts of the gradient slab that become final at different times in a step's backward
 * (`GradReady`, train/step.ts), each contiguous in the slab: `blocks[l]` is backbone block l
 * (the last one with the final LayerNorm), `aux` the LOTUS-aux decoder (blocks, LayerNorm,
 * head; null without it), `embeddings` the token and position embeddings, final last.
 * Together they cover the slab once.
 */
export function gradBuckets(
  layout: ParamLayout,
): { blocks: GradBucket[]; aux: GradBucket | null; embeddings: GradBucket } {
  const n = layout.blocks.length;
  const blocks = layout.blocks.map((b, l) => ({
    start: b.ln1w,
    end: l + 1 < n ? layout.blocks[l + 1].ln1w : layout.mainTotal,
  }));
  const first = n > 0 ? layout.blocks[0].ln1w : layout.lnfw;
  return {
    blocks,
    aux: layout.total > layout.mainTotal ? { start: layout.mainTotal, end: layout.total } : null,
    embeddings: { start: 0, end: first },
  };
}

/** Scalars exchanged in one collective (losses, counts, flags). */
const SCALARS = 16;

/**
 * The collectives of a data-parallel run, on an open engine that has joined the job
 * (`Engine.commInit`). Create it with {@linkcode DataParallel.join}; free it before the engine
 * closes.
 */
export class DataParallel {
  /** The engine the collectives run on. */
  readonly eng: Engine;
  /** This process's rank. */
  readonly rank: number;
  /** Ranks in the job. */
  readonly size: number;
  #buf: Ptr;
  /**
   * Seconds the trainer spent in the gradient all-reduce so far (with overlap: only the part
   * the backward did not hide, from the end of the backward until the sums are there).
   */
  gradSeconds = 0;
  /** Gradient all-reduces so far (one a step). */
  gradReductions = 0;
  /** Gradient floats whose all-reduce started during a backward, summed over the steps. */
  overlappedFloats = 0;
  /** Gradient floats reduced, summed over the steps. */
  reducedFloats = 0;
  /** The buckets started during the current step's backward (null: no overlap running). */
  #started: Set<GradBucket> | null = null;
  #buckets: GradBucket[] = [];

  private constructor(eng: Engine, rank: number, size: number) {
    this.eng = eng;
    this.rank = rank;
    this.size = size;
    this.#buf = eng.alloc(SCALARS * 4);
  }

  /**
   * Join the job `world` describes on `eng` (idempotent per process). `timeoutS`: how long a
   * collective waits for the other ranks before this process ends itself (0: no limit).
   *
   * @throws {Error} when MPI sees another job size than the launcher's variables say.
   */
  static join(eng: Engine, world: World, timeoutS: number): DataParallel {
    const { rank, size } = eng.commInit(timeoutS);
    if (rank !== world.rank || size !== world.size) {
      throw new Error(
        `MPI reports rank ${rank} of ${size}, the launcher rank ${world.rank} of ${world.size}: ` +
          `start the job with the mpirun of the Open MPI whose libmpi the engine loads ` +
          `(LOTUS_LIBMPI)`,
      );
    }
    return new DataParallel(eng, rank, size);
  }

  /** Whether this is rank 0, the one that writes. */
  get isRoot(): boolean {
    return this.rank === 0;
  }

  /** This rank's part of a global batch ({@linkcode shardRange}). */
  shard<T>(items: readonly T[]): T[] {
    const { start, end } = shardRange(items.length, this.rank, this.size);
    return items.slice(start, end);
  }

  /** The element-wise sum of `xs` over the ranks (fp32; at most 16 values). */
  sum(xs: readonly number[]): number[] {
    if (xs.length > SCALARS) throw new RangeError(`at most ${SCALARS} scalars at once`);
    this.eng.upload(this.#buf, Float32Array.from(xs));
    this.eng.allReduceSum(this.#buf, xs.length);
    const out = new Float32Array(xs.length);
    this.eng.download(out, this.#buf);
    return Array.from(out);
  }

  /**
   * Whether this engine can overlap the gradient's all-reduce with the backward (an engine
   * library without the nonblocking collectives cannot: the trainer then reduces after it).
   */
  get canOverlap(): boolean {
    return this.eng.canOverlap;
  }

  /**
   * Start overlapping this step's gradient all-reduce with its backward: pass the returned
   * {@linkcode GradReady} to the step, which reports each part of the gradient as soon as it
   * is final, and that part's all-reduce starts at once. Then call
   * {@linkcode DataParallel.allReduceGrads}, which starts the rest and waits for all of them.
   * The sums are those of the whole-slab all-reduce, piece by piece.
   */
  overlap(model: Model): GradReady {
    const eng = this.eng, g = gradBuckets(model.layout);
    const started = this.#started = new Set<GradBucket>();
    this.#buckets = [g.embeddings, ...g.blocks, ...(g.aux ? [g.aux] : [])];
    const start = (b: GradBucket) => {
      if (started.has(b)) return;
      started.add(b);
      this.overlappedFloats += b.end - b.start;
      eng.allReduceStart(eng.offset(model.grads, b.start * 4), b.end - b.start);
    };
    return {
      block: (l) => start(g.blocks[l]),
      aux: () => {
        if (g.aux) start(g.aux);
      },
      progress: () => {
        if (started.size > 0) eng.commProgress();
      },
    };
  }

  /**
   * Sum the model's gradient over the ranks, in place. After {@linkcode DataParallel.overlap}:
   * start the parts the backward did not report (in slab order, the same on every rank) and
   * wait for every part.
   */
  allReduceGrads(model: Model): void {
    const t0 = performance.now();
    const started = this.#started;
    if (started) {
      this.#started = null;
      for (const b of this.#buckets) {
        if (started.has(b) || b.end === b.start) continue;
        this.eng.allReduceStart(this.eng.offset(model.grads, b.start * 4), b.end - b.start);
      }
      this.eng.commWait();
    } else {
      this.eng.allReduceSum(model.grads, model.layout.total);
    }
    this.gradSeconds += (performance.now() - t0) / 1000;
    this.gradReductions++;
    this.reducedFloats += model.layout.total;
  }

  /** Rank 0's parameters (and, with `moments`, its optimiser state) to every rank. */
  broadcastModel(model: Model, moments: boolean): void {
    const bytes = model.layout.total * 4;
    this.eng.broadcast(model.params, bytes, 0);
    if (moments) {
      this.eng.broadcast(model.m, bytes, 0);
      this.eng.broadcast(model.v, bytes, 0);
    }
  }

  /**
   * Check that every rank has the same `values` (integers below 2^24), which `what` names;
   * throws on every rank when one differs from rank 0's, so that no rank goes on alone.
   */
  agree(what: string, values: readonly number[]): void {
    if (values.length > SCALARS) throw new RangeError(`at most ${SCALARS} values at once`);
    this.eng.upload(this.#buf, Float32Array.from(values));
    this.eng.broadcast(this.#buf, values.length * 4, 0);
    const root = new Float32Array(values.length);
    this.eng.download(root, this.#buf);
    const differs = values.some((v, i) => v !== root[i]);
    const [bad] = this.sum([differs ? 1 : 0]);
    if (bad > 0) {
      throw new Error(
        `the ranks disagree on ${what}` +
          (differs
            ? ` (rank ${this.rank}: ${values.join(", ")}; rank 0: ${Array.from(root).join(", ")})`
            : ` (${bad} rank(s) differ from rank 0)`) +
          `: every rank must see the same dataset, run directory and settings (on several ` +
          `machines, a shared file system or identical copies)`,
      );
    }
  }

  /** Return once every rank has called it. */
  barrier(): void {
    this.eng.barrier();
  }

  /** Free the scalars' buffer. */
  free(): void {
    if (this.#buf !== null) this.eng.free(this.#buf);
    this.#buf = null;
  }
}
