// trigger/generic: a plain JSON payload from any CI system:
//   { "action": "build" | "publish", "repository": "...", "ref": "...", "commit": "...", "version": "1.2.3" (publish only) }
// returns: { accept: true, request: { action, repository, ref, commit, version? } } | { accept: false, reason }

export function parse(request, ctx) {
  const body = request && request.json;
  if (!body || typeof body !== "object" || Array.isArray(body)) return { accept: false, reason: "the body is not a JSON object" };
  if (body.action !== "build" && body.action !== "publish") {
    return { accept: false, reason: `action must be "build" or "publish", got ${JSON.stringify(body.action)}` };
  }
  for (const field of ["repository", "commit"]) {
    if (typeof body[field] !== "string" || body[field] === "") return { accept: false, reason: `${field} is missing` };
  }
  const out = { action: body.action, repository: body.repository, ref: body.ref || null, commit: body.commit };
  if (body.action === "publish") {
    if (typeof body.version !== "string" || !ctx.semver.valid(body.version)) {
      return { accept: false, reason: `publish needs a semantic version, got ${JSON.stringify(body.version)}` };
    }
    out.version = body.version;
  }
  return { accept: true, request: out };
}
