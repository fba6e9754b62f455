// component/microservice: a service built from a Dockerfile into one container image.
//
// component: { name, path, params: { dockerfile?, build_args?, target?, port? } }
// plan    -> { steps: [{ kind: "image", name, context, dockerfile, build_args, target }] }
// package -> { type: "microservice", artifacts: [{ type: "image", name, reference, digest }], metadata }

export function plan(component, ctx) {
  const params = component.params || {};
  const context = component.path || ".";
  return {
    steps: [
      {
        kind: "image",
        name: component.name,
        context,
        dockerfile: joinPath(context, params.dockerfile || "Dockerfile"),
        build_args: params.build_args || {},
        target: params.target || null,
      },
    ],
  };
}

// `package` is a reserved word in strict code, so the function is exported under that name.
export { packageComponent as package };

function packageComponent(component, results, ctx) {
  const image = imageResult(component, results);
  const params = component.params || {};
  return {
    type: "microservice",
    artifacts: [{ type: "image", name: component.name, reference: image.reference, digest: image.digest }],
    metadata: { port: params.port || null },
  };
}

function joinPath(dir, file) {
  if (file.startsWith("/")) return file.slice(1);
  return dir === "." || dir === "" ? file : `${dir.replace(/\/+$/, "")}/${file}`;
}

function imageResult(component, results) {
  const steps = (results && results.steps) || [];
  const image = steps.find((s) => s.kind === "image");
  if (!image || !image.digest) throw new Error(`component ${component.name}: the build produced no image digest`);
  return image;
}
