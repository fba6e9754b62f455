// status/http: judges an HTTP observation by its status code and optional JSON field rules.
// No answer (a timeout, a refused or reset connection, DNS, TLS, a garbled reply) is
// `unknown` with that reason: the target's health could not be seen, which is not the same
// as seeing it unhealthy.
//
// params (instance.params, all optional):
//   expect_status: [200, 204] or ["2xx", "3xx"]   (default: any 2xx or 3xx)
//   json: [{ "path": "status", "equals": "ok" }, { "path": "db.up", "in": [true] }, { "path": "version", "exists": true }]
//   slow_ms: a latency above which the check answers "degraded" although the answer is right
//
// Written for the engine, which interprets every operation and makes every call and object
// at a cost: the verdicts are object literals (no helper call per check), values read once
// into locals, index loops instead of `for…of` (an iterator and a result object per step),
// a rule's keys read as properties (`rule.equals !== undefined`; rules are JSON, so a key
// is never present with `undefined`) rather than tested with `in`, and a rule's path split
// once per path, not once per check.

// The parameters of an instance that has none; shared, so a call makes no object for them.
const NO_PARAMS = Object.freeze({});

export function check(instance, observation, ctx) {
  const params = (instance && instance.params) || NO_PARAMS;
  if (!observation) return { status: "unknown", reason: "no observation", details: {} };
  const error = observation.error;
  if (error) return { status: "unknown", reason: `${error.kind}: ${error.message}`, details: { error } };
  const http = observation.http;
  if (!http) return { status: "unknown", reason: "the observation holds no http answer", details: {} };
  const code = http.status;
  const latency = http.latency_ms;
  const details = { status: code, latency_ms: latency };
  const expected = params.expect_status;
  if (expected && expected.length > 0 ? !listed(code, expected) : code < 200 || code >= 400) {
    return { status: "degraded", reason: `HTTP ${code} is not an expected status`, details };
  }
  const rules = params.json;
  if (rules && rules.length > 0) {
    const json = http.json;
    if (json === null || json === undefined) {
      return { status: "degraded", reason: "the body is not JSON but JSON field rules are set", details };
    }
    for (let i = 0; i < rules.length; i++) {
      const failure = ruleFailure(json, rules[i]);
      if (failure !== null) return { status: "degraded", reason: failure, details };
    }
  }
  const slow = params.slow_ms;
  if (typeof slow === "number" && latency > slow) {
    return { status: "degraded", reason: `HTTP ${code} took ${latency} ms (limit ${slow} ms)`, details };
  }
  return { status: "healthy", reason: `HTTP ${code} in ${latency} ms`, details };
}

// Whether `code` is one of the expected statuses (numbers, or classes such as "2xx").
function listed(code, expected) {
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i];
    if (e === code) return true;
    if (typeof e === "string" && /^[1-5]xx$/.test(e) && Math.floor(code / 100) === Number(e[0])) return true;
  }
  return false;
}

// The parts of each rule path seen, split at the dots: a check's rules are the same from
// one call to the next. Bounded, so odd paths cannot grow it without end.
const PATHS = new Map();
const MAX_PATHS = 1024;

function splitPath(path) {
  const parts = String(path).split(".");
  if (PATHS.size >= MAX_PATHS) PATHS.clear();
  PATHS.set(path, parts);
  return parts;
}

// Why `rule` fails on the body `json`, or null when it holds.
function ruleFailure(json, rule) {
  const path = rule.path;
  const parts = PATHS.get(path) || splitPath(path);
  let at = json;
  let found = true;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    if (at === null || typeof at !== "object" || !(part in at)) {
      found = false;
      break;
    }
    at = at[part];
  }
  const exists = rule.exists;
  if (exists !== undefined) {
    return found === Boolean(exists) ? null : `field ${path} ${exists ? "is missing" : "is present"}`;
  }
  if (!found) return `field ${path} is missing`;
  const equals = rule.equals;
  if (equals !== undefined && at !== equals) {
    return `field ${path} is ${JSON.stringify(at)}, expected ${JSON.stringify(equals)}`;
  }
  const within = rule.in;
  if (within !== undefined && !within.includes(at)) {
    return `field ${path} is ${JSON.stringify(at)}, expected one of ${JSON.stringify(within)}`;
  }
  return null;
}
