// The dashboard shell: one page at a time, chosen by the URL fragment
// (`#/health`, `#/builds/<id>`, `#/packages?app=shop&tags=prod`, `#/plugins`). Leaving a
// page aborts its signal, which stops its streams and timers.

import { forgetToken } from "./api.js";
import * as health from "./health.js";
import * as builds from "./builds.js";
import * as packages from "./packages.js";
import * as plugins from "./plugins.js";
import { toast } from "./dom.js";

const PAGES = { health, builds, packages, plugins };
let current = null;

function route() {
  const [path, query = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const [name, ...rest] = path.split("/");
  const page = PAGES[name] ? name : "health";
  current?.abort();
  current = new AbortController();
  for (const link of document.querySelectorAll("header nav a")) {
    link.classList.toggle("current", link.dataset.page === page);
  }
  const main = document.getElementById("page");
  main.replaceChildren();
  const params = Object.fromEntries(new URLSearchParams(query));
  PAGES[page].render(main, { path: rest.map(decodeURIComponent), params }, current.signal)
    .catch((e) => toast(e.message, true));
}

document.getElementById("forget-token").addEventListener("click", () => {
  forgetToken();
  route();
});
addEventListener("hashchange", route);
route();
