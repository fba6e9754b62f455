// Kubernetes health rules shared by the built-in status/k8s-* checks. They follow the
// health semantics of Argo CD (gitops-engine pkg/health): the same statuses and rules; an
// object pending deletion is progressing and an object that does not exist is missing.
//
// Observation: { "object": <the object as the API server returns it, or null>, "error": null | { kind, message } }.
// This file is prepended to each k8s-* script when the built-in package is assembled (plugin
// scripts cannot import modules), and each script ends with its own `check` export.

// The rules are written for the engine on the hot path (Deployments are the common case):
// index loops instead of `for…of`, which makes an iterator and a result object per step,
// and no objects or arrays made only to be read once.

function verdict(status, reason, details) {
  return { status, reason: reason || "", details: details || {} };
}

function condition(status, type) {
  const conditions = status && status.conditions;
  if (!conditions) return null;
  for (let i = 0; i < conditions.length; i++) {
    const c = conditions[i];
    if (c.type === type) return c;
  }
  return null;
}

function generation(object) {
  return (object.metadata && object.metadata.generation) || 0;
}

function apiGroup(object) {
  const apiVersion = object.apiVersion || "";
  const slash = apiVersion.indexOf("/");
  return slash < 0 ? "" : apiVersion.slice(0, slash);
}

function deploymentHealth(d) {
  const spec = d.spec || {};
  const status = d.status || {};
  const name = (d.metadata && d.metadata.name) || "";
  if (spec.paused) return verdict("suspended", "Deployment is paused");
  if (generation(d) > (status.observedGeneration || 0)) {
    return verdict("progressing", "Waiting for rollout to finish: observed deployment generation less than desired generation");
  }
  const progressing = condition(status, "Progressing");
  const updated = status.updatedReplicas || 0;
  const replicas = status.replicas || 0;
  const available = status.availableReplicas || 0;
  if (progressing && progressing.reason === "ProgressDeadlineExceeded") {
    return verdict("degraded", `Deployment "${name}" exceeded its progress deadline`);
  }
  if (typeof spec.replicas === "number" && updated < spec.replicas) {
    return verdict("progressing", `Waiting for rollout to finish: ${updated} out of ${spec.replicas} new replicas have been updated...`);
  }
  if (replicas > updated) {
    return verdict("progressing", `Waiting for rollout to finish: ${replicas - updated} old replicas are pending termination...`);
  }
  if (available < updated) {
    return verdict("progressing", `Waiting for rollout to finish: ${available} of ${updated} updated replicas are available...`);
  }
  return verdict("healthy", `${available} of ${updated} updated replicas are available`);
}

function statefulSetHealth(sts) {
  const spec = sts.spec || {};
  const status = sts.status || {};
  const observed = status.observedGeneration || 0;
  if (observed === 0 || generation(sts) > observed) {
    return verdict("progressing", "Waiting for statefulset spec update to be observed...");
  }
  const ready = status.readyReplicas || 0;
  const updated = status.updatedReplicas || 0;
  if (typeof spec.replicas === "number" && ready < spec.replicas) {
    return verdict("progressing", `Waiting for ${spec.replicas - ready} pods to be ready...`);
  }
  const strategy = spec.updateStrategy || {};
  if (strategy.type === "RollingUpdate" && strategy.rollingUpdate) {
    const partition = strategy.rollingUpdate.partition;
    if (typeof spec.replicas === "number" && typeof partition === "number" && updated < spec.replicas - partition) {
      return verdict(
        "progressing",
        `Waiting for partitioned roll out to finish: ${updated} out of ${spec.replicas - partition} new pods have been updated...`,
      );
    }
    return verdict("healthy", `partitioned roll out complete: ${updated} new pods have been updated...`);
  }
  if (strategy.type === "OnDelete") {
    return verdict("healthy", `statefulset has ${ready} ready pods (${updated} updated)`);
  }
  if (status.updateRevision !== status.currentRevision) {
    return verdict("progressing", `waiting for statefulset rolling update to complete ${updated} pods at revision ${status.updateRevision}...`);
  }
  return verdict("healthy", `statefulset rolling update complete ${status.currentReplicas || 0} pods at revision ${status.currentRevision}...`);
}

function daemonSetHealth(ds) {
  const status = ds.status || {};
  const name = (ds.metadata && ds.metadata.name) || "";
  if (generation(ds) > (status.observedGeneration || 0)) {
    return verdict("progressing", "Waiting for rollout to finish: observed daemon set generation less than desired generation");
  }
  const updated = status.updatedNumberScheduled || 0;
  const desired = status.desiredNumberScheduled || 0;
  const available = status.numberAvailable || 0;
  if (ds.spec && ds.spec.updateStrategy && ds.spec.updateStrategy.type === "OnDelete") {
    return verdict("healthy", `daemon set ${updated} out of ${desired} new pods have been updated`);
  }
  if (updated < desired) {
    return verdict("progressing", `Waiting for daemon set "${name}" rollout to finish: ${updated} out of ${desired} new pods have been updated...`);
  }
  if (available < desired) {
    return verdict("progressing", `Waiting for daemon set "${name}" rollout to finish: ${available} of ${desired} updated pods are available...`);
  }
  return verdict("healthy", `${available} of ${desired} pods are available`);
}

