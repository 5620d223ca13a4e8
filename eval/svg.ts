/**
 * Small SVG builders for the evaluation pictures: a line chart (training curves) and the
 * readout view (each block's gold step against its decoded latents, coloured by match).
 *
 * Written here rather than taken from a charting package: the two pictures need a few dozen
 * lines of markup, the output must be a self-contained file that any browser (and the HTML
 * report, inline) shows without scripts, and the npm charting libraries either need a DOM
 * or bring far more than this.
 *
 * @module
 */

/**
 * Characters XML 1.0 does not allow even escaped: C0 controls other than tab, newline and
 * carriage return, U+FFFE, U+FFFF, and UTF-16 surrogates that are not in a pair.
 */
const NOT_XML =
  // deno-lint-ignore no-control-regex
  /[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/**
 * Escape text for SVG/HTML element content and attribute values. A character XML cannot hold
 * at all (a C0 control, which a byte-level tokenizer's token may decode to) is shown by its
 * Unicode control picture (U+0000 as U+2400), anything else of that kind as U+FFFD, so that a
 * standalone SVG stays well-formed XML.
 *
 * @example
 * ```ts
 * import { escapeXml } from "./svg.ts";
 * console.assert(escapeXml("<a & \u0000>") === "&lt;a &amp; \u2400&gt;");
 * ```
 */
export function escapeXml(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch]!,
  ).replace(NOT_XML, (ch) => {
    const c = ch.charCodeAt(0);
    return c < 0x20 ? String.fromCharCode(0x2400 + c) : "\ufffd";
  });
}

/** One line of a chart. */
export interface Series {
  /** Legend label. */
  name: string;
  /** [x, y] points; non-finite y values are skipped. */
  points: [number, number][];
}

/** Options of {@linkcode lineChartSvg}. */
export interface LineChartOptions {
  /** Title drawn above. */
  title: string;
  /** Label of the x axis. */
  xLabel: string;
  /** Label of the y axis. */
  yLabel: string;
  /** Width in pixels (default 640). */
  width?: number;
  /** Height in pixels (default 360). */
  height?: number;
  /** Fix the y range (default: the data's, padded). */
  yMin?: number;
  /** Fix the top of the y range. */
  yMax?: number;
  /** Draw y on a log scale (positive values only). */
  logY?: boolean;
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"];

/** Round tick values: about `n` of them over [lo, hi]. */
export function ticks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

function fmt(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e6 || a < 1e-3) return v.toExponential(1);
  return String(Number(v.toPrecision(6)));
}

/**
 * A line chart as a standalone SVG document.
 *
 * @example
 * ```ts
 * import { lineChartSvg } from "./svg.ts";
 * const svg = lineChartSvg([{ name: "loss", points: [[1, 3], [2, 2], [3, 1.5]] }], {
 *   title: "Training loss", xLabel: "step", yLabel: "loss",
 * });
 * console.assert(svg.startsWith("<svg") && svg.includes("<polyline"));
 * ```
 */
