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
// Written for the engine, which interprets every operation and makes every call, object
// and property-key conversion at a cost: verdicts are object literals, values are read
// once into locals, loops are index loops (no iterator objects) inlined into `check` (no
// call per rule or expected status on the way to a healthy verdict), and a rule path is
// split once, into property keys the engine already holds (see `splitPath`). A field is
// found when reading it gives a value: JSON holds no `undefined`, so one read answers both
// "is it there" and "what is it".

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
  if (expected && expected.length > 0) {
    let listed = false;
    for (let i = 0; i < expected.length && !listed; i++) {
      const e = expected[i];
      listed = e === code || (typeof e === "string" && inClass(code, e));
    }
    if (!listed) return { status: "degraded", reason: "HTTP " + code + " is not an expected status", details };
  } else if (code < 200 || code >= 400) {
    return { status: "degraded", reason: "HTTP " + code + " is not an expected status", details };
  }
  const rules = params.json;
  if (rules && rules.length > 0) {
    const json = http.json;
    if (json === null || json === undefined) {
      return { status: "degraded", reason: "the body is not JSON but JSON field rules are set", details };
    }
    for (let i = 0; i < rules.length; i++) {
      const rule = rules[i];
      const path = rule.path;
      const parts = PATHS.get(path) || splitPath(path);
      let at = json;
      for (let j = 0; j < parts.length && at !== undefined; j++) {
        at = at !== null && typeof at === "object" ? at[parts[j]] : undefined;
      }
      const exists = rule.exists;
      const equals = rule.equals;
      const within = rule.in;
      const holds =
        exists !== undefined
          ? (at !== undefined) === Boolean(exists)
          : at !== undefined && (equals === undefined || at === equals) && (within === undefined || within.includes(at));
      if (!holds) return { status: "degraded", reason: ruleFailure(path, at, exists, equals, within), details };
    }
  }
  const slow = params.slow_ms;
  if (typeof slow === "number" && latency > slow) {
    return { status: "degraded", reason: "HTTP " + code + " took " + latency + " ms (limit " + slow + " ms)", details };
  }
  return { status: "healthy", reason: "HTTP " + code + " in " + latency + " ms", details };
}

// Whether `code` is in a status class such as "2xx".
function inClass(code, e) {
  return /^[1-5]xx$/.test(e) && Math.floor(code / 100) === Number(e[0]);
}

// Why a rule does not hold, given what its path found (`undefined`: nothing).
function ruleFailure(path, at, exists, equals, within) {
  if (exists !== undefined) return `field ${path} ${exists ? "is missing" : "is present"}`;
  if (at === undefined) return `field ${path} is missing`;
  if (equals !== undefined && at !== equals) {
    return `field ${path} is ${JSON.stringify(at)}, expected ${JSON.stringify(equals)}`;
  }
  return `field ${path} is ${JSON.stringify(at)}, expected one of ${JSON.stringify(within)}`;
}

// The parts of each rule path seen, split at the dots: a check's rules are the same from
// one call to the next. Bounded, so odd paths cannot grow it without end.
const PATHS = new Map();
const MAX_PATHS = 1024;

// Splits `path` into property keys, each the engine's own key string (what `Object.keys`
// answers): reading a property by such a string needs no hashing to find its key, where a
// string made by `split` is hashed and looked up on every read.
function splitPath(path) {
  const parts = String(path).split(".");
  for (let i = 0; i < parts.length; i++) parts[i] = Object.keys({ [parts[i]]: 0 })[0];
  if (PATHS.size >= MAX_PATHS) PATHS.clear();
  PATHS.set(path, parts);
  return parts;
}
