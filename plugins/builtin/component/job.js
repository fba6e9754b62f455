// component/job: a run-to-completion task (migration, batch job) built from a Dockerfile.
//
// component: { name, path, params: { dockerfile?, build_args?, target?, command?, schedule?, backoff_limit? } }
// plan    -> { steps: [{ kind: "image", ... }] }
// package -> { type: "job", artifacts: [{ type: "image", ... }], metadata: { command, schedule, backoff_limit } }
// (imagePlan and imageArtifact come from image-rules.js.)

export function plan(component, ctx) {
  return imagePlan(component);
}

// `package` is a reserved word in strict code, so the function is exported under that name.
export { packageComponent as package };

function packageComponent(component, results, ctx) {
  const params = component.params || {};
  if (params.command !== undefined && !Array.isArray(params.command)) {
    throw new TypeError(`component ${component.name}: params.command must be a list of strings`);
  }
  return {
    type: "job",
    artifacts: [imageArtifact(component, results)],
    metadata: {
      command: params.command || null,
      schedule: params.schedule || null,
      backoff_limit: typeof params.backoff_limit === "number" ? params.backoff_limit : 6,
    },
  };
}
