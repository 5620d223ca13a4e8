// npm postinstall: make node_modules/.bin/deno a JS shim (tools/deno_shim.cjs) that starts
// the deno package's native executable.
//
// The deno npm package replaces its .bin entry with the native executable. Inside
// `deno task`, Deno 2.9 runs commands found in node_modules/.bin as JavaScript, so a task
// that calls `deno ...` would try to parse the executable as a script and fail. The shim is
// JavaScript that starts the native executable, so it works both from a shell (`npx deno`)
// and from inside tasks.
"use strict";
// The shim is this project's (tools/deno_shim.cjs), not the package's bin.cjs: that one waits
// for Deno with a synchronous spawn, so a Ctrl-C or `kill` ends the shim at once while Deno is
// still saving, and the shell goes on before the run has stopped.
const fs = require("fs");
const path = require("path");
const bin = path.join(__dirname, "..", "node_modules", ".bin", "deno");
const shim = path.join(__dirname, "deno_shim.cjs");
if (fs.existsSync(path.join(__dirname, "..", "node_modules", "deno"))) {
  try {
    fs.unlinkSync(bin);
  } catch { /* absent */ }
  fs.mkdirSync(path.dirname(bin), { recursive: true });
  fs.symlinkSync(path.relative(path.dirname(bin), shim), bin);
  fs.chmodSync(shim, 0o755);
}
