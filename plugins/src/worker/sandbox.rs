//! One script's sandbox: its own QuickJS runtime (so no script can reach another's state)
//! with a heap limit, a stack limit and an interrupt handler that stops a call at its
//! deadline. The engine has no file system, network, module loader or clock-based
//! randomness: `Math.random`, `Date.now` and `new Date()` without arguments throw.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rquickjs::context::intrinsic::{
    Date, Eval, Json as JsonIntrinsic, MapSet, Promise, Proxy, RegExp, RegExpCompiler, TypedArrays,
};
use rquickjs::function::Args;
use rquickjs::module::{Evaluated, WriteOptions};
use rquickjs::{Context, Ctx, Function, Module, Object, Persistent, Runtime, Value};

use super::args::{self, FromWire, Kept, KeyTable, Layout};
use super::convert::{self, Unconvertible, WireBytes};
use super::host_ctx;
use super::key_names::KeyNames;
use super::lazy;
use crate::error::ScriptLocation;
use crate::protocol::{FailureKind, LogLine, ScriptFailure, WorkerLimits};
use crate::triple::{PluginTriple, ScriptKind};

type Intrinsics = (Date, Eval, RegExpCompiler, RegExp, JsonIntrinsic, Proxy, MapSet, TypedArrays, Promise);

/// Runs before any script: takes away what would make results depend on time or chance.
const PRELUDE: &str = r#"
"use strict";
(() => {
  const noClock = function () { throw new TypeError("plugin scripts have no clock: pass times in as arguments"); };
  Math.random = function random() { throw new TypeError("plugin scripts have no randomness: results must be deterministic"); };
  const RealDate = Date;
  RealDate.now = noClock;
  const SandboxDate = new Proxy(RealDate, {
    construct(target, args, newTarget) {
      if (args.length === 0) noClock();
      return Reflect.construct(target, args, newTarget === SandboxDate ? target : newTarget);
    },
    apply() { noClock(); },
  });
  RealDate.prototype.constructor = SandboxDate;
  globalThis.Date = SandboxDate;
})();
"#;

/// Arguments this large (in the wire form) or larger reach the script as lazy objects
/// ([`lazy`]), smaller ones as objects built whole ([`args`]). A lazy object saves building
/// the values a script does not read but costs more per value read; small observations are
/// read almost whole (measured with callgrind: the ~200-byte HTTP observation costs the
/// worker 42,600 instructions per `status/http` check built whole and 48,700 lazily; the
/// ~2.5 KB Deployment 130,500 built whole and 77,400 lazily for `status/k8s-deployment`).
const LAZY_FROM_BYTES: usize = 1024;

/// Largest result, in the wire form, kept alive until the next call (see `last_result`).
const KEPT_RESULT_BYTES: usize = 4096;

/// The deadline of the call in progress, read by the interrupt handler.
#[derive(Default)]
struct Clock {
    deadline: Cell<Option<Instant>>,
    fired: Cell<bool>,
}

