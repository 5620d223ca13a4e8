/**
 * `deno task build-engine`: build the native engine library under build/ (only when its
 * sources, flags, compiler or CPU changed) and print its path. A thin layer over
 * {@linkcode buildEngine} in engine/build.ts.
 *
 * @module
 */

import { buildEngine } from "../engine/build.ts";
import { type ArgsOf, cliMain, defineCommand, oneOf } from "./_common.ts";

/** `deno task build-engine`, declared. */
export const command = defineCommand({
  name: "build-engine",
  summary: "Build the native engine library under build/ and print its path. The file name " +
    "carries a hash of the sources, flags, compiler and CPU, so nothing is rebuilt while they " +
    "stay the same; the engine's users build it on first use anyway (docs/engine.md).",
  flags: {
    backend: {
      value: "B",
      help: "which library: g++ with OpenMP, or nvcc (no GPU needed to compile)",
      schema: oneOf(["cpu", "cuda"]),
      default: "cpu",
    },
    force: { help: "rebuild even if the library is up to date" },
    quiet: { help: "print only the path, not the compiler's command line" },
  },
  examples: [
    { what: "the CPU library", command: "deno task build-engine" },
    { what: "the CUDA library", command: "deno task build-engine --backend cuda" },
    { what: "rebuild even if up to date", command: "deno task build-engine --force" },
  ],
});

/** Validated `deno task build-engine` values. */
export type BuildEngineArgs = ArgsOf<typeof command>;

function main(a: BuildEngineArgs): Promise<number> {
  console.log(buildEngine(a));
  return Promise.resolve(0);
}

if (import.meta.main) await cliMain(command, main);
