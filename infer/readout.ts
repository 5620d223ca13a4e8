/**
 * Latent readout: the post-loop logits of the loop region read through the LM head. Block k
 * owns loop rows k*c .. k*c+c-1 (row 0 is BOT: the reference's BOT offset), so its slots are
 * scored against the gold step S_k position by position (docs/method.md).
 *
 * A model trained with `--long-step spill` was taught to continue a long step past its block,
 * into the next block's rows, up to the loop region's last row K*c. Its readout (`spill`
 * true) therefore reads block k from row k*c on, for up to (K - k)*c + 1 rows, and cuts the
 * text at its first newline as always; the rows it reads past c are also the next block's
 * first rows, where one argmax serves both (pipeline/step_targets.ts).
 *
 * @module
 */

/** How many loop rows block k's readout reads: c, or (K - k)*c + 1 when steps spill. */
export function readoutRows(k: number, K: number, c: number, spill = false): number {
  return spill ? (K - k) * c + 1 : c;
}

/** Indices of the `k` largest values of `row` (descending; lowest index on ties). */
export function topK(row: Float32Array, k: number): number[] {
  const best: number[] = [];
  for (let v = 0; v < row.length; v++) {
    if (best.length < k) {
      best.push(v);
      best.sort((a, b) => row[b] - row[a] || a - b);
    } else if (row[v] > row[best[k - 1]]) {
      best[k - 1] = v;
      best.sort((a, b) => row[b] - row[a] || a - b);
    }
  }
  return best;
}

/**
 * The argmax token of every slot of every block: `[K][c]` ids, from `[1 + K*c, V]` logits
 * (with `spill`, block k has {@linkcode readoutRows} ids).
 *
 * @example
 * ```ts
 * import { readoutIds } from "./readout.ts";
 * const V = 3, logits = new Float32Array([0, 1, 0, 2, 0, 0, 0, 0, 5]); // 3 rows: BOT + 2 slots
 * console.assert(JSON.stringify(readoutIds(logits, 1, 2, V)) === "[[1,0]]");
 * ```
 */
export function readoutIds(
  logits: Float32Array,
  K: number,
  c: number,
  V: number,
  spill = false,
): number[][] {
  const out: number[][] = [];
  for (let k = 0; k < K; k++) {
    const ids: number[] = [];
    for (let j = 0; j < readoutRows(k, K, c, spill); j++) {
      const row = logits.subarray((k * c + j) * V, (k * c + j + 1) * V);
      let best = 0;
      for (let v = 1; v < V; v++) if (row[v] > row[best]) best = v;
      ids.push(best);
    }
    out.push(ids);
  }
  return out;
}

/**
 * Each block's readout as text: the argmax slots decoded, cut at the first newline (a step
 * ends with "\n", so the slots after it belong to no step).
 */
export function readoutTexts(
  logits: Float32Array,
  K: number,
  c: number,
  V: number,
  decode: (ids: number[]) => string,
  spill = false,
): string[] {
  return readoutIds(logits, K, c, V, spill).map((ids) => {
    const text = decode(ids);
    const nl = text.indexOf("\n");
    return nl >= 0 ? text.slice(0, nl) : text;
  });
}

/** How well one block's readout recovers its gold step (see {@linkcode scoreReadout}). */
export interface BlockScore {
  /** Block index k. */
  block: number;
  /** The gold step's token ids, S_k (whole, even past c). */
  gold: number[];
  /** The argmax id of each row the block reads: c, or more when steps spill. */
  readout: number[];
  /** Per scored slot j < min(rows read, |S_k|): the argmax is S_k[j]. */
  top1: boolean[];
  /** Per scored slot: S_k[j] is among the slot's 5 largest logits. */
  top5: boolean[];
}

/**
 * Score the readout of every block that has a gold step: block k's slot j (loop row k*c+j)
 * against S_k[j], for k < min(K, steps) and j < min(c, |S_k|) (with `spill`, j < min(rows
 * read, |S_k|)). Top-1: the argmax is the gold token; top-5: the gold token is among the 5
 * largest logits.
 *
 * @example
 * ```ts
 * import { scoreReadout } from "./readout.ts";
 * // V = 4, K = 1, c = 2: rows BOT (slot 0) and the first latent (slot 1).
 * // Rows: slot 0 (BOT) favours id 2, slot 1 favours id 0 then id 1, the last row is unused.
 * const logits = new Float32Array([0, 0, 9, 0, 5, 4, 0, 0, 0, 0, 0, 0]);
 * const [b] = scoreReadout(logits, 1, 2, 4, [[2, 1]]);
 * console.assert(b.top1.join() === "true,false" && b.top5.join() === "true,true");
 * ```
 */
export function scoreReadout(
  logits: Float32Array,
  K: number,
  c: number,
  V: number,
  gold: ArrayLike<number>[],
  spill = false,
): BlockScore[] {
  const ids = readoutIds(logits, K, c, V, spill);
  const out: BlockScore[] = [];
  for (let k = 0; k < Math.min(K, gold.length); k++) {
    const g = Array.from(gold[k]);
    const top1: boolean[] = [], top5: boolean[] = [];
    for (let j = 0; j < Math.min(ids[k].length, g.length); j++) {
      const row = logits.subarray((k * c + j) * V, (k * c + j + 1) * V);
      top1.push(ids[k][j] === g[j]);
      top5.push(topK(row, 5).includes(g[j]));
    }
    out.push({ block: k, gold: g, readout: ids[k], top1, top5 });
  }
  return out;
}

/**
 * The `n` most likely readings of block k, best first: the slots are read independently, so
 * a reading's score is the sum of its slots' log-softmax, and a beam over each slot's top
 * `width` tokens finds the best sequences exactly when `width` >= the beam. Readings are cut
 * at their first newline (a step ends with "\n") and deduplicated by that text, which is why
 * the beam is wider than `n`. `rows` is how many rows the block reads (default c; see
 * {@linkcode readoutRows}).
 */
export function bestReadings(
  logits: Float32Array,
  k: number,
  c: number,
  V: number,
  n: number,
  decode: (ids: number[]) => string,
  width = 4 * n,
  rows = c,
): { text: string; logProb: number }[] {
  let beam: { ids: number[]; lp: number }[] = [{ ids: [], lp: 0 }];
  for (let j = 0; j < rows; j++) {
    const row = logits.subarray((k * c + j) * V, (k * c + j + 1) * V);
    let max = -Infinity;
    for (let v = 0; v < V; v++) max = Math.max(max, row[v]);
    let sum = 0;
    for (let v = 0; v < V; v++) sum += Math.exp(row[v] - max);
    const lse = max + Math.log(sum);
    const cands = topK(row, width);
    const next: { ids: number[]; lp: number }[] = [];
    for (const b of beam) {
      for (const v of cands) next.push({ ids: [...b.ids, v], lp: b.lp + row[v] - lse });
    }
    next.sort((a, b) => b.lp - a.lp);
    beam = next.slice(0, width);
  }
  const seen = new Set<string>(), out: { text: string; logProb: number }[] = [];
  for (const b of beam) {
    const full = decode(b.ids), nl = full.indexOf("\n");
    const text = nl >= 0 ? full.slice(0, nl) : full;
    if (seen.has(text)) continue;
    seen.add(text);
    out.push({ text, logProb: b.lp });
    if (out.length === n) break;
  }
  return out;
}