/// A loaded module in its own runtime. Field order matters: persistent values are dropped
/// before the context, and the context before the runtime (the kept arguments, key texts
/// and key table are given back before any of them, in `drop`).
pub struct ScriptRuntime {
    keys: RefCell<KeyTable>,
    /// The last call's argument objects, for the next call to refill.
    kept: RefCell<Kept>,
    /// The texts of the keys results used.
    names: RefCell<KeyNames>,
    /// The class of lazy argument objects in this runtime, and scratch space for reading
    /// a call's arguments.
    lazy_class: rquickjs::qjs::JSClassID,
    lazy_from_bytes: usize,
    ends: RefCell<Vec<lazy::End>>,
    /// Owned here (made in `assemble`, released and freed in `drop`); lazy objects' hooks
    /// reach it through their call's piece.
    atoms: *mut lazy::Atoms,
    /// The function the current batch calls, looked up by its first call. Only for one
    /// batch: an export is a live binding the module may reassign, and the next batch
    /// must see that.
    entry: RefCell<Option<(Box<str>, Persistent<Function<'static>>)>>,
    /// The last call's result, kept until the next call has returned its own: the shapes
    /// (hidden classes) of its objects then stay alive for the next result, which usually
    /// has the same keys, instead of being freed and made again on every call. No script
    /// value refers to it. Only a small result is kept, so the heap limit stays, in effect,
    /// the limit of each call.
    last_result: RefCell<Option<Persistent<Value<'static>>>>,
    namespace: Persistent<Object<'static>>,
    host_ctx: Persistent<Object<'static>>,
    context: Context,
    runtime: Runtime,
    clock: Rc<Clock>,
    logs: Rc<RefCell<Vec<LogLine>>>,
    file: String,
    kind: ScriptKind,
    timeout: Duration,
    memory_limit: usize,
}

/// What `compile` learns about a module.
pub struct Compiled {
    pub bytecode: Vec<u8>,
    pub exports: Vec<String>,
}

impl ScriptRuntime {
    /// Compiles a module, evaluates it in a throw-away sandbox (top-level code runs under
    /// the same limits as a call) and lists its exported functions.
    pub fn compile(
        limits: &WorkerLimits,
        kind: ScriptKind,
        file: &str,
        source: &str,
    ) -> Result<Compiled, ScriptFailure> {
        let triple = PluginTriple::new(kind, "compile", 1);
        let (runtime, context, clock) = new_engine(limits)?;
        let bytecode = context.with(|ctx| {
            let module = Module::declare(ctx.clone(), file, source)
                .map_err(|e| failure(&ctx, e, &clock, file, limits.memory_limit_bytes, None))?;
            module
                .write(WriteOptions::default())
                .map_err(|e| failure(&ctx, e, &clock, file, limits.memory_limit_bytes, None))
        })?;
        let logs = Rc::new(RefCell::new(Vec::new()));
        let loaded = Self::assemble(runtime, context, clock, logs, limits, &triple, file, &bytecode)?;
        let exports = loaded.context.with(|ctx| -> rquickjs::Result<Vec<String>> {
            let namespace = loaded.namespace.clone().restore(&ctx)?;
            let mut names = Vec::new();
            for key in namespace.keys::<String>() {
                let key = key?;
                if namespace.get::<_, Value>(key.as_str())?.is_function() {
                    names.push(key);
                }
            }
            Ok(names)
        });
        let exports = exports.map_err(|e| ScriptFailure {
            kind: FailureKind::ModuleLoad,
            message: e.to_string(),
            location: None,
        })?;
        Ok(Compiled { bytecode, exports })
    }

