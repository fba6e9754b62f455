// component/microservice: a service built from a Dockerfile into one container image.
//
// component: { name, path, params: { dockerfile?, build_args?, target?, port? } }
// plan    -> { steps: [{ kind: "image", name, context, dockerfile, build_args, target }] }
// package -> { type: "microservice", artifacts: [{ type: "image", name, reference, digest }], metadata }
// (imagePlan and imageArtifact come from image-rules.js.)

export function plan(component, ctx) {
  return imagePlan(component);
}

// `package` is a reserved word in strict code, so the function is exported under that name.
export { packageComponent as package };

function packageComponent(component, results, ctx) {
  const params = component.params || {};
  return {
    type: "microservice",
    artifacts: [imageArtifact(component, results)],
    metadata: { port: params.port || null },
  };
}