function replicaSetHealth(rs) {
  const spec = rs.spec || {};
  const status = rs.status || {};
  if (generation(rs) > (status.observedGeneration || 0)) {
    return verdict("progressing", "Waiting for rollout to finish: observed replica set generation less than desired generation");
  }
  const failure = condition(status, "ReplicaFailure");
  if (failure && failure.status === "True") return verdict("degraded", failure.message);
  const available = status.availableReplicas || 0;
  if (typeof spec.replicas === "number" && available < spec.replicas) {
    return verdict("progressing", `Waiting for rollout to finish: ${available} out of ${spec.replicas} new replicas are available...`);
  }
  return verdict("healthy", `${available} replicas are available`);
}

function podFailMessage(container) {
  const terminated = container.state && container.state.terminated;
  if (!terminated) return "";
  if (terminated.message) return terminated.message;
  if (terminated.reason === "OOMKilled") return terminated.reason;
  if (terminated.exitCode) return `container "${container.name}" failed with exit code ${terminated.exitCode}`;
  return "";
}

function podHealth(pod) {
  const spec = pod.spec || {};
  const status = pod.status || {};
  const restartPolicy = spec.restartPolicy || "Always";
  const containers = status.containerStatuses || [];
  const message = status.message || "";
  if (restartPolicy === "Always") {
    const messages = [];
    for (const c of containers) {
      const waiting = c.state && c.state.waiting;
      const reason = (waiting && waiting.reason) || "";
      if (waiting && (reason.startsWith("Err") || reason.endsWith("Error") || reason.endsWith("BackOff"))) {
        messages.push(waiting.message || `${c.name}: ${reason}`);
      }
    }
    if (messages.length > 0) return verdict("degraded", messages.join(", "));
  }
  switch (status.phase) {
    case "Pending":
      return verdict("progressing", message || "Pod is pending");
    case "Succeeded":
      return verdict("healthy", message || "Pod succeeded");
    case "Failed": {
      if (message) return verdict("degraded", message);
      for (const c of (status.initContainerStatuses || []).concat(containers)) {
        const failed = podFailMessage(c);
        if (failed) return verdict("degraded", failed);
      }
      return verdict("degraded", "Pod failed");
    }
    case "Running": {
      const annotations = (pod.metadata && pod.metadata.annotations) || {};
      const ignoreRestartPolicy = "argocd.argoproj.io/ignore-restart-policy" in annotations;
      if (!ignoreRestartPolicy && (restartPolicy === "OnFailure" || restartPolicy === "Never")) {
        return verdict("progressing", message || "Pod with a finite life is running");
      }
      const ready = condition(status, "Ready");
      if (ready && ready.status === "True") return verdict("healthy", message || "Pod is ready");
      for (const c of containers) {
        if (c.lastState && c.lastState.terminated) return verdict("degraded", message || `container "${c.name}" terminated and the pod is not ready`);
      }
      return verdict("progressing", message || "Pod is running but not ready");
    }
  }
  return verdict("unknown", message || `Pod phase ${JSON.stringify(status.phase)} is not known`);
}

function jobHealth(job) {
  let failed = false;
  let complete = false;
  let suspended = false;
  let message = "";
  let failMessage = "";
  for (const c of (job.status && job.status.conditions) || []) {
    if (c.type === "Failed") {
      failed = true;
      complete = true;
      failMessage = c.message || c.reason || "";
    } else if (c.type === "Complete") {
      complete = true;
      message = c.message || "";
    } else if (c.type === "Suspended") {
      complete = true;
      message = c.message || "";
      if (c.status === "True") suspended = true;
    }
  }
  if (!complete) return verdict("progressing", message || "Job is running");
  if (failed) return verdict("degraded", failMessage || "Job failed");
  if (suspended) return verdict("suspended", message || "Job is suspended");
  return verdict("healthy", message || "Job completed");
}

function pvcHealth(pvc) {
  const phase = pvc.status && pvc.status.phase;
  switch (phase) {
    case "Lost":
      return verdict("degraded", "PersistentVolumeClaim lost its volume");
    case "Pending":
      return verdict("progressing", "PersistentVolumeClaim is pending");
    case "Bound":
      return verdict("healthy", "PersistentVolumeClaim is bound");
  }
  return verdict("unknown", `PersistentVolumeClaim phase ${JSON.stringify(phase)} is not known`);
}

