/**
 * Headless Chromium for tests that check a page really renders (Debian's chromium, driven by
 * playwright-core). Tests skip only when no chromium binary can be found at all.
 *
 * @module
 */

/** Where chromium is: $CHROMIUM_PATH, /usr/bin/chromium, or chromium on the PATH; or null. */
export function findChromium(): string | null {
  const env = Deno.env.get("CHROMIUM_PATH");
  const candidates = [env, "/usr/bin/chromium", "/usr/bin/chromium-browser"].filter(Boolean);
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir) candidates.push(`${dir}/chromium`);
  }
  for (const c of candidates) {
    try {
      if (Deno.statSync(c!).isFile) return c!;
    } catch { /* not there */ }
  }
  return null;
}

/** What a rendered page holds: images, inline SVGs and tables, with their sizes. */
export interface RenderedPage {
  images: { src: string; complete: boolean; width: number; height: number }[];
  svgs: { width: number; height: number }[];
  tables: { rows: number }[];
  title: string;
}

/**
 * Open `url` in a fresh headless chromium (its own temporary profile), wait for the load
 * event, and report what rendered. playwright-core runs in a child Deno with all
 * permissions: it probes paths such as /proc/sys that Deno grants only with --allow-all,
 * which the test task does not (and should not) have.
 */
export async function renderPage(executable: string, url: string): Promise<RenderedPage> {
  const script = new URL("./_render_page.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", script, executable, url],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(
      `rendering ${url} failed (exit ${out.code}): ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return JSON.parse(text) as RenderedPage;
}
