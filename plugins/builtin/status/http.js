// status/http: judges an HTTP observation by its status code and optional JSON field rules.
// No answer (a timeout, a refused or reset connection, DNS, TLS, a garbled reply) is
// `unknown` with that reason: the target's health could not be seen, which is not the same
// as seeing it unhealthy.
//
// params (instance.params, all optional):
//   expect_status: [200, 204] or ["2xx", "3xx"]   (default: any 2xx or 3xx)
//   json: [{ "path": "status", "equals": "ok" }, { "path": "db.up", "in": [true] }, { "path": "version", "exists": true }]
//   slow_ms: a latency above which the check answers "degraded" although the answer is right

export function check(instance, observation, ctx) {
  const params = (instance && instance.params) || {};
  if (!observation) return verdict("unknown", "no observation", {});
  if (observation.error) {
    const e = observation.error;
    return verdict("unknown", `${e.kind}: ${e.message}`, { error: e });
  }
  const http = observation.http;
  if (!http) return verdict("unknown", "the observation holds no http answer", {});
  const details = { status: http.status, latency_ms: http.latency_ms };
  if (!statusExpected(http.status, params.expect_status)) {
    return verdict("degraded", `HTTP ${http.status} is not an expected status`, details);
  }
  const rules = params.json || [];
  if (rules.length > 0) {
    if (http.json === null || http.json === undefined) {
      return verdict("degraded", "the body is not JSON but JSON field rules are set", details);
    }
    for (const rule of rules) {
      const failure = ruleFailure(http.json, rule);
      if (failure) return verdict("degraded", failure, details);
    }
  }
  if (typeof params.slow_ms === "number" && http.latency_ms > params.slow_ms) {
    return verdict("degraded", `HTTP ${http.status} took ${http.latency_ms} ms (limit ${params.slow_ms} ms)`, details);
  }
  return verdict("healthy", `HTTP ${http.status} in ${http.latency_ms} ms`, details);
}

function verdict(status, reason, details) {
  return { status, reason, details };
}

function statusExpected(code, expected) {
  if (!expected || expected.length === 0) return code >= 200 && code < 400;
  for (const e of expected) {
    if (typeof e === "number" && e === code) return true;
    if (typeof e === "string" && /^[1-5]xx$/.test(e) && Math.floor(code / 100) === Number(e[0])) return true;
  }
  return false;
}

function lookup(value, path) {
  let current = value;
  for (const part of String(path).split(".")) {
    if (current === null || typeof current !== "object" || !(part in current)) return { found: false };
    current = current[part];
  }
  return { found: true, value: current };
}

function ruleFailure(json, rule) {
  const at = lookup(json, rule.path);
  if ("exists" in rule) {
    return at.found === Boolean(rule.exists) ? null : `field ${rule.path} ${rule.exists ? "is missing" : "is present"}`;
  }
  if (!at.found) return `field ${rule.path} is missing`;
  if ("equals" in rule && at.value !== rule.equals) {
    return `field ${rule.path} is ${JSON.stringify(at.value)}, expected ${JSON.stringify(rule.equals)}`;
  }
  if ("in" in rule && !rule.in.includes(at.value)) {
    return `field ${rule.path} is ${JSON.stringify(at.value)}, expected one of ${JSON.stringify(rule.in)}`;
  }
  return null;
}
