// trigger/github-push: a GitHub `push` webhook. A branch push asks for a build, a tag push
// named like a version asks for a publish; pings, deletions and other events are rejected.
//
// request: { headers: { "x-github-event": "push", ... } (lowercase names), body: "<text>", json: <parsed body> | null }
// returns: { accept: true, request: { action, repository, ref, branch|tag, commit, version?, author, message } }
//        | { accept: false, reason }

export function parse(request, ctx) {
  const event = header(request, "x-github-event");
  if (event !== "push") return reject(`GitHub event "${event || "(none)"}" is not a push`);
  const body = request.json;
  if (!body || typeof body !== "object") return reject("the body is not a JSON push event");
  if (body.deleted) return reject(`${body.ref} was deleted`);
  if (typeof body.ref !== "string" || typeof body.after !== "string") return reject("the push event has no ref or commit");
  const repository = body.repository && (body.repository.full_name || body.repository.name);
  const head = body.head_commit || {};
  const base = {
    repository,
    clone_url: body.repository && body.repository.clone_url,
    ref: body.ref,
    commit: body.after,
    author: (body.pusher && body.pusher.name) || (head.author && head.author.name) || null,
    message: head.message || null,
  };
  return fromRef(base, ctx);
}

function header(request, name) {
  const headers = (request && request.headers) || {};
  return headers[name] || headers[name.toLowerCase()] || null;
}

function reject(reason) {
  return { accept: false, reason };
}

function fromRef(base, ctx) {
  if (base.ref.startsWith("refs/heads/")) {
    return { accept: true, request: { action: "build", branch: base.ref.slice("refs/heads/".length), ...base } };
  }
  if (base.ref.startsWith("refs/tags/")) {
    const tag = base.ref.slice("refs/tags/".length);
    const version = tag.replace(/^v/, "");
    if (!ctx.semver.valid(version)) return reject(`tag ${tag} is not a version`);
    return { accept: true, request: { action: "publish", tag, version, ...base } };
  }
  return reject(`ref ${base.ref} is neither a branch nor a tag`);
}
