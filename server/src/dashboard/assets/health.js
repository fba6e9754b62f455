// Health page: the fleet heatmap, kept live from the transition stream, and a drill-down
// to one instance's state, reasons and history.
//
// The stream is opened before the snapshot is read, so no transition falls between the
// two; events are queued as they arrive and applied once per animation frame (at most
// MAX_PER_FRAME, the rest on the next frames) so a burst cannot stall drawing.
// `window.slipwayDashboard` exposes first-render and frame timings for the benchmark.

import { api, stream } from "./api.js";
import { Heatmap, STATUS_COLORS } from "./heatmap.js";
import { badge, h, time, toast } from "./dom.js";

const MAX_PER_FRAME = 20000;

/** Timings read by the dashboard benchmark through WebDriver. */
const stats = (window.slipwayDashboard ??= {
  firstRenderMs: null,
  recording: false,
  frames: [],
  applied: 0,
  record() { this.frames = []; this.applied = 0; this.recording = true; },
  stop() { this.recording = false; return { frames: this.frames, applied: this.applied }; },
});

export async function render(main, _route, signal) {
  const heatmap = new Heatmap(h("canvas", { id: "heatmap" }));
  const legend = h("div", { class: "legend" });
  const status = h("span", { class: "live", id: "heatmap-live" }, "connecting");
  const summary = h("span", { class: "muted", id: "heatmap-summary" });
  const tip = h("div", { id: "heatmap-tip", hidden: true });
  const mark = h("div", { id: "heatmap-mark", hidden: true });
  const drill = h("aside", { class: "panel", id: "drilldown" },
    h("p", { class: "muted" }, "Click a cell to see that instance's reasons and history."));
  const wrap = h("div", { id: "heatmap-wrap" }, heatmap.canvas, tip, mark);
  main.append(h("div", { class: "health-layout" },
    h("section", { class: "panel" },
      h("div", { class: "toolbar" }, h("h1", {}, "Fleet health"), summary, status),
      legend, wrap),
    drill));

  const queue = [];
  let loaded = false;
  let reloading = null;
  heatmap.canvas.hidden = true;
  const relayout = () => {
    heatmap.canvas.hidden = false;
    heatmap.layout(wrap.clientWidth);
    heatmap.draw();
  };
  const load = async () => {
    const answer = await api("/v1/health/heatmap", { signal });
    heatmap.load(answer);
    relayout();
    loaded = true;
    stats.firstRenderMs ??= performance.now();
    showLegend();
  };
  const reload = () => {
    reloading ??= load().catch((e) => { if (!signal.aborted) toast(e.message, true); })
      .finally(() => { reloading = null; });
  };
  const showLegend = () => {
    const total = heatmap.ids.length;
    summary.textContent = `${total.toLocaleString()} instances in ${heatmap.groups.length.toLocaleString()} groups (app · cluster)`;
    legend.replaceChildren(...heatmap.statuses.map((s, i) => h("span", { dataset: { status: s } },
      h("i", { style: { background: STATUS_COLORS[s] } }), `${s} ${heatmap.counts[i].toLocaleString()}`)));
  };

  let last = performance.now();
  const frame = (now) => {
    if (signal.aborted) return;
    if (loaded && !reloading) {
      const batch = queue.splice(0, MAX_PER_FRAME);
      let unknown = false;
      for (const data of batch) {
        const t = JSON.parse(data);
        unknown = !heatmap.set(t.instanceId, t.to) || unknown;
      }
      if (heatmap.flush()) showLegend();
      if (unknown) reload();
      if (stats.recording) stats.applied += batch.length;
    }
    if (stats.recording) stats.frames.push(now - last);
    last = now;
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);

  follow(signal, status, queue, reload);
  let resize = 0;
  addEventListener("resize", () => { clearTimeout(resize); resize = setTimeout(relayout, 150); }, { signal });

  heatmap.canvas.addEventListener("mousemove", (event) => {
    const i = heatmap.cellAt(event.offsetX, event.offsetY);
    tip.hidden = i < 0;
    if (i < 0) return;
    const d = heatmap.describe(i);
    tip.textContent = `${d.id} · ${d.status} · ${d.app}${d.cluster ? ` · ${d.cluster}` : ""}`;
    tip.style.left = `${event.offsetX + 12}px`;
    tip.style.top = `${event.offsetY + 12}px`;
  });
  heatmap.canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  heatmap.canvas.addEventListener("click", (event) => {
    const i = heatmap.cellAt(event.offsetX, event.offsetY);
    if (i < 0) return;
    const c = heatmap.centerOf(i);
    Object.assign(mark.style, { left: `${c.x - 4}px`, top: `${c.y - 4}px` });
    mark.hidden = false;
    showInstance(drill, heatmap.ids[i], signal).catch((e) => toast(e.message, true));
  });
  // For tests and benchmarks: where an instance's cell is, to click it like a person.
  stats.cellCenter = (id) => (heatmap.index.has(id) ? heatmap.centerOf(heatmap.index.get(id)) : null);
  stats.counts = () => Object.fromEntries((heatmap.statuses ?? []).map((s, i) => [s, heatmap.counts[i]]));
}

