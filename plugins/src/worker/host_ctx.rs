//! The `ctx` object every call receives: the host functions a script may use. Each is a
//! small capability with no reach outside the sandbox: logging tagged with the triple (the
//! host emits the lines), JSON and YAML helpers, and semantic-version comparison.

use std::cell::RefCell;
use std::rc::Rc;

use rquickjs::function::Rest;
use rquickjs::{Ctx, Exception, Function, Object, Value};

use super::convert;
use crate::protocol::LogLine;
use crate::triple::PluginTriple;

/// At most this many log lines per call, each cut to this many bytes.
const MAX_LOG_LINES: usize = 50;
const MAX_LOG_BYTES: usize = 2048;

pub fn build<'js>(
    ctx: &Ctx<'js>,
    triple: &PluginTriple,
    logs: Rc<RefCell<Vec<LogLine>>>,
) -> rquickjs::Result<Object<'js>> {
    let object = Object::new(ctx.clone())?;
    object.set("triple", triple.to_string())?;
    for level in ["debug", "info", "warn", "error"] {
        let logs = logs.clone();
        let name = if level == "info" { "log" } else { level };
        let log = Function::new(ctx.clone(), move |parts: Rest<Value<'js>>| {
            record(&logs, level, &parts.0);
        })?;
        object.set(name, log)?;
    }
    let json: Object = ctx.globals().get("JSON")?;
    let helpers = Object::new(ctx.clone())?;
    helpers.set("parse", json.get::<_, Value>("parse")?)?;
    helpers.set("stringify", json.get::<_, Value>("stringify")?)?;
    object.set("json", helpers)?;
    object.set("yaml", yaml(ctx)?)?;
    object.set("semver", semver(ctx)?)?;
    Ok(object)
}

fn record(logs: &RefCell<Vec<LogLine>>, level: &str, parts: &[Value<'_>]) {
    let mut logs = logs.borrow_mut();
    if logs.len() >= MAX_LOG_LINES {
        return;
    }
    let mut message = parts
        .iter()
        .map(|part| match part.as_string().and_then(|s| s.to_string().ok()) {
            Some(text) => text,
            None => convert::to_json(part.clone()).unwrap_or_else(|_| format!("[{}]", part.type_name())),
        })
        .collect::<Vec<_>>()
        .join(" ");
    if message.len() > MAX_LOG_BYTES {
        let cut = (0..=MAX_LOG_BYTES).rev().find(|i| message.is_char_boundary(*i)).unwrap_or(0);
        message.truncate(cut);
    }
    logs.push(LogLine { level: level.to_owned(), message });
}

fn yaml<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<Object<'js>> {
    let yaml = Object::new(ctx.clone())?;
    let parse = Function::new(ctx.clone(), |ctx: Ctx<'js>, text: String| -> rquickjs::Result<Value<'js>> {
        let value: serde_json::Value = serde_norway::from_str(&text)
            .map_err(|e| Exception::throw_type(&ctx, &format!("ctx.yaml.parse: {e}")))?;
        convert::parse(&ctx, &value.to_string())
    })?;
    let stringify =
        Function::new(ctx.clone(), |ctx: Ctx<'js>, value: Value<'js>| -> rquickjs::Result<String> {
            let text = convert::to_json(value).map_err(|e| match e {
                convert::Unconvertible::Engine(e) => e,
                convert::Unconvertible::Shape(m) => {
                    Exception::throw_type(&ctx, &format!("ctx.yaml.stringify: {m}"))
                }
            })?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Exception::throw_type(&ctx, &format!("ctx.yaml.stringify: {e}")))?;
            serde_norway::to_string(&json)
                .map_err(|e| Exception::throw_type(&ctx, &format!("ctx.yaml.stringify: {e}")))
        })?;
    yaml.set("parse", parse)?;
    yaml.set("stringify", stringify)?;
    Ok(yaml)
}

fn semver<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<Object<'js>> {
    let helpers = Object::new(ctx.clone())?;
    let parse = |ctx: &Ctx<'js>, text: &str| {
        semver::Version::parse(text.trim_start_matches('v'))
            .map_err(|e| Exception::throw_type(ctx, &format!("`{text}` is not a semantic version: {e}")))
    };
    let compare =
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, a: String, b: String| -> rquickjs::Result<i32> {
            Ok(parse(&ctx, &a)?.cmp(&parse(&ctx, &b)?) as i32)
        })?;
    let satisfies = Function::new(
        ctx.clone(),
        move |ctx: Ctx<'js>, version: String, range: String| -> rquickjs::Result<bool> {
            let range = semver::VersionReq::parse(&range).map_err(|e| {
                Exception::throw_type(&ctx, &format!("`{range}` is not a version range: {e}"))
            })?;
            Ok(range.matches(&parse(&ctx, &version)?))
        },
    )?;
    let valid = Function::new(ctx.clone(), |text: String| {
        semver::Version::parse(text.trim_start_matches('v')).is_ok()
    })?;
    helpers.set("compare", compare)?;
    helpers.set("satisfies", satisfies)?;
    helpers.set("valid", valid)?;
    Ok(helpers)
}
