// npm postinstall: make node_modules/.bin/deno the deno package's JS shim (bin.cjs).
//
// The deno npm package replaces its .bin entry with the native executable. Inside
// `deno task`, Deno 2.9 runs commands found in node_modules/.bin as JavaScript, so a task
// that calls `deno ...` would try to parse the executable as a script and fail. The shim is
// JavaScript that starts the native executable, so it works both from a shell (`npx deno`)
// and from inside tasks.
"use strict";
const fs = require("fs");
const path = require("path");
const bin = path.join(__dirname, "..", "node_modules", ".bin", "deno");
const shim = path.join(__dirname, "..", "node_modules", "deno", "bin.cjs");
if (fs.existsSync(shim)) {
  try {
    fs.unlinkSync(bin);
  } catch { /* absent */ }
  fs.symlinkSync(path.relative(path.dirname(bin), shim), bin);
}
