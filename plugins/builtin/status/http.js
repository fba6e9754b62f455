// status/http: judges an HTTP observation by its status code and optional JSON field rules.
// No answer (a timeout, a refused or reset connection, DNS, TLS, a garbled reply) is
// `unknown` with that reason: the target's health could not be seen, which is not the same
// as seeing it unhealthy.
//
// params (instance.params, all optional):
//   expect_status: [200, 204] or ["2xx", "3xx"]   (default: any 2xx or 3xx)
//   json: [{ "path": "status", "equals": "ok" }, { "path": "db.up", "in": [true] }, { "path": "version", "exists": true }]
//   slow_ms: a latency above which the check answers "degraded" although the answer is right

// The parameters of an instance that has none; shared, so a call makes no object for them.
const NO_PARAMS = Object.freeze({});

export function check(instance, observation, ctx) {
  const params = (instance && instance.params) || NO_PARAMS;
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
  const rules = params.json;
  if (rules && rules.length > 0) {
    if (http.json === null || http.json === undefined) {
      return verdict("degraded", "the body is not JSON but JSON field rules are set", details);
    }
    for (let i = 0; i < rules.length; i++) {
      const failure = ruleFailure(http.json, rules[i]);
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

// Written for the engine: index loops instead of `for…of` (which makes an iterator and a
// result object per step), and no arrays or objects made per call beyond the verdict.
function statusExpected(code, expected) {
  if (!expected || expected.length === 0) return code >= 200 && code < 400;
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i];
    if (typeof e === "number" && e === code) return true;
    if (typeof e === "string" && /^[1-5]xx$/.test(e) && Math.floor(code / 100) === Number(e[0])) return true;
  }
  return false;
}

// What `lookup` answers for a path that leads nowhere (never a value of the body).
const MISSING = {};

// The value at a dotted path, or MISSING; walked part by part without splitting the path.
function lookup(value, path) {
  const text = String(path);
  let current = value;
  let start = 0;
  for (;;) {
    const dot = text.indexOf(".", start);
    const part = dot < 0 ? (start === 0 ? text : text.slice(start)) : text.slice(start, dot);
    if (current === null || typeof current !== "object" || !(part in current)) return MISSING;
    current = current[part];
    if (dot < 0) return current;
    start = dot + 1;
  }
}

function ruleFailure(json, rule) {
  const at = lookup(json, rule.path);
  const found = at !== MISSING;
  if ("exists" in rule) {
    return found === Boolean(rule.exists) ? null : `field ${rule.path} ${rule.exists ? "is missing" : "is present"}`;
  }
  if (!found) return `field ${rule.path} is missing`;
  if ("equals" in rule && at !== rule.equals) {
    return `field ${rule.path} is ${JSON.stringify(at)}, expected ${JSON.stringify(rule.equals)}`;
  }
  if ("in" in rule && !rule.in.includes(at)) {
    return `field ${rule.path} is ${JSON.stringify(at)}, expected one of ${JSON.stringify(rule.in)}`;
  }
  return null;
}
