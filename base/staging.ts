/**
 * Temporary directories beside a target, and the removal of those a dead process left.
 *
 * A process with id P that writes `<parent>/<stem>` through temporary siblings names them
 * `<parent>/<stem>.<tag>-P` (tags such as `tmp`, `old`, `staging`), and holds an exclusive
 * lock on `<parent>/<stem>.lock-P` for as long as any of them exists ({@linkcode TempLease}).
 * The operating system drops the lock when the process ends, however it ends (`kill -9`
 * included), so a later process that can take the lock knows the owner is gone and removes
 * what it left ({@linkcode sweepStale}); one that cannot take it leaves them alone. This
 * needs no permission beyond reading and writing the parent directory: no `/proc`, no
 * signals.
 *
 * {@linkcode replaceDir} is the swap that checkpoints and exports share: fill
 * `<target>.tmp-P`, rename the target aside to `<target>.old-P`, rename the new directory
 * in, remove the old one. A process killed between the two renames leaves no target and a
 * complete `<target>.old-P`; the next sweep puts it back.
 *
 * @example
 * ```ts
 * import { replaceDir } from "./staging.ts";
 * const dir = await Deno.makeTempDir();
 * await replaceDir(`${dir}/out`, async (tmp) => {
 *   await Deno.writeTextFile(`${tmp}/a.txt`, "complete or absent\n");
 * });
 * console.assert(Deno.readTextFileSync(`${dir}/out/a.txt`).startsWith("complete"));
 * ```
 *
 * @module
 */

/** Raised when a temporary directory's lock cannot be taken. */
export class StagingError extends Error {
  /** Create an error. */
  constructor(message: string) {
    super(message);
    this.name = "StagingError";
  }
}

/** `<parent>` and `<stem>` of a path: its directory and its last component. */
export function splitPath(path: string): { parent: string; stem: string } {
  const p = path.replace(/\/+$/, "");
  const i = p.lastIndexOf("/");
  if (i < 0) return { parent: ".", stem: p };
  return { parent: i === 0 ? "/" : p.slice(0, i), stem: p.slice(i + 1) };
}

/**
 * `path` made absolute against the working directory, its "." and ".." parts folded as the
 * path's text says (links are not followed), as `node:path`'s `resolve` does; written here so
 * that modules a library user imports need no Node.js type definitions.
 *
 * @example
 * ```ts
 * import { absolutePath } from "./staging.ts";
 * console.assert(absolutePath("/a/b/../c/.") === "/a/c");
 * ```
 */
export function absolutePath(path: string): string {
  const parts: string[] = [];
  for (const p of (path.startsWith("/") ? path : `${Deno.cwd()}/${path}`).split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") parts.pop();
    else parts.push(p);
  }
  return "/" + parts.join("/");
}

function join(parent: string, name: string): string {
  return parent.endsWith("/") ? parent + name : `${parent}/${name}`;
}

/** Block the thread for `ms` milliseconds (signal handlers cannot await). */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Remove `path` and everything in it, synchronously, for signal handlers; a path that does
 * not exist is fine. A signal handler runs while the process's asynchronous file operations
 * may still be in flight on other threads: a file one of them creates after the tree was
 * emptied makes the final `rmdir` fail (the directory is not empty). The removal is then tried
 * again, every millisecond for up to `tries` times, until it succeeds: once the directory is
 * gone, nothing can be created inside it. Returns whether `path` is gone. `remove` is the
 * removal to use (tests make it fail).
 */
export function removeTreeSync(
  path: string,
  tries = 200,
  remove: (path: string, options: Deno.RemoveOptions) => void = Deno.removeSync,
): boolean {
  for (let i = 1;; i++) {
    try {
      remove(path, { recursive: true });
      return true;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return true;
      if (i >= tries) return false;
      sleepSync(1);
    }
  }
}

/**
 * The temporary siblings of `<parent>/<stem>` that this process owns, and the lock that says
 * so. Create it before the first temporary directory, release it after the last is gone.
 */
export class TempLease {
  /** The directory the temporary siblings live in. */
  readonly parent: string;
  /** The target's name; the siblings are `<stem>.<tag>-<pid>`. */
  readonly stem: string;
  /** `<parent>/<stem>.lock-<pid>`, locked while the lease is held. */
  readonly lockPath: string;
  #file: Deno.FsFile | null;
  readonly #paths = new Set<string>();

  private constructor(parent: string, stem: string, lockPath: string, file: Deno.FsFile) {
    this.parent = parent;
    this.stem = stem;
    this.lockPath = lockPath;
    this.#file = file;
  }

