// Builds page: recent builds (refreshed every few seconds) and one build's components with
// their logs, followed live while a component builds.

import { api, stream } from "./api.js";
import { badge, every, h, time, toast } from "./dom.js";

const REFRESH_MS = 3000;
const UNFINISHED = new Set(["queued", "running"]);

export async function render(main, { path }, signal) {
  if (path[0]) return showBuild(main, path[0], signal);
  const rows = h("tbody");
  main.append(h("section", { class: "panel" },
    h("h1", {}, "Builds"),
    h("table", { id: "builds" },
      h("thead", {}, h("tr", {}, ["Build", "App", "Version", "State", "Requested by", "Started", "Finished"]
        .map((t) => h("th", {}, t)))),
      rows)));
  every(REFRESH_MS, signal, async () => {
    const { builds } = await api("/v1/builds?limit=100", { signal });
    rows.replaceChildren(...builds.map((b) => h("tr", {
      class: "clickable", dataset: { build: b.id }, onclick: () => { location.hash = `#/builds/${b.id}`; },
    },
    h("td", { class: "mono" }, b.id.slice(0, 13)), h("td", {}, b.app), h("td", {}, b.version),
    h("td", {}, badge(b.state)), h("td", {}, b.requested_by), h("td", {}, time(b.created_at_ms)),
    h("td", {}, time(b.finished_at_ms)))));
    if (!builds.length) rows.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No builds yet.")));
  });
}

async function showBuild(main, id, signal) {
  const head = h("div");
  const components = h("div");
  main.append(h("section", { class: "panel" }, h("p", {}, h("a", { href: "#/builds" }, "← Builds")), head, components));
  const logs = new Map();
  every(REFRESH_MS, signal, async () => {
    const b = await api(`/v1/builds/${encodeURIComponent(id)}`, { signal });
    head.replaceChildren(
      h("h1", {}, `${b.app} ${b.version} `, badge(b.state)),
      h("p", { class: "muted" }, `${b.id} · requested by ${b.requested_by} · ${time(b.created_at_ms)}`,
        b.package ? ` · package ${b.package.version} (${b.package.digest.slice(0, 19)})` : ""),
      b.reason ? h("p", {}, b.reason) : "");
    for (const c of b.components) {
      if (!logs.has(c.name)) {
        const log = h("pre", { class: "log", dataset: { component: c.name } });
        const line = h("div");
        logs.set(c.name, { line, log, following: false });
        components.append(h("div", { class: "panel" }, line, log));
      }
      const entry = logs.get(c.name);
      entry.line.replaceChildren(h("h2", {}, `${c.name} `, h("span", { class: "muted" }, c.type), " ", badge(c.state)),
        c.reason ? h("p", {}, c.reason) : "", c.image ? h("p", { class: "mono" }, c.image, c.digest ? `@${c.digest}` : "") : "");
      if (!entry.following) {
        entry.following = true;
        followLog(id, c.name, entry.log, signal).finally(() => {
          // A component still unfinished when its stream ended is followed again.
          entry.following = !UNFINISHED.has(c.state) && !UNFINISHED.has(b.state);
        });
      }
    }
  });
}

/** Streams a component's log into `pre` from the start; it ends when the component does. */
async function followLog(build, component, pre, signal) {
  pre.textContent = "";
  const path = `/v1/builds/${encodeURIComponent(build)}/logs?component=${encodeURIComponent(component)}&follow=true`;
  try {
    await stream(path, {
      signal,
      onEvent: (type, data) => {
        if (type !== "line") return;
        const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.append(`${data}\n`);
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      },
    });
  } catch (e) {
    if (!signal.aborted) toast(`Log of ${component}: ${e.message}`, true);
  }
}