/** Keeps the transition stream open (reconnecting after a pause), queueing raw events. */
async function follow(signal, status, queue, onOpen) {
  while (!signal.aborted) {
    try {
      await stream("/v1/health/events", {
        signal,
        onOpen: () => {
          status.textContent = "live";
          status.classList.add("on");
          onOpen();
        },
        onEvent: (type, data) => {
          if (type === "transition") queue.push(data);
          // Transitions were missed: only a new snapshot is right again.
          else if (type === "lagged") { queue.length = 0; onOpen(); }
        },
      });
    } catch (e) {
      if (signal.aborted) return;
      toast(`Health stream: ${e.message}`, true);
    }
    status.textContent = "reconnecting";
    status.classList.remove("on");
    await new Promise((r) => setTimeout(r, 2000));
  }
}

async function showInstance(drill, id, signal) {
  const path = `/v1/instances/${encodeURIComponent(id)}/history?limit=50`;
  const [found, history] = await Promise.all([
    api("/v1/health:batchGet", { method: "POST", body: { ids: [id] }, signal }),
    api(path, { signal }),
  ]);
  const v = found.instances[0];
  if (!v) {
    drill.replaceChildren(h("p", {}, `${id} is no longer registered.`));
    return;
  }
  drill.dataset.instance = id;
  drill.replaceChildren(
    h("h2", {}, v.id, " ", badge(v.status)),
    h("dl", { class: "facts" },
      h("dt", {}, "Reason"), h("dd", { id: "drilldown-reason" }, v.reason),
      h("dt", {}, "App instance"), h("dd", {}, v.appInstance),
      h("dt", {}, "Component"), h("dd", {}, v.component),
      h("dt", {}, "Plugin"), h("dd", { class: "mono" }, v.plugin),
      h("dt", {}, "Since"), h("dd", {}, time(v.sinceMs)),
      h("dt", {}, "Last check"), h("dd", {}, time(v.checkedAtMs)),
      h("dt", {}, "Check interval"), h("dd", {}, `${(v.intervalMs / 1000).toFixed(1)} s${v.flapping ? " (flapping)" : ""}`)),
    h("h2", {}, "History"),
    history.transitions.length
      ? h("table", { id: "drilldown-history" },
        h("tr", {}, h("th", {}, "When"), h("th", {}, "Change"), h("th", {}, "Reason")),
        history.transitions.map((t) => h("tr", {},
          h("td", {}, time(t.atMs)), h("td", {}, badge(t.from), " → ", badge(t.to)), h("td", {}, t.reason))))
      : h("p", { class: "muted" }, "No transitions recorded yet."),
  );
}
