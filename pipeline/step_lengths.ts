/**
 * Step-length statistics: how many tokens the steps of a split take, `encode(step + "\n")` as
 * packing counts them, in both CoT forms, and the c that would hold most steps whole. A step
 * longer than c is truncated, dropped or spilled (`--long-step`), so these figures are what
 * choosing c is about, and they differ a lot between forms and tokenizers.
 *
 * @module
 */

/** The distribution of step lengths of one form, in tokens. */
export interface StepLengthStats {
  /** Steps counted. */
  steps: number;
  /** Median (nearest rank). */
  p50: number;
  /** 90th percentile (nearest rank). */
  p90: number;
  /** 99th percentile (nearest rank). */
  p99: number;
  /** Longest step. */
  max: number;
  /** Steps longer than the build's c. */
  overC: number;
  /**
   * The suggested c: the 90th percentile, so that nine steps in ten fit one block whole and
   * the rest are truncated, dropped or spilled by `--long-step`.
   */
  suggestedC: number;
}

/** The value at quantile `q` of ascending `sorted` by nearest rank (0 when empty). */
export function nearestRank(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

/**
 * Collects step lengths and summarises them.
 *
 * @example
 * ```ts
 * import { StepLengths } from "./step_lengths.ts";
 * const s = new StepLengths();
 * for (const n of [3, 5, 5, 6, 20]) s.add(n);
 * const st = s.stats(5);
 * console.assert(st.p50 === 5 && st.max === 20 && st.overC === 2);
 * ```
 */
export class StepLengths {
  #counts = new Map<number, number>();
  #n = 0;

  /** Count one step of `len` tokens. */
  add(len: number): void {
    this.#counts.set(len, (this.#counts.get(len) ?? 0) + 1);
    this.#n++;
  }

  /** Steps counted so far. */
  get size(): number {
    return this.#n;
  }

  /** The distribution, with `overC` counted against `c`. */
  stats(c: number): StepLengthStats {
    const lens = [...this.#counts.keys()].sort((a, b) => a - b);
    const at = (q: number) => {
      if (this.#n === 0) return 0;
      const rank = Math.min(this.#n, Math.max(1, Math.ceil(q * this.#n)));
      let seen = 0;
      for (const l of lens) {
        seen += this.#counts.get(l)!;
        if (seen >= rank) return l;
      }
      return lens[lens.length - 1];
    };
    let overC = 0;
    for (const [l, n] of this.#counts) if (l > c) overC += n;
    const p90 = at(0.9);
    return {
      steps: this.#n,
      p50: at(0.5),
      p90,
      p99: at(0.99),
      max: lens.length ? lens[lens.length - 1] : 0,
      overC,
      suggestedC: p90,
    };
  }
}
