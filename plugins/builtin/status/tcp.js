// status/tcp: healthy when the TCP connection was accepted. A connection that times out or
// is refused or reset is `unknown` with that reason: the target could not be observed.
//
// params (instance.params, optional): slow_ms — a connect latency above which the check answers "degraded".

export function check(instance, observation, ctx) {
  const params = (instance && instance.params) || {};
  if (!observation) return { status: "unknown", reason: "no observation", details: {} };
  if (observation.error) {
    const e = observation.error;
    return { status: "unknown", reason: `${e.kind}: ${e.message}`, details: { error: e } };
  }
  const tcp = observation.tcp;
  if (!tcp) return { status: "unknown", reason: "the observation holds no tcp answer", details: {} };
  const details = { latency_ms: tcp.latency_ms };
  if (!tcp.connected) return { status: "unknown", reason: "the connection was not accepted", details };
  if (typeof params.slow_ms === "number" && tcp.latency_ms > params.slow_ms) {
    return { status: "degraded", reason: `connected in ${tcp.latency_ms} ms (limit ${params.slow_ms} ms)`, details };
  }
  return { status: "healthy", reason: `connected in ${tcp.latency_ms} ms`, details };
}