  /**
   * Create and lock `<parent>/<stem>.lock-<pid>`. The parent must exist.
   *
   * @throws {StagingError} when the lock is held already: another write of the same target
   * in this process, or a process of the same id in another container sharing the directory.
   */
  static acquire(parent: string, stem: string): TempLease {
    const lockPath = join(parent, `${stem}.lock-${Deno.pid}`);
    for (;;) {
      const f = Deno.openSync(lockPath, { read: true, write: true, create: true });
      if (!f.tryLockSync(true)) {
        f.close();
        throw new StagingError(
          `${lockPath}: locked by another write of ${join(parent, stem)}; wait for it to finish`,
        );
      }
      // A sweep may have removed the file between our open and our lock: then the lock is on
      // a file nobody else can see, and we start again.
      const mine = f.statSync();
      let now: Deno.FileInfo | null = null;
      try {
        now = Deno.statSync(lockPath);
      } catch { /* removed */ }
      if (now && (mine.ino === null || (now.ino === mine.ino && now.dev === mine.dev))) {
        return new TempLease(parent, stem, lockPath, f);
      }
      f.close();
    }
  }

  /** `<parent>/<stem>.<tag>-<pid>`, removed by {@linkcode TempLease.release}. */
  path(tag: string): string {
    const p = join(this.parent, `${this.stem}.${tag}-${Deno.pid}`);
    this.#paths.add(p);
    return p;
  }

  /** Leave `path` in place at release (a set-aside directory that could not be restored). */
  keep(path: string): void {
    this.#paths.delete(path);
  }

  /** Whether the lease is still held. */
  get held(): boolean {
    return this.#file !== null;
  }

