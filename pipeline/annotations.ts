/**
 * Calculator annotations `<<expr=value>>`: finding them, checking that `<<` and `>>` pair up,
 * and removing them from prose.
 *
 * @module
 */

/** What a scan of a text found. */
export interface AnnotationScan {
  /** The text inside each well-formed `<<...>>`, in order. */
  inner: string[];
  /** The text with every annotation and every stray `<<` or `>>` removed. */
  stripped: string;
  /** How many `<<` never closed, plus how many `>>` never opened. */
  unbalanced: number;
}

/**
 * Scans `text` for annotations. A `<<` followed by another `<<` before any `>>` is unbalanced
 * (the inner one opens the annotation); so is a `>>` with no open `<<`, and a `<<` still open
 * at the end.
 *
 * @example
 * ```ts
 * import { scanAnnotations } from "./annotations.ts";
 * const s = scanAnnotations("54/3 = <<54/3=18>>18 cups");
 * console.assert(s.inner[0] === "54/3=18" && s.stripped === "54/3 = 18 cups" && s.unbalanced === 0);
 * ```
 */
export function scanAnnotations(text: string): AnnotationScan {
  const inner: string[] = [];
  let stripped = "";
  let unbalanced = 0;
  let open = -1; // position of the pending "<<"
  let copied = 0; // text before this is already in `stripped` or dropped
  let i = 0;
  while (true) {
    const lt = text.indexOf("<<", i);
    const gt = text.indexOf(">>", i);
    if (lt === -1 && gt === -1) break;
    if (lt !== -1 && (gt === -1 || lt < gt)) {
      if (open !== -1) {
        unbalanced++;
        stripped += text.slice(copied, open) + text.slice(open + 2, lt);
      } else {
        stripped += text.slice(copied, lt);
      }
      open = lt;
      copied = lt;
      i = lt + 2;
    } else {
      if (open === -1) {
        unbalanced++;
        stripped += text.slice(copied, gt);
      } else {
        inner.push(text.slice(open + 2, gt));
        open = -1;
      }
      copied = gt + 2;
      i = gt + 2;
    }
  }
  if (open !== -1) {
    unbalanced++;
    stripped += text.slice(copied, open) + text.slice(open + 2);
  } else {
    stripped += text.slice(copied);
  }
  return { inner, stripped, unbalanced };
}