    /// Loads compiled bytecode into a fresh sandbox and evaluates the module.
    pub fn load(
        limits: &WorkerLimits,
        triple: &PluginTriple,
        file: &str,
        bytecode: &[u8],
    ) -> Result<Self, ScriptFailure> {
        let (runtime, context, clock) = new_engine(limits)?;
        let logs = Rc::new(RefCell::new(Vec::new()));
        Self::assemble(runtime, context, clock, logs, limits, triple, file, bytecode)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        runtime: Runtime,
        context: Context,
        clock: Rc<Clock>,
        logs: Rc<RefCell<Vec<LogLine>>>,
        limits: &WorkerLimits,
        triple: &PluginTriple,
        file: &str,
        bytecode: &[u8],
    ) -> Result<Self, ScriptFailure> {
        let timeout = Duration::from_millis(limits.call_timeout_ms);
        let (namespace, host_ctx, lazy_class, layout) = context.with(|ctx| {
            let fail = |e| failure(&ctx, e, &clock, file, limits.memory_limit_bytes, None);
            // Before any script runs, so the probe meets the engine's own builtins.
            let layout = Layout::probe(ctx.as_raw().as_ptr());
            ctx.eval::<(), _>(PRELUDE).map_err(fail)?;
            let lazy_class = lazy::register(ctx.as_raw().as_ptr()).map_err(fail)?;
            let host_ctx = host_ctx::build(&ctx, triple, logs.clone()).map_err(fail)?;
            // SAFETY: the bytecode was written by `compile` of this same engine build.
            let module = unsafe { Module::load(ctx.clone(), bytecode) }.map_err(fail)?;
            clock.arm(timeout);
            let evaluated = evaluate(module);
            clock.disarm();
            let namespace = evaluated.and_then(|m| m.namespace()).map_err(|e| {
                let mut f = failure(&ctx, e, &clock, file, limits.memory_limit_bytes, None);
                if f.kind == FailureKind::Thrown {
                    f.kind = FailureKind::ModuleLoad;
                }
                f
            })?;
            Ok::<_, ScriptFailure>((
                Persistent::save(&ctx, namespace),
                Persistent::save(&ctx, host_ctx),
                lazy_class,
                layout,
            ))
        })?;
        Ok(Self {
            keys: RefCell::new(KeyTable::default()),
            kept: RefCell::new(Kept::new(layout)),
            names: RefCell::new(KeyNames::new(layout)),
            lazy_class,
            lazy_from_bytes: LAZY_FROM_BYTES,
            ends: RefCell::new(Vec::new()),
            atoms: Box::into_raw(Box::default()),
            entry: RefCell::new(None),
            last_result: RefCell::new(None),
            namespace,
            host_ctx,
            context,
            runtime,
            clock,
            logs,
            file: file.to_owned(),
            kind: triple.kind,
            timeout,
            memory_limit: limits.memory_limit_bytes,
        })
    }

    /// Calls one exported function with the arguments given as one array in the wire form.
    /// `ctx` is passed after the arguments the kind's interface names (missing ones are
    /// `undefined`), so it is always in its place. Returns the result in the wire form.
    pub fn call(&self, function: &str, args: &[u8]) -> (Result<Vec<u8>, ScriptFailure>, Vec<LogLine>) {
        let outcome = self.context.with(|ctx| {
            let fail =
                |e, f: Option<&Function>| failure(&ctx, e, &self.clock, &self.file, self.memory_limit, f);
            let target = self.entry(&ctx, function).map_err(|e| fail(e, None))?;
            let Some(target) = target else {
                return Err(ScriptFailure {
                    kind: FailureKind::UnknownFunction,
                    message: format!("the module does not export a function `{function}`"),
                    location: None,
                });
            };
            let args = if args.len() < self.lazy_from_bytes {
                args::from_wire_args(&ctx, &mut self.keys.borrow_mut(), &mut self.kept.borrow_mut(), args)
            } else {
                lazy::arguments(
                    ctx.as_raw().as_ptr(),
                    self.lazy_class,
                    args,
                    &mut self.ends.borrow_mut(),
                    self.atoms,
                )
                .map(|raw| {
                    // SAFETY: each value is a new reference these wrappers take over.
                    raw.into_iter().map(|v| unsafe { Value::from_raw(ctx.clone(), v) }).collect()
                })
            };
            let args = args.map_err(|e| match e {
                FromWire::Engine(e) => fail(e, None),
                FromWire::Wire(e) => ScriptFailure {
                    kind: FailureKind::Thrown,
                    message: format!("the host sent malformed arguments: {e}"),
                    location: None,
                },
            })?;
            let arity = interface_arity(self.kind, function).max(args.len());
            let mut call_args = Args::new(ctx.clone(), arity + 1);
            let mut args = args.into_iter();
            for _ in 0..arity {
                let arg = args.next().unwrap_or_else(|| Value::new_undefined(ctx.clone()));
                call_args.push_arg(arg).map_err(|e| fail(e, None))?;
            }
            let host_ctx = self.host_ctx.clone().restore(&ctx).map_err(|e| fail(e, None))?;
            call_args.push_arg(host_ctx).map_err(|e| fail(e, None))?;
            self.clock.arm(self.timeout);
            let result =
                target.call_arg::<Value>(call_args).map_err(|e| fail(e, Some(&target))).and_then(|v| {
                    let mut out = WireBytes(Vec::with_capacity(256));
                    let written = convert::write(v.clone(), &mut out, Some(&mut self.names.borrow_mut()));
                    let keep = written.is_ok() && out.0.len() <= KEPT_RESULT_BYTES;
                    *self.last_result.borrow_mut() = keep.then(|| Persistent::save(&ctx, v));
                    written.map(|()| out.0).map_err(|e| match e {
                        Unconvertible::Engine(e) => fail(e, Some(&target)),
                        Unconvertible::Shape(message) => ScriptFailure {
                            kind: FailureKind::Unconvertible,
                            message: format!("the returned value cannot become JSON: {message}"),
                            location: function_location(&target),
                        },
                    })
                });
            self.clock.disarm();
            result
        });
        (outcome, std::mem::take(&mut *self.logs.borrow_mut()))
    }

