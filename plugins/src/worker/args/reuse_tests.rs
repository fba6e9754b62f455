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
    let result = runtime.call("check", &bytes).0.expect("the call succeeds");
    wire::decode(&result).unwrap()["details"].clone()
}

/// An instance telling the script what to keep or change, with an array in it.
fn instance(keep: &str, n: i32) -> Value {
    json!({"keep": keep, "list": [{"x": n}, n]})
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
  const list = instance.list;
  const seen = {
    now: JSON.stringify([instance, o]),
    plain: Object.isExtensible(o) && Object.isExtensible(h) && !Object.isFrozen(h.headers)
      && Object.getPrototypeOf(h) === Object.prototype && Object.keys(h).join() === "headers,json,status"
      && JSON.stringify(Object.getOwnPropertyDescriptor(h, "status")) === JSON.stringify({ value: h.status, writable: true, enumerable: true, configurable: true })
      && Array.isArray(list) && Object.isExtensible(list) && Object.getOwnPropertyNames(list).join() === "0,1,length"
      && Object.getPrototypeOf(list) === Array.prototype && typeof globalThis.trapped !== "number",
    root: kept.root ? JSON.stringify(kept.root) : null,
    nested: kept.nested ? JSON.stringify(kept.nested) : null,
    list: kept.list ? JSON.stringify(kept.list) : null,
    closure: kept.closure ? kept.closure() : null,
    weak: kept.weak ? kept.weak.has(h.headers) || kept.weak.has(o) : null,
  };
  switch (instance.keep) {
    case "root": kept.root = o; break;
    case "nested": kept.nested = h.headers; break;
    case "list": kept.list = list; break;
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
    case "push": list.push(9); break;
    case "shorten": list.length = 1; break;
    case "lengthen": list.length = 5; break;
    case "hole": delete list[0]; break;
    case "list-key": list.extra = 1; break;
    case "list-freeze": Object.freeze(list); break;
    case "list-item": list[0] = "changed"; list[1] = { y: 1 }; break;
    case "trap":
      // A setter an assignment to a missing index would meet (the engine's own JSON.stringify
      // meets it too, with its stack of objects: only a number is what the next call sends).
      Object.defineProperty(Array.prototype, "1", { set(v) { globalThis.trapped = v; }, configurable: true });
      list.length = 1;
      list.length = 2;
      break;
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
    call(&runtime, &instance("nothing", 1), &observation(1));
    let first = runtime.kept_objects();
    // Both arguments, the array and the object in it, and the three objects inside the
    // observation.
    assert_eq!(first.len(), 7);
    for n in 2..5 {
        let instance = instance("nothing", n);
        let seen = call(&runtime, &instance, &observation(n));
        assert_eq!(seen["seen"]["now"], json!([instance, observation(n)]).to_string());
        assert_eq!(seen["seen"]["plain"], json!(true));
        assert_eq!(runtime.kept_objects(), first, "call {n} refilled the same objects");
    }
    let probe = rquickjs::Runtime::new().unwrap();
    let context = rquickjs::Context::full(&probe).unwrap();
    context.with(|ctx| assert!(Layout::probe(ctx.as_raw().as_ptr()).is_some()));
}

fn instance_list(n: i32) -> String {
    instance("", n)["list"].to_string()
}

/// Whatever a script keeps of its arguments keeps the values it had; later calls see their
/// own values in fresh objects.
#[test]
fn what_a_script_keeps_keeps_its_values() {
    for keep in ["root", "nested", "list", "closure", "weak", "result"] {
        let runtime = keeper();
        call(&runtime, &instance("nothing", 1), &observation(1));
        let seen = call(&runtime, &instance(keep, 2), &observation(2));
        if keep == "result" {
            assert_eq!(seen["h"], observation(2)["http"], "{keep}");
        }
        for n in 3..6 {
            let instance = instance("nothing", n);
            let seen = &call(&runtime, &instance, &observation(n))["seen"];
            assert_eq!(seen["now"], json!([instance, observation(n)]).to_string(), "{keep}, call {n}");
            let expected = |name: &str, value: Value| if keep == name { value } else { Value::Null };
            let root = expected("root", json!(observation(2).to_string()));
            let nested = expected("nested", json!(observation(2)["http"]["headers"].to_string()));
            let list = expected("list", json!(instance_list(2)));
            let closure = expected("closure", json!("v2"));
            let weak = expected("weak", json!(false));
            assert_eq!(
                (&seen["root"], &seen["nested"], &seen["list"], &seen["closure"], &seen["weak"]),
                (&root, &nested, &list, &closure, &weak),
                "{keep}, call {n}"
            );
        }
    }
}

/// Whatever a script did to its arguments before letting them go, the next call's arguments
/// are plain objects with exactly the values sent.
#[test]
fn what_a_script_changed_does_not_reach_the_next_call() {
    let changes = [
        "assign",
        "add",
        "delete",
        "freeze",
        "seal",
        "prevent",
        "proto",
        "getter",
        "hide",
        "swap",
        "cycle",
        "push",
        "shorten",
        "lengthen",
        "hole",
        "list-key",
        "list-freeze",
        "list-item",
        "trap",
    ];
    for change in changes {
        let runtime = keeper();
        call(&runtime, &instance("nothing", 1), &observation(1));
        call(&runtime, &instance(change, 2), &observation(2));
        for n in 3..5 {
            let instance = instance("nothing", n);
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
