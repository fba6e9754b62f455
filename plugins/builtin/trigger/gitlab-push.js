// trigger/gitlab-push: a GitLab "Push Hook" or "Tag Push Hook". A branch push asks for a
// build, a version tag for a publish; deletions (after = 000…0) and other hooks are rejected.
//
// request: { headers: { "x-gitlab-event": "Push Hook", ... } (lowercase names), body: "<text>", json: <parsed body> | null }
// returns: { accept: true, request: { action, repository, ref, branch|tag, commit, version?, author, message } }
//        | { accept: false, reason }

const DELETED = /^0+$/;

export function parse(request, ctx) {
  const headers = (request && request.headers) || {};
  const event = headers["x-gitlab-event"];
  if (event !== "Push Hook" && event !== "Tag Push Hook") {
    return { accept: false, reason: `GitLab event "${event || "(none)"}" is not a push` };
  }
  const body = request.json;
  if (!body || (body.object_kind !== "push" && body.object_kind !== "tag_push")) {
    return { accept: false, reason: "the body is not a GitLab push event" };
  }
  if (typeof body.after !== "string" || DELETED.test(body.after)) return { accept: false, reason: `${body.ref} was deleted` };
  const commits = body.commits || [];
  const last = commits.find((c) => c.id === body.after) || commits[commits.length - 1] || {};
  const base = {
    repository: body.project && body.project.path_with_namespace,
    clone_url: body.project && body.project.git_http_url,
    ref: body.ref,
    commit: body.checkout_sha || body.after,
    author: body.user_username || body.user_name || null,
    message: last.message || null,
  };
  if (body.ref.startsWith("refs/heads/")) {
    return { accept: true, request: { action: "build", branch: body.ref.slice("refs/heads/".length), ...base } };
  }
  if (body.ref.startsWith("refs/tags/")) {
    const tag = body.ref.slice("refs/tags/".length);
    const version = tag.replace(/^v/, "");
    if (!ctx.semver.valid(version)) return { accept: false, reason: `tag ${tag} is not a version` };
    return { accept: true, request: { action: "publish", tag, version, ...base } };
  }
  return { accept: false, reason: `ref ${body.ref} is neither a branch nor a tag` };
}
