// The dashboard's only way to the server: JSON calls and event streams under /v1, with the
// API token kept in sessionStorage (this tab only). Streams use fetch() with a streamed body
// instead of EventSource, which cannot send the Authorization header.

const TOKEN_KEY = "slipway.token";
let asking = null;

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

function authorization() {
  return { authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) ?? ""}` };
}

/** Shows the token dialog once, however many calls were refused meanwhile. */
function askToken(message) {
  if (!asking) {
    asking = new Promise((resolve) => {
      const dialog = document.getElementById("token-dialog");
      const form = dialog.querySelector("form");
      dialog.querySelector(".message").textContent = message;
      form.onsubmit = (event) => {
        event.preventDefault();
        const value = form.elements.token.value.trim();
        if (!value) return;
        sessionStorage.setItem(TOKEN_KEY, value);
        form.reset();
        dialog.close();
        asking = null;
        resolve();
      };
      dialog.showModal();
    });
  }
  return asking;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function refusal(response) {
  const body = await response.json().catch(() => null);
  return new ApiError(response.status, body?.error?.code ?? "http", body?.error?.message ?? response.statusText);
}

/** Sends the request with the token; a 401 asks for a token and tries again. */
async function send(path, init) {
  for (;;) {
    const response = await fetch(path, { ...init, headers: { ...init.headers, ...authorization() } });
    if (response.status !== 401) return response;
    const error = await refusal(response);
    const hasToken = sessionStorage.getItem(TOKEN_KEY);
    await askToken(hasToken ? `The server refused the token: ${error.message}` : "This server needs an API token.");
  }
}

/** A JSON call: `api("/v1/builds")`, `api(path, {method: "PUT", body: {...}})`. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = body === undefined ? {} : { "content-type": "application/json" };
  const init = { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) };
  const response = await send(path, init);
  if (!response.ok) throw await refusal(response);
  return response.status === 204 ? null : response.json();
}

/**
 * Reads a server-sent event stream until `signal` aborts, calling `onEvent(type, data)` for
 * each event and `onOpen()` once connected. Returns when the server ends the stream
 * (a finished build log); throws on a refused request.
 */
export async function stream(path, { signal, onEvent, onOpen = () => {} }) {
  const response = await send(path, { headers: { accept: "text/event-stream" }, signal });
  if (!response.ok) throw await refusal(response);
  onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end), onEvent);
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (error) {
    if (!signal?.aborted) throw error;
  }
}

function dispatch(block, onEvent) {
  let type = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) type = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
  }
  // Comment-only blocks are keep-alives.
  if (data.length) onEvent(type, data.join("\n"));
}
