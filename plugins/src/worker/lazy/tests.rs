//! Lazy objects against objects `JSON.parse` builds from the same JSON text: each test runs
//! one kind of operation on both, for every Kubernetes fixture and a set of HTTP
//! observations, and the results must be the same.

use serde_json::{Value, json};

use super::super::sandbox::ScriptRuntime;
use crate::protocol::FailureKind;
use crate::wire;

/// Runs operation `o.op` on the lazy `o.value` and on `JSON.parse(o.text)` and returns both
/// results. Each operation returns plain data describing what it saw.
const PROBE: &str = r#"
const keysOf = (x) => { const out = []; for (const k in x) out.push(k); return out; };
const deep = (x, f) => { const out = []; const walk = (v, path, depth) => { if (depth > 40 || v === null || typeof v !== 'object') return; out.push([path, f(v)]); for (const k of Object.keys(v)) walk(v[k], path + '/' + k, depth + 1); }; walk(x, '', 0); return out; };
const attempt = (f) => { try { return ['ok', f()]; } catch (e) { return ['threw', e.constructor.name]; } };
const ops = {
  stringify: (x) => [JSON.stringify(x), JSON.stringify(x, null, 1)],
  reads: (x) => deep(x, (v) => Object.keys(v).map((k) => [k, typeof v[k], v[k] === v[k], Array.isArray(v[k])])),
  in: (x) => deep(x, (v) => Object.keys(v).map((k) => k in v).concat(['toString' in v, 'absent' in v, '0' in v, 'length' in v])),
  keys: (x) => deep(x, (v) => [Object.keys(v), Object.values(v).length, Object.getOwnPropertyNames(v)]),
  entries: (x) => deep(x, (v) => JSON.stringify(Object.entries(v))),
  forIn: (x) => deep(x, keysOf),
  hasOwn: (x) => deep(x, (v) => Object.keys(v).map((k) => v.hasOwnProperty(k)).concat([v.hasOwnProperty('toString'), Object.hasOwn(v, 'absent'), Object.prototype.propertyIsEnumerable.call(v, Object.keys(v)[0])])),
  descriptors: (x) => deep(x, (v) => JSON.stringify(Object.getOwnPropertyDescriptors(v))),
  prototype: (x) => deep(x, (v) => [Object.getPrototypeOf(v) === (Array.isArray(v) ? Array.prototype : Object.prototype), Object.prototype.toString.call(v), typeof v, Object.isExtensible(v), String(v).slice(0, 15)]),
  assign: (x) => { deep(x, (v) => { for (const k of Object.keys(v)) { if (typeof v[k] === 'string') v[k] = v[k] + '!'; else if (typeof v[k] === 'number') v[k] += 1; } return 0; }); return JSON.stringify(x); },
  add: (x) => { deep(x, (v) => { if (!Array.isArray(v)) { v.added = 1; v[7] = 'seven'; v['2'] = 'two'; v[Symbol.for('s')] = 3; Object.defineProperty(v, 'hidden', { value: 1 }); Object.defineProperty(v, 'got', { get() { return 42; }, enumerable: true }); } return 0; }); return [JSON.stringify(x), deep(x, (v) => [Object.keys(v), v.got, v.hidden, Reflect.ownKeys(v).length])]; },
  delete: (x) => { const first = Object.keys(x)[0]; const before = delete x[first]; x[first] = 'back'; delete x.absent; return [before, Object.keys(x), JSON.stringify(x), first in x]; },
  freeze: (x) => { Object.freeze(x); const set = attempt(() => { x.added = 1; }); const change = attempt(() => { x[Object.keys(x)[0]] = 0; }); const del = attempt(() => delete x[Object.keys(x)[0]]); const same = attempt(() => Object.defineProperty(x, Object.keys(x)[0], { value: x[Object.keys(x)[0]] })); return [Object.isFrozen(x), Object.isSealed(x), set, change, del, same, Reflect.defineProperty(x, 'n', { value: 1 }), JSON.stringify(x)]; },
  seal: (x) => { Object.seal(x); Object.preventExtensions(x); const k = Object.keys(x)[0]; x[k] = 'changed'; return [Object.isSealed(x), Object.isFrozen(x), attempt(() => { x.extra = 1; }), attempt(() => delete x[k]), JSON.stringify(x)]; },
  spread: (x) => { const copy = { ...x, extra: 1 }; const { [Object.keys(x)[0]]: first, ...rest } = x; return [JSON.stringify(copy), JSON.stringify(rest), JSON.stringify(Object.assign({}, x))]; },
  copy: (x) => { const copy = JSON.parse(JSON.stringify(x)); copy.changed = true; return [JSON.stringify(copy), JSON.stringify(x)]; },
};
export function check(i, o) {
  return { status: 'healthy', reason: '', details: { lazy: ops[o.op](o.value), eager: ops[o.op](JSON.parse(o.text)) } };
}
"#;

fn observations() -> Vec<Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/k8s");
    let mut all: Vec<Value> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let object: Value =
                serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
            json!({ "object": object, "error": null })
        })
        .collect();
    assert!(all.len() > 40, "the Kubernetes fixtures are found");
    all.extend([
        json!({"http": {"status": 200, "headers": {"content-type": "application/json", "x-b": "2"}, "body": "{\"status\":\"ok\"}", "json": {"status": "ok", "checks": [{"name": "db", "ok": true}, {"name": "cache", "ok": false}], "10": "ten", "9": null}, "latency_ms": 3.5}, "error": null}),
        json!({"http": {"status": 503, "headers": {}, "body": "down", "json": null, "latency_ms": 12}, "error": null}),
        json!({"http": null, "error": {"kind": "timeout", "message": "no answer in 2000 ms"}}),
        json!({"tcp": {"connected": true, "latency_ms": 1}, "error": null, "": {"": [[], [{}], {"é": "ü"}]}}),
    ]);
    all
}