  /**
   * Remove every path handed out by {@linkcode TempLease.path} (those not kept), then the
   * lock file, then drop the lock. Safe to call twice. Synchronous, for signal handlers.
   */
  releaseSync(): void {
    if (this.#file === null) return;
    for (const p of this.#paths) removeTreeSync(p);
    // A kept path still needs its lock file gone, so that the next sweep sees it as dead.
    try {
      Deno.removeSync(this.lockPath);
    } catch { /* already gone */ }
    try {
      this.#file.close();
    } catch { /* already closed */ }
    this.#file = null;
  }

  /** {@linkcode TempLease.releaseSync}, removing the directories asynchronously. */
  async release(): Promise<void> {
    if (this.#file === null) return;
    for (const p of this.#paths) await Deno.remove(p, { recursive: true }).catch(() => {});
    this.releaseSync();
  }
}

/** What {@linkcode sweepStale} did. */
export interface SweepResult {
  /** Paths removed: dead processes' temporary directories and lock files. */
  removed: string[];
  /** The set-aside directory put back as the target, if one was. */
  restored: string | null;
  /** Temporary paths left because their owner still holds the lock. */
  kept: string[];
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * Remove the temporary siblings of `<parent>/<stem>` (`<stem>.<tag>-<pid>` for each of
 * `tags`, and `<stem>.lock-<pid>`) whose owner is gone: its lock file can be locked, or it
 * has none. Those of a live owner are kept. When the target is missing and a dead owner left
 * `<stem>.old-<pid>` (killed between the two renames of {@linkcode replaceDir}), the newest
 * such directory is renamed back to the target first. A missing parent is not an error.
 * `finish`, when given, is called with each dead owner's paths (by tag) before they are
 * removed: a caller whose staged work was complete can move it into place there.
 *
 * @example
 * ```ts
 * import { sweepStale } from "./staging.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.mkdir(`${dir}/ck.tmp-123456`); // left by a killed process, no lock held
 * const r = await sweepStale(dir, "ck", ["tmp", "old"]);
 * console.assert(r.removed.length === 1);
 * ```
 */
export async function sweepStale(
  parent: string,
  stem: string,
  tags: readonly string[],
  finish?: (paths: ReadonlyMap<string, string>) => Promise<void>,
): Promise<SweepResult> {
  const res: SweepResult = { removed: [], restored: null, kept: [] };
  const re = new RegExp(
    `^${escapeRegExp(stem)}\\.(${["lock", ...tags].map(escapeRegExp).join("|")})-(\\d+)$`,
  );
  const byPid = new Map<string, { lock: string | null; paths: Map<string, string> }>();
  try {
    for await (const e of Deno.readDir(parent)) {
      const m = re.exec(e.name);
      if (!m) continue;
      const g = byPid.get(m[2]) ?? { lock: null, paths: new Map() };
      byPid.set(m[2], g);
      if (m[1] === "lock") g.lock = join(parent, e.name);
      else g.paths.set(m[1], join(parent, e.name));
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return res;
    throw e;
  }
  const dead: { lock: string | null; paths: Map<string, string>; file: Deno.FsFile | null }[] = [];
  for (const g of byPid.values()) {
    let file: Deno.FsFile | null = null;
    if (g.lock !== null) {
      try {
        file = Deno.openSync(g.lock, { read: true });
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
      if (file && !file.tryLockSync(true)) {
        file.close();
        res.kept.push(...g.paths.values());
        continue;
      }
    }
    dead.push({ ...g, file });
  }
  const target = join(parent, stem);
  const olds: { path: string; mtime: number }[] = [];
  for (const g of dead) {
    const old = g.paths.get("old");
    if (old) olds.push({ path: old, mtime: (await Deno.stat(old)).mtime?.getTime() ?? 0 });
  }
  if (stem !== "" && olds.length > 0) {
    let missing = false;
    try {
      await Deno.lstat(target);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      missing = true;
    }
    if (missing) {
      olds.sort((a, b) => b.mtime - a.mtime);
      await Deno.rename(olds[0].path, target);
      res.restored = olds[0].path;
    }
  }
  for (const g of dead) {
    await finish?.(g.paths);
    for (const p of g.paths.values()) {
      if (p === res.restored) continue;
      await Deno.remove(p, { recursive: true }).catch((e) => {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      });
      res.removed.push(p);
    }
    if (g.lock !== null) {
      await Deno.remove(g.lock).catch(() => {});
      res.removed.push(g.lock);
    }
    g.file?.close();
  }
  return res;
}

/**
 * The path that a link at `path` leads to, through every link, or `path` itself when it is
 * no link or does not exist. A directory replaced by a rename must be the one the link points
 * to: renamed into place as it stands, the new directory would take the link's place and
 * leave the old contents where the link pointed. A link to a path that does not exist leads
 * there all the same when that path's directory exists: a save killed between its two
 * renames leaves the link pointing at nothing, with the directory set aside beside the
 * missing one, where the next sweep puts it back ({@linkcode sweepStale}).
 *
 * @throws {StagingError} for a link whose target's directory does not exist (a disk not
 * mounted), naming where it points, or a loop of links.
 *
 * @example
 * ```ts
 * import { followLink } from "./staging.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.mkdir(`${dir}/real`);
 * await Deno.symlink(`${dir}/real`, `${dir}/link`);
 * console.assert((await followLink(`${dir}/link`)) === `${dir}/real`);
 * ```
 */
export async function followLink(path: string): Promise<string> {
  let at = path.replace(/(.)\/+$/, "$1");
  for (let hops = 0; hops < 40; hops++) {
    let link: boolean;
    try {
      link = (await Deno.lstat(at)).isSymlink;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      if (hops === 0) return path;
      const { parent } = splitPath(at);
      try {
        await Deno.stat(parent);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
        throw new StagingError(
          `${path}: is a link to ${at}, whose directory ${parent} does not exist; mount or ` +
            `create it, or remove the link`,
        );
      }
      return at;
    }
    if (!link) return hops === 0 ? path : at;
    const to = await Deno.readLink(at);
    at = to.startsWith("/") ? to.replace(/(.)\/+$/, "$1") : join(splitPath(at).parent, to);
  }
  throw new StagingError(`${path}: too many levels of links; remove the loop`);
}

/**
 * Replace directory `target` with one that `fill` writes, atomically: readers see the old
 * directory or the new one, never a part of either. `fill` gets an empty directory,
 * `<target>.tmp-<pid>`; on success it is swapped in (old aside, new in, old removed), on
 * failure removed, and the target stays as it was. Dead processes' leftovers for the same
 * target are swept first ({@linkcode sweepStale}). A `target` that is a link is followed
 * ({@linkcode followLink}): the directory it points to is replaced, beside itself (so its
 * directory must be writable), and the link stays.
 *
 * @throws {StagingError} for a `target` that is a link into a directory that does not exist.
 */
export async function replaceDir(
  target: string,
  fill: (tmp: string) => Promise<void>,
): Promise<void> {
  target = await followLink(target);
  const { parent, stem } = splitPath(target);
  await Deno.mkdir(parent, { recursive: true });
  await sweepStale(parent, stem, ["tmp", "old"]);
  const lease = TempLease.acquire(parent, stem);
  try {
    const tmp = lease.path("tmp"), old = lease.path("old");
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    await Deno.mkdir(tmp);
    await fill(tmp);
    let hadOld = false;
    try {
      await Deno.rename(target, old);
      hadOld = true;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    try {
      await Deno.rename(tmp, target);
    } catch (e) {
      if (hadOld) {
        // Put the old one back; if even that fails, leave it for the next sweep to restore.
        await Deno.rename(old, target).catch(() => lease.keep(old));
      }
      throw e;
    }
  } finally {
    await lease.release();
  }
}
