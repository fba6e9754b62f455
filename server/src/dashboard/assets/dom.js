// Small DOM helpers shared by the pages: element creation, notices, time and size formats.

/** `h("td", {class: "x", onclick}, child, "text")`: an element with attributes and children. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    // Through the CSSOM: the content security policy refuses inline style attributes.
    else if (key === "style") Object.assign(el.style, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function badge(state) {
  return h("span", { class: `badge ${state}` }, state);
}

let toastTimer = 0;
/** A short notice in the corner; errors stay a little longer. */
export function toast(text, isError = false) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.className = isError ? "error" : "";
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, isError ? 8000 : 3000);
}

export function time(ms) {
  if (!ms) return "—";
  return new Date(ms).toLocaleString(undefined, { hour12: false });
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(1)} ${units[unit]}`;
}

/** Runs `fn` every `ms` until `signal` aborts; the first run is immediate. */
export function every(ms, signal, fn) {
  const tick = async () => {
    if (signal.aborted) return;
    try { await fn(); } catch (e) { if (!signal.aborted) toast(e.message, true); }
    if (!signal.aborted) setTimeout(tick, ms);
  };
  tick();
}
