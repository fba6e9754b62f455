// Shared by the built-in image-building component types (microservice, job): prepended to
// each of them when the built-in package is assembled (plugin scripts cannot import).

// The single build step of a component built from a Dockerfile.
function imagePlan(component) {
  const params = component.params || {};
  const context = component.path || ".";
  const dockerfile = params.dockerfile || "Dockerfile";
  return {
    steps: [
      {
        kind: "image",
        name: component.name,
        context,
        dockerfile: dockerfile.startsWith("/") || context === "." || context === ""
          ? dockerfile.replace(/^\/+/, "")
          : `${context.replace(/\/+$/, "")}/${dockerfile}`,
        build_args: params.build_args || {},
        target: params.target || null,
      },
    ],
  };
}

// The image the build produced, as a package artifact.
function imageArtifact(component, results) {
  const image = ((results && results.steps) || []).find((s) => s.kind === "image");
  if (!image || !image.digest) throw new Error(`component ${component.name}: the build produced no image digest`);
  return { type: "image", name: component.name, reference: image.reference, digest: image.digest };
}