    /// Starts a batch of calls: the next call looks its function up again.
    pub fn start_batch(&self) {
        self.entry.borrow_mut().take();
    }

    /// The exported function `name`, looked up once per batch.
    fn entry<'js>(&self, ctx: &Ctx<'js>, name: &str) -> rquickjs::Result<Option<Function<'js>>> {
        if let Some((cached, function)) = &*self.entry.borrow() {
            if **cached == *name {
                return function.clone().restore(ctx).map(Some);
            }
        }
        let namespace = self.namespace.clone().restore(ctx)?;
        let Some(function) = namespace.get::<_, Value>(name)?.into_function() else {
            return Ok(None);
        };
        *self.entry.borrow_mut() = Some((name.into(), Persistent::save(ctx, function.clone())));
        Ok(Some(function))
    }

    /// Bytes the runtime's heap holds now.
    pub fn memory_used(&self) -> i64 {
        self.runtime.memory_usage().memory_used_size
    }
}

impl Drop for ScriptRuntime {
    fn drop(&mut self) {
        self.context.with(|ctx| {
            self.kept.get_mut().release(ctx.as_raw().as_ptr());
            self.names.get_mut().release(ctx.as_raw().as_ptr());
            self.keys.get_mut().release(&ctx);
            // SAFETY: made by `assemble` and freed once, here; no call runs any more, so no
            // hook reads it (objects a script kept are only finalised from now on).
            let mut atoms = unsafe { Box::from_raw(self.atoms) };
            atoms.release(ctx.as_raw().as_ptr());
        });
    }
}

impl Clock {
    fn arm(&self, timeout: Duration) {
        self.fired.set(false);
        self.deadline.set(Some(Instant::now() + timeout));
    }

    fn disarm(&self) {
        self.deadline.set(None);
    }
}

fn new_engine(limits: &WorkerLimits) -> Result<(Runtime, Context, Rc<Clock>), ScriptFailure> {
    let engine_failure = |e: rquickjs::Error| ScriptFailure {
        kind: FailureKind::MemoryLimit,
        message: format!("cannot create a runtime: {e}"),
        location: None,
    };
    let runtime = Runtime::new().map_err(engine_failure)?;
    runtime.set_memory_limit(limits.memory_limit_bytes);
    runtime.set_max_stack_size(limits.stack_limit_bytes);
    let clock = Rc::new(Clock::default());
    let watched = clock.clone();
    runtime.set_interrupt_handler(Some(Box::new(move || match watched.deadline.get() {
        Some(deadline) if Instant::now() >= deadline => {
            watched.fired.set(true);
            true
        }
        _ => false,
    })));
    let context = Context::custom::<Intrinsics>(&runtime).map_err(engine_failure)?;
    Ok((runtime, context, clock))
}