export function lineChartSvg(series: Series[], o: LineChartOptions): string {
  const W = o.width ?? 640, H = o.height ?? 360;
  const m = { l: 64, r: 150, t: 36, b: 48 };
  const pw = W - m.l - m.r, ph = H - m.t - m.b;
  const tf = (y: number) => (o.logY ? Math.log10(y) : y);
  const pts = series.flatMap((s) => s.points).filter(([x, y]) =>
    Number.isFinite(x) && Number.isFinite(y) && (!o.logY || y > 0)
  );
  let x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
  let y0 = o.yMin ?? Math.min(...pts.map((p) => tf(p[1])));
  let y1 = o.yMax ?? Math.max(...pts.map((p) => tf(p[1])));
  if (!pts.length) x0 = 0, x1 = 1, y0 = o.yMin ?? 0, y1 = o.yMax ?? 1;
  // A single point (say one evaluation) still gets a readable axis around it.
  if (x1 === x0) {
    const pad = Math.max(1, Math.abs(x0) * 0.05);
    x0 -= pad, x1 += pad;
  }
  if (y1 === y0) y1 = y0 + 1;
  const sx = (x: number) => m.l + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.t + ph - ((tf(y) - y0) / (y1 - y0)) * ph;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ` +
    `font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${m.l + pw / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">` +
    `${escapeXml(o.title)}</text>`,
  ];
  // Axes, grid and ticks.
  for (const t of ticks(x0, x1)) {
    parts.push(
      `<line x1="${sx(t)}" y1="${m.t}" x2="${sx(t)}" y2="${m.t + ph}" stroke="#eee"/>`,
      `<text x="${sx(t)}" y="${m.t + ph + 16}" text-anchor="middle">${fmt(t)}</text>`,
    );
  }
  for (const t of ticks(y0, y1)) {
    const y = m.t + ph - ((t - y0) / (y1 - y0)) * ph;
    parts.push(
      `<line x1="${m.l}" y1="${y}" x2="${m.l + pw}" y2="${y}" stroke="#eee"/>`,
      `<text x="${m.l - 6}" y="${y + 4}" text-anchor="end">${fmt(o.logY ? 10 ** t : t)}</text>`,
    );
  }
  parts.push(
    `<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`,
    `<text x="${m.l + pw / 2}" y="${H - 10}" text-anchor="middle">${escapeXml(o.xLabel)}</text>`,
    `<text transform="translate(16 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">` +
      `${escapeXml(o.yLabel)}</text>`,
  );
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length];
    const p = s.points.filter(([x, y]) =>
      Number.isFinite(x) && Number.isFinite(y) && (!o.logY || y > 0)
    );
    if (p.length > 1) {
      const d = p.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
      parts.push(`<polyline points="${d}" fill="none" stroke="${color}" stroke-width="1.5"/>`);
    }
    if (p.length <= 30) {
      for (const [x, y] of p) {
        parts.push(
          `<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="2.5" fill="${color}"/>`,
        );
      }
    }
    const ly = m.t + 10 + i * 18;
    parts.push(
      `<line x1="${m.l + pw + 12}" y1="${ly}" x2="${m.l + pw + 32}" y2="${ly}" stroke="${color}" ` +
        `stroke-width="2"/>`,
      `<text x="${m.l + pw + 38}" y="${ly + 4}">${escapeXml(s.name)}</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("\n");
}

/** One block of the readout view. */
export interface ReadoutBlockView {
  /** S_k token by token. */
  gold: string[];
  /** The decoded argmax of each slot. */
  readout: string[];
  /** Per slot: "top1" (argmax is gold), "top5", "miss", or "none" past the gold step. */
  match: ("top1" | "top5" | "miss" | "none")[];
  /** A label at the right, e.g. the block's kind. */
  note?: string;
}

/** One example of the readout view. */
export interface ReadoutExampleView {
  /** Title drawn above. */
  title: string;
  /** One entry per latent block. */
  blocks: ReadoutBlockView[];
}

const MATCH_FILL = { top1: "#b7e4b0", top5: "#fde6a2", miss: "#f4b6b6", none: "#eeeeee" };

function tokenLabel(t: string): string {
  const s = t.replace(/\n/g, "⏎").replace(/ /g, "·");
  return s.length > 8 ? s.slice(0, 7) + "…" : s;
}

/**
 * The readout view as a standalone SVG: per example, per block, the gold tokens above the
 * decoded slots, each slot green when its argmax is the gold token, amber when the gold token
 * is in its top 5, red otherwise, and grey past the gold step.
 *
 * @example
 * ```ts
 * import { readoutSvg } from "./svg.ts";
 * const svg = readoutSvg([{ title: "q1", blocks: [{ gold: ["<<", "2"], readout: ["<<", "3"], match: ["top1", "miss"] }] }]);
 * console.assert(svg.includes("#b7e4b0") && svg.includes("#f4b6b6"));
 * ```
 */
export function readoutSvg(examples: ReadoutExampleView[]): string {
  const cw = 44, ch = 20, labelW = 70, gap = 10;
  const slots = Math.max(1, ...examples.flatMap((e) => e.blocks.map((b) => b.readout.length)));
  const W = labelW + slots * cw + 170;
  const parts: string[] = [];
  let y = 28;
  parts.push(
    `<text x="8" y="18" font-size="13" font-weight="bold">Latent readout: gold step (upper row) ` +
      `against the argmax of each latent slot (lower row)</text>`,
  );
  for (const ex of examples) {
    parts.push(
      `<text x="8" y="${y + 14}" font-weight="bold">${escapeXml(ex.title)}</text>`,
    );
    y += 20;
    ex.blocks.forEach((b, k) => {
      parts.push(`<text x="8" y="${y + 14}">block ${k}</text>`);
      parts.push(`<text x="8" y="${y + ch + 14}" fill="#666">read</text>`);
      for (let j = 0; j < Math.max(b.readout.length, b.gold.length); j++) {
        const x = labelW + j * cw;
        if (j < b.gold.length) {
          parts.push(
            `<rect x="${x}" y="${y}" width="${cw - 2}" height="${ch - 2}" fill="#f7f7f7" ` +
              `stroke="#ccc"/>`,
            `<text x="${x + cw / 2 - 1}" y="${y + 13}" text-anchor="middle">` +
              `${escapeXml(tokenLabel(b.gold[j]))}</text>`,
          );
        }
        if (j < b.readout.length) {
          const fill = MATCH_FILL[b.match[j] ?? "none"];
          parts.push(
            `<rect x="${x}" y="${y + ch}" width="${cw - 2}" height="${ch - 2}" fill="${fill}" ` +
              `stroke="#999"/>`,
            `<text x="${x + cw / 2 - 1}" y="${y + ch + 13}" text-anchor="middle">` +
              `${escapeXml(tokenLabel(b.readout[j]))}</text>`,
          );
        }
      }
      if (b.note) {
        parts.push(
          `<text x="${labelW + slots * cw + 8}" y="${y + ch + 13}">${escapeXml(b.note)}</text>`,
        );
      }
      y += 2 * ch + gap;
    });
    y += gap;
  }
  // Legend.
  const legend: [string, string][] = [
    [MATCH_FILL.top1, "argmax = gold"],
    [MATCH_FILL.top5, "gold in top 5"],
    [MATCH_FILL.miss, "miss"],
    [MATCH_FILL.none, "past the gold step"],
  ];
  legend.forEach(([fill, label], i) => {
    const x = 8 + i * 150;
    parts.push(
      `<rect x="${x}" y="${y}" width="14" height="14" fill="${fill}" stroke="#999"/>`,
      `<text x="${x + 20}" y="${y + 12}">${label}</text>`,
    );
  });
  y += 24;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" ` +
    `font-family="monospace" font-size="11">`,
    `<rect width="${W}" height="${y}" fill="#fff"/>`,
    ...parts,
    "</svg>",
  ].join("\n");
}
