/**
 * Child process of tests/_browser.ts: render a page in headless chromium with
 * playwright-core and print what rendered as JSON. Usage: `_render_page.ts CHROMIUM URL`.
 *
 * @module
 */
import { chromium } from "playwright-core";

const PAGE_PROBE = `(() => ({
  images: [...document.images].map((i) => ({
    src: i.src.slice(0, 40),
    complete: i.complete,
    width: i.naturalWidth,
    height: i.naturalHeight,
  })),
  svgs: [...document.querySelectorAll("svg")]
    .filter((s) => !s.parentElement || !s.parentElement.closest("svg"))
    .map((s) => {
      const r = s.getBoundingClientRect();
      return { width: r.width, height: r.height };
    }),
  tables: [...document.querySelectorAll("table")].map((t) => ({
    rows: t.querySelectorAll("tbody tr").length,
  })),
  title: document.title,
}))()`;

/**
 * Open `url` in a fresh headless chromium (its own temporary profile), wait for the load
 * event, and report what rendered.
 */
async function render(executable: string, url: string): Promise<unknown> {
  const profile = await Deno.makeTempDir({ prefix: "lotus-chromium-" });
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: executable,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  try {
    const page = await ctx.newPage();
    await page.goto(url, { waitUntil: "load" });
    // A string, so that this module needs no DOM types: it runs in the page.
    return await page.evaluate(PAGE_PROBE);
  } finally {
    await ctx.close();
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const [exe, url] = Deno.args;
  console.log(JSON.stringify(await render(exe, url)));
}