/// Evaluates a loaded module, running its top-level code (and any top-level `await`).
fn evaluate(module: Module<'_>) -> rquickjs::Result<Module<'_, Evaluated>> {
    let (module, promise) = module.eval()?;
    promise.finish::<()>()?;
    Ok(module)
}

/// The number of parameters before `ctx` in each kind's interface.
fn interface_arity(kind: ScriptKind, function: &str) -> usize {
    match (kind, function) {
        (ScriptKind::Status, "check") => 2,
        (ScriptKind::Component, "plan") => 1,
        (ScriptKind::Component, "package") => 2,
        (ScriptKind::Trigger, "parse") => 1,
        _ => 0,
    }
}

/// Turns an engine error into a typed failure: the interrupt, the heap and stack limits,
/// or a thrown value with the place it was thrown.
fn failure(
    ctx: &Ctx<'_>,
    error: rquickjs::Error,
    clock: &Clock,
    file: &str,
    memory_limit: usize,
    function: Option<&Function<'_>>,
) -> ScriptFailure {
    let fallback_location = || function.and_then(function_location);
    if matches!(error, rquickjs::Error::Allocation) {
        return ScriptFailure {
            kind: FailureKind::MemoryLimit,
            message: "out of memory".into(),
            location: fallback_location(),
        };
    }
    if !matches!(error, rquickjs::Error::Exception) {
        let kind = if clock.fired.get() { FailureKind::Timeout } else { FailureKind::Thrown };
        return ScriptFailure { kind, message: error.to_string(), location: fallback_location() };
    }
    let thrown = ctx.catch();
    let exception = thrown.as_exception();
    let message = match exception {
        Some(e) => {
            let name: Option<String> = e.get("name").ok();
            let text = e.message().unwrap_or_default();
            match name {
                Some(name) if !name.is_empty() => format!("{name}: {text}"),
                _ => text,
            }
        }
        None => describe(&thrown),
    };
    let location = exception
        .and_then(|e| e.stack())
        .and_then(|stack| location_in(&stack, file))
        .or_else(fallback_location);
    let kind = if clock.fired.get() {
        FailureKind::Timeout
    } else if message.contains("out of memory")
        || (thrown.is_null() && ctx_memory_exhausted(ctx, memory_limit))
    {
        FailureKind::MemoryLimit
    } else if message.contains("stack overflow") || message.contains("Maximum call stack size exceeded") {
        FailureKind::StackOverflow
    } else {
        FailureKind::Thrown
    };
    ScriptFailure { kind, message, location }
}

/// When the engine could not even allocate the exception, the heap is at its limit.
fn ctx_memory_exhausted(ctx: &Ctx<'_>, memory_limit: usize) -> bool {
    // SAFETY: reads the runtime's own counters through its pointer.
    let used = unsafe {
        let mut usage = std::mem::zeroed();
        rquickjs::qjs::JS_ComputeMemoryUsage(rquickjs::qjs::JS_GetRuntime(ctx.as_raw().as_ptr()), &mut usage);
        usage.malloc_size
    };
    used as usize * 10 >= memory_limit * 9
}

/// A short text for a thrown value that is not an Error (`throw "boom"`, `throw 42`).
fn describe(value: &Value<'_>) -> String {
    let text =
        convert::to_json(value.clone()).unwrap_or_else(|_| format!("a value of type {}", value.type_name()));
    let mut text = format!("a non-Error value {text}");
    if text.len() > 300 {
        let cut = (0..=300).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// The first frame of a QuickJS stack trace (`    at check (pkg/x.js:12:5)`) in `file`.
pub fn location_in(stack: &str, file: &str) -> Option<ScriptLocation> {
    stack.lines().find_map(|line| {
        let frame = line.trim().strip_prefix("at ")?;
        let place = match (frame.rfind('('), frame.ends_with(')')) {
            (Some(open), true) => &frame[open + 1..frame.len() - 1],
            _ => frame,
        };
        let mut parts = place.rsplitn(3, ':');
        let column = parts.next()?.parse().ok()?;
        let line = parts.next()?.parse().ok()?;
        let name = parts.next()?;
        (name == file).then(|| ScriptLocation { file: name.to_owned(), line, column })
    })
}

/// Where a function is defined; QuickJS exposes `fileName`, `lineNumber`, `columnNumber`.
fn function_location(function: &Function<'_>) -> Option<ScriptLocation> {
    let file: String = function.get("fileName").ok()?;
    let line: u32 = function.get("lineNumber").ok()?;
    let column: u32 = function.get("columnNumber").ok()?;
    Some(ScriptLocation { file, line, column })
}

#[cfg(test)]
impl ScriptRuntime {
    /// A status script's runtime with test limits and the heap limit given, whose calls
    /// get lazy argument objects whatever their size, or never.
    pub fn for_test(name: &str, source: &str, memory_limit_bytes: usize, lazy: bool) -> Self {
        let limits = WorkerLimits {
            call_timeout_ms: 5000,
            memory_limit_bytes,
            stack_limit_bytes: 512 << 10,
            runtimes: 1,
            progress_interval_ms: 5,
            poll_after_short_batches: true,
        };
        let compiled = ScriptRuntime::compile(&limits, ScriptKind::Status, "t.js", source).ok().unwrap();
        let triple = PluginTriple::new(ScriptKind::Status, name, 1);
        let mut runtime = ScriptRuntime::load(&limits, &triple, "t.js", &compiled.bytecode).ok().unwrap();
        runtime.lazy_from_bytes = if lazy { 0 } else { usize::MAX };
        runtime
    }

    /// The addresses of the argument objects the next call may refill.
    pub fn kept_objects(&self) -> Vec<usize> {
        self.kept.borrow().objects()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arguments are built into engine objects and the result read back; dropping the
    /// runtime afterwards would abort the process on any reference the conversion leaked.
    #[test]
    fn arguments_and_results_cross_the_wire_without_leaks() {
        let limits = WorkerLimits {
            call_timeout_ms: 1000,
            memory_limit_bytes: 32 << 20,
            stack_limit_bytes: 512 << 10,
            runtimes: 1,
            progress_interval_ms: 5,
            poll_after_short_batches: true,
        };
        let source = "export function check(i, o) {\n  return { status: o.http.status === 200 ? 'healthy' : 'degraded', reason: Object.keys(o).join(','), details: { proto: Object.getPrototypeOf(o.__proto__) === Object.prototype, list: o.list, f: () => 1, u: undefined, n: 0.5 } };\n}\n";
        let compiled = ScriptRuntime::compile(&limits, ScriptKind::Status, "t.js", source).ok().unwrap();
        let triple = PluginTriple::new(ScriptKind::Status, "t", 1);
        let runtime = ScriptRuntime::load(&limits, &triple, "t.js", &compiled.bytecode).ok().unwrap();
        let args = serde_json::json!([{}, {"http": {"status": 200}, "__proto__": {"x": 1}, "list": [1, "two", null, true, 3.25]}]);
        let mut bytes = Vec::new();
        crate::wire::encode(&args, &mut bytes).unwrap();
        let result = runtime.call("check", &bytes).0.ok().unwrap();
        let expected = serde_json::json!({
            "status": "healthy",
            "reason": "__proto__,http,list",
            "details": {"proto": true, "list": [1, "two", null, true, 3.25], "n": 0.5},
        });
        assert_eq!(crate::wire::decode(&result).unwrap(), expected);
        drop(runtime);
    }

    #[test]
    fn finds_the_first_frame_in_the_script() {
        let stack = "    at <native>\n    at check (acme/http.js:12:5)\n    at acme/http.js:1:1\n";
        let at = location_in(stack, "acme/http.js").unwrap();
        assert_eq!((at.line, at.column), (12, 5));
        assert!(location_in(stack, "other.js").is_none());
    }
}
