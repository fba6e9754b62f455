//! Refilled arguments: a call's objects are refilled only when no script can reach them,
//! and whatever a script kept or changed never shows up in a later call, nor later calls'
//! values in what it kept.
use serde_json::{Value, json};

use super::super::sandbox::ScriptRuntime;
use super::Layout;
use crate::wire;

/// Calls `check(instance, observation)` and answers the verdict's `details`.
fn call(runtime: &ScriptRuntime, instance: &Value, observation: &Value) -> Value {
    let mut bytes = Vec::new();
    wire::encode(&json!([instance, observation]), &mut bytes).unwrap();
    let result = runtime.call("check", &bytes).0.ok().expect("the call succeeds");
    wire::decode(&result).unwrap()["details"].clone()
}

fn observation(n: i32) -> Value {
    json!({"http": {"status": n, "headers": {"a": format!("v{n}"), "b": "same"}, "json": {"n": n}}, "error": null})
}

/// Reports what the call sees (as JSON text, with what `JSON.parse` of the same text would
/// show), and what the values kept by an earlier call (by `instance.keep`) show now; then
/// keeps the arguments as told.
const KEEPER: &str = r#"
const kept = {};
export function check(instance, o) {
  const h = o.http;
  const seen = {
    now: JSON.stringify([instance, o]),
    plain: Object.isExtensible(o) && Object.isExtensible(h) && !Object.isFrozen(h.headers)
      && Object.getPrototypeOf(h) === Object.prototype && Object.keys(h).join() === "headers,json,status"
      && JSON.stringify(Object.getOwnPropertyDescriptor(h, "status")) === JSON.stringify({ value: h.status, writable: true, enumerable: true, configurable: true }),
    root: kept.root ? JSON.stringify(kept.root) : null,
    nested: kept.nested ? JSON.stringify(kept.nested) : null,
    closure: kept.closure ? kept.closure() : null,
    weak: kept.weak ? kept.weak.has(h.headers) || kept.weak.has(o) : null,
  };
  switch (instance.keep) {
    case "root": kept.root = o; break;
    case "nested": kept.nested = h.headers; break;
    case "closure": { const headers = h.headers; kept.closure = () => headers.a; break; }
    case "weak": kept.weak = new WeakSet([h.headers, o]); break;
    case "assign": h.status = -1; h.headers.a = "changed"; break;
    case "add": h.extra = 1; break;
    case "delete": delete h.json; break;
    case "freeze": Object.freeze(h.headers); break;
    case "seal": Object.seal(h); break;
    case "prevent": Object.preventExtensions(o); break;
    case "proto": Object.setPrototypeOf(h, { status: "from a prototype" }); break;
    case "getter": Object.defineProperty(h, "status", { get() { return 7; } }); break;
    case "hide": Object.defineProperty(h, "status", { enumerable: false }); break;
    case "swap": o.http = { headers: { a: "swapped", b: "same" }, json: { n: 0 }, status: 0 }; break;
    case "cycle": h.json = o; break;
  }
  return { status: "healthy", reason: "", details: instance.keep === "result" ? { seen, h } : { seen } };
}
"#;

fn keeper() -> ScriptRuntime {
    ScriptRuntime::for_test("keeper", KEEPER, 32 << 20, false)
}

#[test]
fn the_engine_layout_is_known_so_arguments_are_refilled() {
    let runtime = keeper();
    let instance = json!({"keep": "nothing"});
    call(&runtime, &instance, &observation(1));
    let first = runtime.kept_objects();
    // Both arguments and the three objects inside the observation.
    assert_eq!(first.len(), 5);
    for n in 2..5 {
        let seen = call(&runtime, &instance, &observation(n));
        assert_eq!(seen["seen"]["now"], json!([instance, observation(n)]).to_string());
        assert_eq!(seen["seen"]["plain"], json!(true));
        assert_eq!(runtime.kept_objects(), first, "call {n} refilled the same objects");
    }
    let probe = rquickjs::Runtime::new().unwrap();
    let context = rquickjs::Context::full(&probe).unwrap();
    context.with(|ctx| assert!(Layout::probe(ctx.as_raw().as_ptr()).is_some()));
}

