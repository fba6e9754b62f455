// The fleet heatmap: one cell per instance on a canvas, in one block per app × cluster.
//
// Built for 100,000 instances: the first paint writes pixels straight into one ImageData
// (no per-cell canvas calls), and afterwards only changed cells are repainted, batched by
// the caller once per animation frame. Instance ids map to cells through one Map; statuses
// are kept as one byte per cell.

export const STATUS_COLORS = {
  healthy: "#2e9e5b", suspended: "#94a3b8", progressing: "#3b82f6",
  missing: "#a855f7", degraded: "#d9434b", unknown: "#9ca3af",
};
const CELL = 4;   // cell side in CSS pixels
const PITCH = 5;  // cell plus gap
const LABEL = 16; // label line above a block
const GAP = 14;   // between blocks

/** `#rrggbb` as one little-endian RGBA pixel. */
function pixel(hex) {
  const v = parseInt(hex.slice(1), 16);
  return ((255 << 24) | ((v & 0xff) << 16) | (v & 0xff00) | (v >> 16)) >>> 0;
}

export class Heatmap {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d", { alpha: false });
    this.dirty = [];
    this.groups = [];
    this.ids = [];
    this.codes = new Uint8Array(0);
    this.counts = [];
    this.index = new Map();
  }

  /** Takes a `GET /v1/health/heatmap` answer as the whole new state. */
  load(answer) {
    this.statuses = answer.statuses;
    this.colors = this.statuses.map((s) => STATUS_COLORS[s] ?? "#000000");
    this.codeOf = new Map(this.statuses.map((s, i) => [s, i]));
    const total = answer.groups.reduce((n, g) => n + g.ids.length, 0);
    this.ids = new Array(total);
    this.codes = new Uint8Array(total);
    this.index = new Map();
    this.groups = [];
    let at = 0;
    for (const g of answer.groups) {
      this.groups.push({ app: g.app, cluster: g.cluster, start: at, count: g.ids.length });
      for (let k = 0; k < g.ids.length; k += 1, at += 1) {
        this.ids[at] = g.ids[k];
        this.codes[at] = g.codes.charCodeAt(k) - 48;
        this.index.set(g.ids[k], at);
      }
    }
    this.counts = this.statuses.map(() => 0);
    for (const c of this.codes) this.counts[c] += 1;
    this.dirty = [];
  }

  /** Places the blocks in rows ("shelves") across `widthCss` and sizes the canvas. */
  layout(widthCss) {
    const s = Math.max(1, Math.round(devicePixelRatio));
    const width = Math.max(200, Math.floor(widthCss)) * s;
    const pitch = PITCH * s;
    const maxCols = Math.floor(width / pitch);
    let x = 0;
    let y = 0;
    let shelf = 0;
    for (const g of this.groups) {
      // Blocks about four times as wide as tall, and wide enough for a short label.
      g.cols = Math.min(maxCols, Math.max(24, Math.ceil(Math.sqrt(g.count * 4))));
      const w = g.cols * pitch;
      const h = LABEL * s + Math.ceil(g.count / g.cols) * pitch;
      if (x > 0 && x + w > width) {
        x = 0;
        y += shelf + GAP * s;
        shelf = 0;
      }
      g.x = x;
      g.y = y + LABEL * s;
      x += w + GAP * s;
      shelf = Math.max(shelf, h);
    }
    this.scale = s;
    this.canvas.width = width;
    this.canvas.height = Math.max(y + shelf, 40 * s);
    this.canvas.style.width = `${width / s}px`;
    this.canvas.style.height = `${this.canvas.height / s}px`;
  }

  /** Paints every cell and label. */
  draw() {
    const { width, height } = this.canvas;
    const image = this.ctx.createImageData(width, height);
    const px = new Uint32Array(image.data.buffer);
    px.fill(0xffffffff);
    const palette = this.colors.map(pixel);
    const s = this.scale;
    const cell = CELL * s;
    const pitch = PITCH * s;
    for (const g of this.groups) {
      for (let k = 0; k < g.count; k += 1) {
        const x = g.x + (k % g.cols) * pitch;
        const y = g.y + Math.floor(k / g.cols) * pitch;
        const color = palette[this.codes[g.start + k]];
        for (let dy = 0; dy < cell; dy += 1) {
          const row = (y + dy) * width + x;
          px.fill(color, row, row + cell);
        }
      }
    }
    this.ctx.putImageData(image, 0, 0);
    this.ctx.fillStyle = "#374151";
    this.ctx.font = `${11 * s}px system-ui, sans-serif`;
    for (const g of this.groups) {
      const label = g.cluster ? `${g.app} · ${g.cluster}` : g.app;
      const room = Math.floor((g.cols * pitch) / (6.5 * s));
      const text = label.length > room ? `${label.slice(0, Math.max(1, room - 1))}…` : label;
      this.ctx.fillText(`${text}`, g.x, g.y - 5 * s);
    }
    this.dirty = [];
  }

  /**
   * Records a new status for an instance; the cell is repainted at the next `flush`.
   * Returns false for an id the last snapshot did not have (registered since).
   */
  set(id, status) {
    const i = this.index.get(id);
    if (i === undefined) return false;
    const code = this.codeOf.get(status);
    if (code === undefined || this.codes[i] === code) return true;
    this.counts[this.codes[i]] -= 1;
    this.counts[code] += 1;
    this.codes[i] = code;
    this.dirty.push(i);
    return true;
  }

  /** Repaints the cells changed since the last call, one fill colour at a time. */
  flush() {
    if (!this.dirty.length) return 0;
    const cell = CELL * this.scale;
    const pitch = PITCH * this.scale;
    const byCode = this.statuses.map(() => []);
    for (const i of this.dirty) byCode[this.codes[i]].push(i);
    byCode.forEach((cells, code) => {
      if (!cells.length) return;
      this.ctx.fillStyle = this.colors[code];
      for (const i of cells) {
        const g = this.groupOf(i);
        const k = i - g.start;
        this.ctx.fillRect(g.x + (k % g.cols) * pitch, g.y + Math.floor(k / g.cols) * pitch, cell, cell);
      }
    });
    const painted = this.dirty.length;
    this.dirty = [];
    return painted;
  }

  groupOf(i) {
    let lo = 0;
    let hi = this.groups.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.groups[mid].start <= i) lo = mid;
      else hi = mid - 1;
    }
    return this.groups[lo];
  }

  /** The cell under a point given in CSS pixels from the canvas' corner, or -1. */
  cellAt(xCss, yCss) {
    const x = xCss * this.scale;
    const y = yCss * this.scale;
    const pitch = PITCH * this.scale;
    for (const g of this.groups) {
      const col = Math.floor((x - g.x) / pitch);
      const row = Math.floor((y - g.y) / pitch);
      if (col < 0 || col >= g.cols || row < 0) continue;
      const k = row * g.cols + col;
      if (k < g.count) return g.start + k;
    }
    return -1;
  }

  /** The centre of cell `i` in CSS pixels from the canvas' corner. */
  centerOf(i) {
    const g = this.groupOf(i);
    const k = i - g.start;
    const pitch = PITCH * this.scale;
    return {
      x: (g.x + (k % g.cols) * pitch + (CELL * this.scale) / 2) / this.scale,
      y: (g.y + Math.floor(k / g.cols) * pitch + (CELL * this.scale) / 2) / this.scale,
    };
  }

  describe(i) {
    const g = this.groupOf(i);
    return { id: this.ids[i], status: this.statuses[this.codes[i]], app: g.app, cluster: g.cluster };
  }
}
