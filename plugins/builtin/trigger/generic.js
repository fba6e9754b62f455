// trigger/generic: a plain JSON payload from any CI system:
//   { "action": "build" | "publish", "repository": "...", "ref": "refs/heads/main" | "main" | "refs/tags/v1.2.3",
//     "commit": "...", "version": "1.2.3" (publish only),
//     "images": [{ "component": "web", "reference": "registry/repo:tag" }] (optional: built already) }
// returns: { accept: true, request: { action, repository, ref, branch?, tag?, commit, version?, images? } }
//        | { accept: false, reason }
//
// Revision 2: the branch is read from `ref` (revision 1 returned none, so branch filters
// ignored every delivery), and images the CI built already are passed on.

export function parse(request, ctx) {
  const body = request && request.json;
  if (!body || typeof body !== "object" || Array.isArray(body)) return reject("the body is not a JSON object");
  if (body.action !== "build" && body.action !== "publish") {
    return reject(`action must be "build" or "publish", got ${JSON.stringify(body.action)}`);
  }
  for (const field of ["repository", "commit"]) {
    if (typeof body[field] !== "string" || body[field] === "") return reject(`${field} is missing`);
  }
  if (body.ref !== undefined && body.ref !== null && typeof body.ref !== "string") return reject("ref must be a string");
  const out = { action: body.action, repository: body.repository, ref: body.ref || null, commit: body.commit };
  if (out.ref && out.ref.startsWith("refs/tags/")) {
    out.tag = out.ref.slice("refs/tags/".length);
  } else if (out.ref) {
    // A bare name is a branch, as CI systems report it (GITHUB_REF_NAME, CI_COMMIT_BRANCH).
    out.branch = out.ref.startsWith("refs/heads/") ? out.ref.slice("refs/heads/".length) : out.ref;
  }
  if (body.action === "publish") {
    if (typeof body.version !== "string" || !ctx.semver.valid(body.version)) {
      return reject(`publish needs a semantic version, got ${JSON.stringify(body.version)}`);
    }
    out.version = body.version;
  }
  if (body.images !== undefined && body.images !== null) {
    if (!Array.isArray(body.images)) return reject("images must be a list of {component, reference}");
    for (const image of body.images) {
      const ok = image && typeof image.component === "string" && image.component !== "" &&
        typeof image.reference === "string" && image.reference !== "";
      if (!ok) return reject(`image ${JSON.stringify(image)} needs a component and a reference`);
    }
    out.images = body.images.map((image) => ({ component: image.component, reference: image.reference }));
  }
  return { accept: true, request: out };
}

function reject(reason) {
  return { accept: false, reason };
}