function loadBalancerIngress(object) {
  const lb = object.status && object.status.loadBalancer;
  return (lb && lb.ingress) || [];
}

function serviceHealth(svc) {
  if (svc.spec && svc.spec.type === "LoadBalancer") {
    if (loadBalancerIngress(svc).length > 0) return verdict("healthy", "the load balancer has an address");
    return verdict("progressing", "Waiting for the load balancer to get an address");
  }
  return verdict("healthy", `Service of type ${(svc.spec && svc.spec.type) || "ClusterIP"}`);
}

function ingressHealth(ing) {
  if (loadBalancerIngress(ing).length > 0) return verdict("healthy", "the ingress has an address");
  return verdict("progressing", "Waiting for the ingress to get an address");
}

const HPA_DEGRADED = {
  AbleToScale: ["FailedGetScale", "FailedUpdateScale"],
  ScalingActive: ["FailedGetResourceMetric", "InvalidSelector"],
};
const HPA_HEALTHY_TYPES = ["AbleToScale", "ScalingLimited"];
const HPA_WAITING = "Waiting to Autoscale";

function hpaHealth(hpa) {
  let conditions;
  if (hpa.apiVersion === "autoscaling/v1") {
    const annotations = (hpa.metadata && hpa.metadata.annotations) || {};
    const text = annotations["autoscaling.alpha.kubernetes.io/conditions"];
    if (text === undefined) return verdict("progressing", HPA_WAITING);
    try {
      conditions = JSON.parse(text);
    } catch (e) {
      return verdict("unknown", `failed to read the conditions annotation: ${e.message}`);
    }
  } else {
    conditions = (hpa.status && hpa.status.conditions) || [];
  }
  if (!Array.isArray(conditions) || conditions.length === 0) return verdict("progressing", HPA_WAITING);
  const healthy = [];
  for (const c of conditions) {
    const degradedReasons = HPA_DEGRADED[c.type] || [];
    if (degradedReasons.includes(c.reason)) return verdict("degraded", c.message);
    if (HPA_HEALTHY_TYPES.includes(c.type) && c.status === "True") healthy.push(c.message);
  }
  if (healthy.length === conditions.length) return verdict("healthy", healthy.join(","));
  return verdict("progressing", HPA_WAITING);
}

function apiServiceHealth(api) {
  for (const c of (api.status && api.status.conditions) || []) {
    if (c.type === "Available") {
      return verdict(c.status === "True" ? "healthy" : "progressing", `${c.reason}: ${c.message}`);
    }
  }
  return verdict("progressing", "Waiting to be processed");
}

// Which rule judges which kind, by API group (as Argo CD dispatches).
const RULES = {
  Deployment: { groups: ["apps", "extensions"], rule: deploymentHealth },
  StatefulSet: { groups: ["apps"], rule: statefulSetHealth },
  DaemonSet: { groups: ["apps", "extensions"], rule: daemonSetHealth },
  ReplicaSet: { groups: ["apps", "extensions"], rule: replicaSetHealth },
  Pod: { groups: [""], rule: podHealth },
  Job: { groups: ["batch"], rule: jobHealth },
  PersistentVolumeClaim: { groups: [""], rule: pvcHealth },
  Service: { groups: [""], rule: serviceHealth },
  Ingress: { groups: ["networking.k8s.io", "extensions"], rule: ingressHealth },
  HorizontalPodAutoscaler: { groups: ["autoscaling"], rule: hpaHealth },
  APIService: { groups: ["apiregistration.k8s.io"], rule: apiServiceHealth },
};

// Judges an observation; `expectedKind` restricts it to one kind (null: any kind with a rule).
function k8sHealth(observation, expectedKind) {
  if (!observation) return verdict("unknown", "no observation");
  if (observation.error) {
    const e = observation.error;
    return verdict("unknown", `the object could not be read: ${e.kind}: ${e.message}`, { error: e });
  }
  const object = observation.object;
  if (object === null || object === undefined) {
    return verdict("missing", expectedKind ? `the ${expectedKind} does not exist` : "the object does not exist");
  }
  const kind = object.kind;
  const details = { kind, name: object.metadata && object.metadata.name };
  if (expectedKind && kind !== expectedKind) {
    return verdict("unknown", `expected a ${expectedKind}, got ${JSON.stringify(kind)}`, details);
  }
  if (object.metadata && object.metadata.deletionTimestamp) return verdict("progressing", "Pending deletion", details);
  const entry = RULES[kind];
  const group = apiGroup(object);
  if (!entry || !entry.groups.includes(group)) {
    return verdict("unknown", `no health rule for ${kind} in API group "${group}"`, details);
  }
  const result = entry.rule(object);
  result.details = Object.assign(details, result.details);
  return result;
}
