/**
 * SHA-256 digests as hex, whole or streamed, for content hashes: dataset shards and inputs,
 * tokenizers, checkpoint fingerprints and the engine's build key. Backed by @noble/hashes, so
 * the library needs no Node built-in (a project that imports it needs no @types/node).
 *
 * @example
 * ```ts
 * import { Sha256, sha256Hex } from "./sha256.ts";
 * const whole = sha256Hex("abc");
 * const streamed = new Sha256().update("a").update(new TextEncoder().encode("bc")).hex();
 * console.assert(whole === streamed && whole.startsWith("ba7816bf"));
 * ```
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";

const utf8 = new TextEncoder();

/** An incremental SHA-256: feed it with {@linkcode Sha256.update}, read it once with hex(). */
export class Sha256 {
  #h = sha256.create();
  /** Add bytes, or a string as UTF-8. Returns this, for chaining. */
  update(data: string | Uint8Array): this {
    this.#h.update(typeof data === "string" ? utf8.encode(data) : data);
    return this;
  }
  /** The digest as 64 lowercase hex digits. The hash cannot be updated afterwards. */
  hex(): string {
    return bytesToHex(this.#h.digest());
  }
}

/** The SHA-256 of bytes, or of a string as UTF-8, as 64 lowercase hex digits. */
export function sha256Hex(data: string | Uint8Array): string {
  return new Sha256().update(data).hex();
}

/**
 * The SHA-256 of bytes as 64 lowercase hex digits, computed by the runtime's Web Crypto
 * (several times faster than {@linkcode sha256Hex} on large buffers), or by
 * {@linkcode sha256Hex} where Web Crypto is missing.
 *
 * @example
 * ```ts
 * import { sha256Hex, sha256HexAsync } from "./sha256.ts";
 * const bytes = new TextEncoder().encode("abc");
 * console.assert((await sha256HexAsync(bytes)) === sha256Hex(bytes));
 * ```
 */
export async function sha256HexAsync(data: Uint8Array): Promise<string> {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) return sha256Hex(data);
  const digest = new Uint8Array(await subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
  return bytesToHex(digest);
}
