/**
 * "Did you mean": the candidate nearest a mistyped name, by edit distance.
 *
 * @module
 */

/**
 * Edit distance between `a` and `b`: insertions, deletions, substitutions and swaps of two
 * adjacent characters (`trian` for `train`) each count one (optimal string alignment).
 */
export function editDistance(a: string, b: string): number {
  let before: number[] = [];
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        cur[j] = Math.min(cur[j], before[j - 2] + 1);
      }
    }
    before = prev;
    prev = cur;
  }
  return prev[b.length];
}

/**
 * The candidate nearest `typed`, or undefined when none is near enough to be a typo: first one
 * that differs from it only in case, `_` and `-` (`R` for `r`, `max_new_tokens` for
 * `maxNewTokens`), else one within a third of its length in edits (at least one), or a prefix
 * either way of three or more characters.
 *
 * @example
 * ```ts
 * import { nearestName } from "./suggest.ts";
 * console.assert(nearestName("stepz", ["steps", "seed", "batch"]) === "steps");
 * console.assert(nearestName("colour", ["steps", "seed"]) === undefined);
 * console.assert(nearestName("eval_examples", ["evalExamples", "epochs"]) === "evalExamples");
 * ```
 */
export function nearestName(typed: string, candidates: readonly string[]): string | undefined {
  const fold = (s: string) => s.toLowerCase().replace(/[-_]/g, "");
  const same = candidates.find((f) => fold(f) === fold(typed));
  if (same !== undefined) return same;
  const best = candidates
    .map((f) => ({
      f,
      d: typed.length >= 3 && (f.startsWith(typed) || typed.startsWith(f))
        ? 1
        : editDistance(typed, f),
    }))
    .sort((a, b) => a.d - b.d)[0];
  return best && best.d <= Math.max(1, Math.floor(typed.length / 3)) ? best.f : undefined;
}