/// Whatever a script keeps of its arguments keeps the values it had; later calls see their
/// own values in fresh objects.
#[test]
fn what_a_script_keeps_keeps_its_values() {
    for keep in ["root", "nested", "closure", "weak", "result"] {
        let runtime = keeper();
        call(&runtime, &json!({"keep": "nothing"}), &observation(1));
        let keeping = json!({"keep": keep});
        let seen = call(&runtime, &keeping, &observation(2));
        if keep == "result" {
            assert_eq!(seen["h"], observation(2)["http"], "{keep}");
        }
        let instance = json!({"keep": "nothing"});
        for n in 3..6 {
            let seen = &call(&runtime, &instance, &observation(n))["seen"];
            assert_eq!(seen["now"], json!([instance, observation(n)]).to_string(), "{keep}, call {n}");
            let (root, nested, closure, weak) = match keep {
                "root" => (json!(observation(2).to_string()), Value::Null, Value::Null, Value::Null),
                "nested" => (
                    Value::Null,
                    json!(observation(2)["http"]["headers"].to_string()),
                    Value::Null,
                    Value::Null,
                ),
                "closure" => (Value::Null, Value::Null, json!("v2"), Value::Null),
                "weak" => (Value::Null, Value::Null, Value::Null, json!(false)),
                _ => (Value::Null, Value::Null, Value::Null, Value::Null),
            };
            assert_eq!(
                (&seen["root"], &seen["nested"], &seen["closure"], &seen["weak"]),
                (&root, &nested, &closure, &weak),
                "{keep}, call {n}"
            );
        }
    }
}

/// Whatever a script did to its arguments before letting them go, the next call's arguments
/// are plain objects with exactly the values sent.
#[test]
fn what_a_script_changed_does_not_reach_the_next_call() {
    let changes =
        ["assign", "add", "delete", "freeze", "seal", "prevent", "proto", "getter", "hide", "swap", "cycle"];
    for change in changes {
        let runtime = keeper();
        call(&runtime, &json!({"keep": "nothing"}), &observation(1));
        call(&runtime, &json!({"keep": change}), &observation(2));
        let instance = json!({"keep": "nothing"});
        for n in 3..5 {
            let seen = &call(&runtime, &instance, &observation(n))["seen"];
            assert_eq!(seen["now"], json!([instance, observation(n)]).to_string(), "{change}, call {n}");
            assert_eq!(seen["plain"], json!(true), "{change}, call {n}");
        }
    }
}

/// An argument with other keys, keys in another order, or other kinds of values than the
/// last call's is built afresh where it differs, and reads as sent.
#[test]
fn arguments_of_another_form_read_as_sent() {
    const ECHO: &str = "export function check(i, o) {\n  return { status: 'healthy', reason: '', details: JSON.stringify([i, o]) };\n}\n";
    let runtime = ScriptRuntime::for_test("echo", ECHO, 32 << 20, false);
    let mut reordered = vec![wire::OBJECT];
    wire::write_str(&mut reordered, "b");
    wire::write_int(&mut reordered, 2);
    wire::write_str(&mut reordered, "a");
    wire::write_int(&mut reordered, 1);
    reordered.push(wire::END);
    let forms = [
        json!({"a": 1, "b": {"c": 2}}),
        json!({"a": 1, "b": {"c": 3, "d": 4}}),
        json!({"a": 1, "b": {"c": 5}}),
        json!({"a": 1}),
        json!({"a": {"c": 6}, "b": "text"}),
        json!({"a": 1, "b": {"c": 7}, "z": [ {"c": 8} ]}),
        json!({"a": 1, "b": {"c": 9}, "z": [ {"c": 10} ]}),
        json!([1, 2]),
        json!({"a": 1, "b": {"c": 11}}),
    ];
    for (n, observation) in forms.iter().enumerate() {
        let instance = json!({"n": n});
        let mut bytes = vec![wire::ARRAY];
        wire::encode(&instance, &mut bytes).unwrap();
        if n == 3 {
            bytes.extend_from_slice(&reordered);
        } else {
            wire::encode(observation, &mut bytes).unwrap();
        }
        bytes.push(wire::END);
        let result = wire::decode(&runtime.call("check", &bytes).0.ok().unwrap()).unwrap();
        let expected = if n == 3 {
            r#"[{"n":3},{"b":2,"a":1}]"#.to_owned()
        } else {
            json!([instance, observation]).to_string()
        };
        assert_eq!(result["details"], json!(expected), "form {n}");
    }
    // Dropping the runtime aborts the process if a kept reference was not given back.
    drop(runtime);
}
