/**
 * The byte-to-character table of byte-level BPE (GPT-2's `bytes_to_unicode`), which Hugging
 * Face `tokenizers` uses to spell byte tokens as printable characters in `tokenizer.json`.
 *
 * Printable Latin-1 bytes (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) stand for themselves; the other 68
 * bytes map, in byte order, to U+0100 and up. So byte 0x20 (space) is `Ġ` and 0x0A is `Ċ`.
 *
 * @module
 */

function isPrintable(b: number): boolean {
  return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
}

/** `BYTE_TO_CHAR[b]` is the one-character spelling of byte `b`. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const out: string[] = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    out[b] = String.fromCharCode(isPrintable(b) ? b : next++);
  }
  return out;
})();

/** Inverse of {@linkcode BYTE_TO_CHAR}: character to byte. */
export const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(
  BYTE_TO_CHAR.map((c, b) => [c, b]),
);

/** Spell bytes as byte-level characters. */
export function bytesToTokenString(bytes: ArrayLike<number>): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += BYTE_TO_CHAR[bytes[i]];
  return s;
}
