// Packages page: an app's packages filtered by tags (all must match), each with its tags,
// which can be added and removed here.

import { api } from "./api.js";
import { bytes, h, time, toast } from "./dom.js";

export async function render(main, { params }, signal) {
  const app = h("input", { id: "packages-app", name: "app", value: params.app ?? "", placeholder: "app name", list: "known-apps", required: true });
  const tags = h("input", { id: "packages-tags", name: "tags", value: params.tags ?? "", placeholder: "prod, stable" });
  const known = h("datalist", { id: "known-apps" });
  const form = h("form", { class: "toolbar" },
    h("label", {}, "App", app), h("label", {}, "Tags (all of)", tags),
    h("button", { class: "primary", id: "packages-show", type: "submit" }, "Show"), known);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams({ app: app.value.trim() });
    if (tags.value.trim()) query.set("tags", tags.value.replace(/\s+/g, ""));
    location.hash = `#/packages?${query}`;
  });
  const tagChips = h("div", { id: "packages-tag-list" });
  const rows = h("tbody");
  main.append(h("section", { class: "panel" }, h("h1", {}, "Packages"), form, tagChips,
    h("table", { id: "packages" },
      h("thead", {}, h("tr", {}, ["Version", "Tags", "Created", "By", "Size", "Digest"].map((t) => h("th", {}, t)))),
      rows)));
  suggestApps(known, signal);
  if (!params.app) {
    rows.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "Choose an app.")));
    return;
  }
  const filter = (params.tags ?? "").split(",").filter(Boolean);
  const base = `/v1/apps/${encodeURIComponent(params.app)}`;

  const { items: known_tags } = await api(`${base}/tags`, { signal });
  tagChips.replaceChildren(...known_tags.map((t) => {
    const on = filter.includes(t.tag);
    const next = on ? filter.filter((x) => x !== t.tag) : [...filter, t.tag];
    return h("span", {
      class: `tag filter${on ? " on" : ""}`, dataset: { tag: t.tag },
      title: `${t.versions} version(s)${t.exclusive ? ", exclusive" : ""}`,
      onclick: () => { tags.value = next.join(","); form.requestSubmit(); },
    }, t.tag);
  }));

  const query = new URLSearchParams({ limit: "50" });
  if (filter.length) query.set("tags", filter.join(","));
  const page = await api(`${base}/packages?${query}`, { signal });
  // The listing has no tags; each package's own answer has them.
  const details = await Promise.all(page.items.map((p) => api(`${base}/packages/${encodeURIComponent(p.version)}`, { signal })));
  rows.replaceChildren(...details.map((p) => packageRow(base, p)));
  if (!details.length) rows.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No package matches.")));
}

function packageRow(base, p) {
  const path = (tag) => `${base}/packages/${encodeURIComponent(p.version)}/tags/${encodeURIComponent(tag)}`;
  const change = async (method, tag) => {
    try {
      await api(path(tag), { method });
      toast(method === "PUT" ? `Tagged ${p.version} with ${tag}` : `Removed ${tag} from ${p.version}`);
      dispatchEvent(new HashChangeEvent("hashchange"));
    } catch (e) {
      toast(e.message, true);
    }
  };
  const input = h("input", { class: "add-tag", name: "tag", placeholder: "new tag", required: true });
  const add = h("form", { class: "add-tag-form" }, input, h("button", { class: "add-tag", type: "submit" }, "Add"));
  add.addEventListener("submit", (event) => { event.preventDefault(); change("PUT", input.value.trim()); });
  return h("tr", { dataset: { version: p.version } },
    h("td", { class: "mono" }, p.version),
    h("td", {}, p.tags.map((t) => h("span", { class: "tag", dataset: { tag: t } }, t,
      h("button", { class: "remove-tag", type: "button", title: `Remove ${t}`, onclick: () => change("DELETE", t) }, "×"))), add),
    h("td", {}, time(p.created_at_ms)), h("td", {}, p.creator), h("td", {}, bytes(p.size_bytes)),
    h("td", { class: "mono", title: p.digest }, p.digest.slice(0, 19)));
}

/** Apps seen in recent builds and in the fleet, offered as the app input's suggestions. */
async function suggestApps(list, signal) {
  try {
    const [{ builds }, { groups }] = await Promise.all([
      api("/v1/builds?limit=200", { signal }),
      api("/v1/health/summary?groupBy=app", { signal }),
    ]);
    const apps = new Set([...builds.map((b) => b.app), ...Object.keys(groups)]);
    list.replaceChildren(...[...apps].sort().map((a) => h("option", { value: a })));
  } catch {
    // Suggestions only: the input works without them.
  }
}
