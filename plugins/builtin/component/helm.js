// component/helm: a chart directory packaged as a Helm chart.
//
// component: { name, path, params: { values? } }
// plan    -> { steps: [{ kind: "chart", name, path }] }
// package -> { type: "helm", artifacts: [{ type: "chart", name, version, reference, digest }], metadata: { values } }

export function plan(component, ctx) {
  return { steps: [{ kind: "chart", name: component.name, path: component.path || "." }] };
}

// `package` is a reserved word in strict code, so the function is exported under that name.
export { packageComponent as package };

function packageComponent(component, results, ctx) {
  const chart = ((results && results.steps) || []).find((s) => s.kind === "chart");
  if (!chart || !chart.digest) throw new Error(`component ${component.name}: the build produced no chart`);
  if (chart.version && !ctx.semver.valid(chart.version)) {
    throw new TypeError(`component ${component.name}: chart version ${chart.version} is not a semantic version`);
  }
  return {
    type: "helm",
    artifacts: [{ type: "chart", name: chart.name || component.name, version: chart.version || null, reference: chart.reference, digest: chart.digest }],
    metadata: { values: (component.params && component.params.values) || {} },
  };
}