/// Runs `op` on every observation, lazily and eagerly, and compares.
fn same_as_eager(op: &str) {
    let runtime = ScriptRuntime::for_test("probe", PROBE, 32 << 20, true);
    for observation in observations() {
        let text = serde_json::to_string(&observation).unwrap();
        let details = call(&runtime, &json!({"op": op, "text": text, "value": observation}));
        assert_eq!(details["lazy"], details["eager"], "{op} on {text}");
    }
}

fn call(runtime: &ScriptRuntime, observation: &Value) -> Value {
    let mut args = Vec::new();
    wire::encode(&json!([{}, observation]), &mut args).unwrap();
    let result = runtime.call("check", &args).0.unwrap_or_else(|f| panic!("{}", f.message));
    wire::decode(&result).unwrap()["details"].clone()
}

#[test]
fn property_reads() {
    same_as_eager("reads");
}

#[test]
fn the_in_operator() {
    same_as_eager("in");
}

#[test]
fn object_keys_and_own_property_names() {
    same_as_eager("keys");
}

#[test]
fn object_entries() {
    same_as_eager("entries");
}

#[test]
fn for_in() {
    same_as_eager("forIn");
}

#[test]
fn json_stringify() {
    same_as_eager("stringify");
}

#[test]
fn has_own_property() {
    same_as_eager("hasOwn");
}

#[test]
fn property_descriptors() {
    same_as_eager("descriptors");
}

#[test]
fn prototype_and_tag() {
    same_as_eager("prototype");
}

#[test]
fn assignment() {
    same_as_eager("assign");
}

#[test]
fn adding_keys() {
    same_as_eager("add");
}

#[test]
fn delete() {
    same_as_eager("delete");
}

#[test]
fn object_freeze() {
    same_as_eager("freeze");
}

#[test]
fn object_seal_and_prevent_extensions() {
    same_as_eager("seal");
}

#[test]
fn spreading() {
    same_as_eager("spread");
}

#[test]
fn copying_through_json() {
    same_as_eager("copy");
}

/// Keeps every observation it is given, untouched, and every fourth call returns all of
/// them, after adding a key to one; observations marked `ignore` are only read through.
const KEEPER: &str = r#"
const kept = [];
export function check(i, o) {
  if (o.ignore) return { status: 'healthy', reason: JSON.stringify(o).length > 0 ? '' : '-', details: null };
  kept.push(o);
  if (kept.length % 4 !== 0) return { status: 'healthy', reason: '', details: null };
  kept[1].object.late = 'added';
  return { status: 'healthy', reason: '', details: JSON.stringify(kept) };
}
"#;

#[test]
fn objects_kept_across_calls_and_batches_read_their_own_bytes() {
    let runtime = ScriptRuntime::for_test("keeper", KEEPER, 32 << 20, true);
    let fixtures = observations();
    let mut expected: Vec<Value> = Vec::new();
    for (n, observation) in fixtures.iter().take(12).enumerate() {
        if n % 3 == 0 {
            runtime.start_batch();
        }
        // Other calls in between, whose freed memory a dangling read would meet.
        for other in &fixtures[20..23] {
            assert_eq!(call(&runtime, &json!({"ignore": other})), Value::Null);
        }
        expected.push(observation.clone());
        let details = call(&runtime, observation);
        if !expected.len().is_multiple_of(4) {
            assert_eq!(details, Value::Null);
            continue;
        }
        expected[1]["object"]["late"] = json!("added");
        let details: Value = serde_json::from_str(details.as_str().unwrap()).unwrap();
        assert_eq!(details, Value::Array(expected.clone()), "call {n}");
    }
}

#[test]
fn the_heap_limit_counts_the_arguments_and_what_lazy_objects_hold() {
    let source = "export function check(i, o) { if (o.grow) { for (let n = 0; ; n++) o[n] = n; } return { status: 'healthy', reason: '', details: o.size }; }";
    let runtime = ScriptRuntime::for_test("heap", source, 4 << 20, true);
    let small = json!({"size": 1, "pad": "x".repeat(1000)});
    assert_eq!(call(&runtime, &small), json!(1));
    // Arguments larger than the heap limit are refused while they are copied in.
    let large = json!({"size": 2, "pad": "x".repeat(6 << 20)});
    let mut args = Vec::new();
    wire::encode(&json!([{}, large]), &mut args).unwrap();
    let failure = runtime.call("check", &args).0.unwrap_err();
    assert_eq!(failure.kind, FailureKind::MemoryLimit, "{}", failure.message);
    // Keys added to a lazy object without end reach the limit too.
    let runtime = ScriptRuntime::for_test("heap", source, 4 << 20, true);
    let mut args = Vec::new();
    wire::encode(&json!([{}, {"grow": true}]), &mut args).unwrap();
    let failure = runtime.call("check", &args).0.unwrap_err();
    assert_eq!(failure.kind, FailureKind::MemoryLimit, "{}", failure.message);
}
