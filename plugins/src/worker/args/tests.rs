//! Argument building: kept shapes, kept strings, reused objects.
use serde_json::{Value, json};

use super::super::sandbox::ScriptRuntime;
use crate::wire;

/// Reports what each call received, then vandalises its arguments: adds and deletes
/// keys, freezes, and swaps a prototype, all of which the engine must keep out of the
/// shapes the table holds.
const PROBE: &str = "export function check(i, o) {\n  const seen = { keys: Object.keys(o), inner: o.b ? Object.keys(o.b) : null, frozen: o.b ? Object.isFrozen(o.b) : null, extra: o.extra === undefined, proto: Object.getPrototypeOf(o) === Object.prototype, a: o.a };\n  o.extra = 1; delete o.a; if (o.b) { o.b.c2 = 3; Object.freeze(o.b); } Object.setPrototypeOf(o, { a: 'from a prototype' });\n  return { status: 'healthy', reason: '', details: seen };\n}\n";

fn runtime(name: &str) -> ScriptRuntime {
    runtime_of(name, PROBE)
}

fn runtime_of(name: &str, source: &str) -> ScriptRuntime {
    ScriptRuntime::for_test(name, source, 32 << 20, false)
}

fn seen(runtime: &ScriptRuntime, observation: Value) -> Value {
    let mut bytes = Vec::new();
    wire::encode(&observation, &mut bytes).unwrap();
    seen_wire(runtime, &bytes)
}

/// Calls `check({}, observation)` with the observation given in the wire form.
fn seen_wire(runtime: &ScriptRuntime, observation: &[u8]) -> Value {
    let mut bytes = vec![wire::ARRAY, wire::OBJECT, wire::END];
    bytes.extend_from_slice(observation);
    bytes.push(wire::END);
    let result = wire::decode(&runtime.call("check", &bytes).0.ok().unwrap()).unwrap();
    result["details"].clone()
}

#[test]
fn kept_shapes_carry_nothing_from_one_call_or_script_to_the_next() {
    let first = runtime("first");
    for _ in 0..3 {
        let got = seen(&first, json!({"a": 1, "b": {"c": 2}}));
        let expected = json!({"keys": ["a", "b"], "inner": ["c"], "frozen": false, "extra": true, "proto": true, "a": 1});
        assert_eq!(got, expected);
    }
    // `{"b": {"c": 2}, "a": 5}`, keys in that order (a `serde_json::Map` would sort them).
    let mut reordered = vec![wire::OBJECT];
    wire::write_str(&mut reordered, "b");
    reordered.push(wire::OBJECT);
    wire::write_str(&mut reordered, "c");
    wire::write_int(&mut reordered, 2);
    reordered.push(wire::END);
    wire::write_str(&mut reordered, "a");
    wire::write_int(&mut reordered, 5);
    reordered.push(wire::END);
    let reordered = seen_wire(&first, &reordered);
    assert_eq!((reordered["keys"].clone(), reordered["a"].clone()), (json!(["b", "a"]), json!(5)));
    let longer = seen(&first, json!({"a": 1, "b": {"c": 2, "d": 4}, "z": null}));
    assert_eq!(
        (longer["keys"].clone(), longer["inner"].clone()),
        (json!(["a", "b", "z"]), json!(["c", "d"]))
    );
    let shorter = seen(&first, json!({"a": 1}));
    assert_eq!((shorter["keys"].clone(), shorter["inner"].clone()), (json!(["a"]), Value::Null));
    // A second script's runtime has its own table: it sees only the keys it was sent.
    let second = runtime("second");
    let other = seen(&second, json!({"x": {"c": 1}}));
    assert_eq!(other["keys"], json!(["x"]));
    assert_eq!(seen(&first, json!({"x": 1}))["keys"], json!(["x"]));
    // Dropping the runtimes aborts the process if a holder or atom was not given back.
    drop(first);
    drop(second);
}

/// A check that returns the observation it was given as its details.
const ECHO: &str =
    "export function check(i, o) {\n  return { status: 'healthy', reason: '', details: o };\n}\n";

#[test]
fn strings_kept_between_calls_are_the_strings_sent() {
    let runtime = runtime_of("strings", ECHO);
    let long = "long ".repeat(100);
    for observation in [
        json!({"a": "x", "b": {"c": "same"}, "d": long}),
        json!({"a": "y", "b": {"c": "same"}, "d": long}),
        json!({"a": "x", "b": {"c": "caf\u{e9} \u{1f600}"}, "d": "short"}),
        json!({"a": 1, "b": {"c": ""}, "d": null}),
        json!({"a": "x", "b": {"c": "same"}, "d": long}),
    ] {
        assert_eq!(seen(&runtime, observation.clone()), observation);
    }
    drop(runtime);
}

#[test]
fn objects_past_the_table_limits_are_built_whole() {
    let runtime = runtime_of("echo", ECHO);
    let wide: serde_json::Map<String, Value> =
        (0..super::keys::MAX_SEQUENCE * 3).map(|i| (format!("k{i}"), json!(i))).collect();
    let many: Vec<Value> =
        (0..super::keys::MAX_STEPS + 100).map(|i| json!({ format!("m{i}"): [i, "x"] })).collect();
    let observation = json!({"wide": wide, "many": many, "__proto__": {"own": true}});
    for _ in 0..2 {
        assert_eq!(seen(&runtime, observation.clone()), observation);
    }
    drop(runtime);
}
