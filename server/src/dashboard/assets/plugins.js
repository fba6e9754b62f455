// Plugins page: every plugin script with its installed revisions; a person switches which
// revision is active.

import { api } from "./api.js";
import { h, time, toast } from "./dom.js";

export async function render(main, _route, signal) {
  const body = h("div", { id: "plugins" });
  main.append(h("section", { class: "panel" }, h("h1", {}, "Plugins"), body));
  const show = async () => {
    const { packages } = await api("/v1/plugins", { signal });
    body.replaceChildren(...scripts(packages).map(([key, revisions]) => script(key, revisions, show)));
    if (!packages.length) body.append(h("p", { class: "muted" }, "No plugin packages installed."));
  };
  await show();
}

/** Revisions of each kind/name across every package, newest first, by `kind/name`. */
function scripts(packages) {
  const byScript = new Map();
  for (const p of packages) {
    for (const s of p.scripts) {
      // A triple reads `kind/name/revision`.
      const cut = s.triple.lastIndexOf("/");
      const [key, revision] = [s.triple.slice(0, cut), s.triple.slice(cut + 1)];
      if (!byScript.has(key)) byScript.set(key, []);
      byScript.get(key).push({ revision: Number(revision), active: s.active, file: s.file, package: p });
    }
  }
  for (const list of byScript.values()) list.sort((a, b) => b.revision - a.revision);
  return [...byScript.entries()].sort(([a], [b]) => a.localeCompare(b));
}

function script(key, revisions, refresh) {
  const [kind, name] = key.split("/");
  const activate = async (revision) => {
    try {
      await api(`/v1/plugins/${encodeURIComponent(kind)}/${encodeURIComponent(name)}/active`, { method: "PUT", body: { revision } });
      toast(`${key}: revision ${revision} is active`);
      await refresh();
    } catch (e) {
      toast(e.message, true);
    }
  };
  return h("div", { class: "panel", dataset: { script: key } },
    h("h2", { class: "mono" }, key),
    h("table", {},
      h("tr", {}, ["Revision", "Package", "File", "Installed", ""].map((t) => h("th", {}, t))),
      revisions.map((r) => h("tr", { dataset: { triple: `${key}/${r.revision}` }, class: r.active ? "selected" : "" },
        h("td", {}, r.revision),
        h("td", {}, `${r.package.name} ${r.package.version}`),
        h("td", { class: "mono" }, r.file),
        h("td", {}, time(r.package.installed_at_ms)),
        h("td", {}, r.active
          ? h("strong", { class: "active-revision" }, "active")
          : h("button", { class: "activate", type: "button", onclick: () => activate(r.revision) }, "Activate"))))));
}
