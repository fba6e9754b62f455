// component/job: a run-to-completion task (migration, batch job) built from a Dockerfile.
//
// component: { name, path, params: { dockerfile?, build_args?, target?, command?, schedule?, backoff_limit? } }
// plan    -> { steps: [{ kind: "image", ... }] }
// package -> { type: "job", artifacts: [{ type: "image", ... }], metadata: { command, schedule, backoff_limit } }

export function plan(component, ctx) {
  const params = component.params || {};
  const context = component.path || ".";
  const dockerfile = params.dockerfile || "Dockerfile";
  return {
    steps: [
      {
        kind: "image",
        name: component.name,
        context,
        dockerfile: context === "." ? dockerfile : `${context.replace(/\/+$/, "")}/${dockerfile}`,
        build_args: params.build_args || {},
        target: params.target || null,
      },
    ],
  };
}

// `package` is a reserved word in strict code, so the function is exported under that name.
export { packageComponent as package };

function packageComponent(component, results, ctx) {
  const params = component.params || {};
  const image = ((results && results.steps) || []).find((s) => s.kind === "image");
  if (!image || !image.digest) throw new Error(`component ${component.name}: the build produced no image digest`);
  if (params.command !== undefined && !Array.isArray(params.command)) {
    throw new TypeError(`component ${component.name}: params.command must be a list of strings`);
  }
  return {
    type: "job",
    artifacts: [{ type: "image", name: component.name, reference: image.reference, digest: image.digest }],
    metadata: {
      command: params.command || null,
      schedule: params.schedule || null,
      backoff_limit: typeof params.backoff_limit === "number" ? params.backoff_limit : 6,
    },
  };
}
