//! [`PluginHost`]: the public face of the crate. It resolves names to revisions, keeps
//! compiled bytecode and the active map cached, validates what scripts return, and hands
//! batches of calls to the worker pool.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use object_store::ObjectStore;
use serde_json::Value;
use sqlx::AnyPool;

use crate::config::HostConfig;
use crate::error::Error;
use crate::memo::{Fingerprinter, Memo};
use crate::model::{CallOutput, CheckInput, CheckVerdict, PackageInfo, ScriptRevisions};
use crate::package::{self, ParsedPackage};
use crate::pool::{Batch, CallOutcome, Pool};
use crate::protocol::WorkerStats;
use crate::store::{Store, StoredScript};
use crate::triple::{PluginTriple, ScriptKind};
use crate::verdict;
use crate::wire;

/// Runs plugin scripts in sandboxed worker processes. Cheap to clone; clones share the
/// pool and caches.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    pool: Pool,
    config: HostConfig,
    /// kind+name → active revision; a copy of the database's map, refreshed on every change
    /// made through this host and by [`PluginHost::reload_active`].
    active: RwLock<HashMap<(ScriptKind, String), u32>>,
    scripts: moka::future::Cache<PluginTriple, Arc<StoredScript>>,
    /// (module name, content hash) → bytecode: compile once, load per runtime.
    bytecode: moka::future::Cache<(String, String), Arc<Vec<u8>>>,
    memo: Memo,
}

impl PluginHost {
    /// Opens the host on the service's stores and installs the built-in package if this
    /// build's version of it is not installed yet.
    pub async fn open(
        db: AnyPool,
        objects: Arc<dyn ObjectStore>,
        config: HostConfig,
    ) -> Result<PluginHost, Error> {
        let host = PluginHost {
            inner: Arc::new(Inner {
                store: Store::new(db, objects),
                pool: Pool::new(&config)?,
                active: RwLock::new(HashMap::new()),
                scripts: moka::future::Cache::new(10_000),
                bytecode: moka::future::Cache::new(10_000),
                memo: Memo::new(config.memo_capacity),
                config,
            }),
        };
        host.reload_active().await?;
        let builtin = package::builtin_package();
        let parsed = package::parse(&builtin)?;
        if host.inner.store.package_digest(&parsed.name).await?.as_deref() != Some(parsed.digest.as_str()) {
            match host.install_parsed(parsed, builtin).await {
                Ok(_) => tracing::info!("installed the built-in plugin package"),
                // A build whose built-in scripts changed without new revisions must not keep
                // the service from starting: the installed revisions stay in force.
                Err(e @ Error::RevisionConflict { .. }) => {
                    tracing::error!(error = %e, "the built-in plugin package of this build was not installed")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(host)
    }

    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// Rereads the active-revision map from the database. The seam for cross-replica
    /// coherence: call it when another replica announces a change.
    pub async fn reload_active(&self) -> Result<(), Error> {
        let map = self.inner.store.active_map().await?;
        *self.inner.active.write().expect("active map lock") = map;
        Ok(())
    }

    /// Validates a package (manifest, schemas, every module compiles and exports its kind's
    /// functions) and registers all its scripts, or none.
    pub async fn install_package(&self, archive: Bytes) -> Result<PackageInfo, Error> {
        let parsed = package::parse(&archive)?;
        self.install_parsed(parsed, archive).await
    }

    async fn install_parsed(&self, parsed: ParsedPackage, archive: Bytes) -> Result<PackageInfo, Error> {
        for script in &parsed.scripts {
            let module = format!("{}/{}", parsed.name, script.file);
            let compiled = self.inner.pool.compile(script.triple.kind, &module, &script.source).await?;
            let compiled = compiled.map_err(|(message, location)| Error::InvalidPackage {
                file: script.file.clone(),
                line: location.as_ref().map(|l| l.line),
                column: location.as_ref().map(|l| l.column),
                message,
            })?;
            let missing: Vec<&str> = script
                .triple
                .kind
                .required_exports()
                .iter()
                .copied()
                .filter(|f| !compiled.exports.iter().any(|e| e == f))
                .collect();
            if !missing.is_empty() {
                return Err(Error::InvalidPackage {
                    file: script.file.clone(),
                    line: None,
                    column: None,
                    message: format!(
                        "a {} script must export function(s) {}; it exports [{}]",
                        script.triple.kind,
                        missing.join(", "),
                        compiled.exports.join(", ")
                    ),
                });
            }
            self.inner.bytecode.insert((module, script.code_hash.clone()), compiled.bytecode).await;
        }
        self.inner.store.install(&parsed, archive).await?;
        self.reload_active().await?;
        let installed = self.inner.store.list().await?.into_iter().find(|p| p.name == parsed.name);
        installed.ok_or(Error::UnknownPackage { name: parsed.name })
    }

    /// Removes a package; refused while one of its scripts is active unless `force`.
    pub async fn uninstall_package(&self, name: &str, force: bool) -> Result<(), Error> {
        self.inner.store.uninstall(name, force).await?;
        self.inner.scripts.invalidate_all();
        self.reload_active().await
    }

    pub async fn list(&self) -> Result<Vec<PackageInfo>, Error> {
        self.inner.store.list().await
    }

    pub async fn revisions(&self, kind: ScriptKind, name: &str) -> Result<ScriptRevisions, Error> {
        self.inner.store.revisions(kind, name).await
    }

    /// Makes `revision` the active one; new calls use it at once, calls already running
    /// finish on the revision they started with.
    pub async fn activate(&self, kind: ScriptKind, name: &str, revision: u32) -> Result<(), Error> {
        let triple = PluginTriple::new(kind, name, revision);
        self.inner.store.activate(&triple).await?;
        self.inner.active.write().expect("active map lock").insert((kind, name.to_owned()), revision);
        Ok(())
    }

    /// Script runtimes alive in the idle workers and the heap they use: the figure behind
    /// the memory-per-runtime benchmark and a health signal for operators.
    pub async fn worker_stats(&self) -> Result<WorkerStats, Error> {
        self.inner.pool.stats().await
    }

    /// The revision calls without an explicit one would use now.
    pub fn active_revision(&self, kind: ScriptKind, name: &str) -> Option<u32> {
        self.inner.active.read().expect("active map lock").get(&(kind, name.to_owned())).copied()
    }

    fn resolve(&self, kind: ScriptKind, name: &str, revision: Option<u32>) -> Result<PluginTriple, Error> {
        let revision = match revision {
            Some(r) => r,
            None => self
                .active_revision(kind, name)
                .ok_or_else(|| Error::UnknownScript { kind, name: name.to_owned() })?,
        };
        Ok(PluginTriple::new(kind, name, revision))
    }

    async fn script(&self, triple: &PluginTriple) -> Result<Arc<StoredScript>, Error> {
        let store = &self.inner.store;
        let loaded = self
            .inner
            .scripts
            .try_get_with_by_ref(triple, async {
                store
                    .script(triple)
                    .await?
                    .map(Arc::new)
                    .ok_or_else(|| Error::UnknownRevision { triple: triple.clone() })
            })
            .await;
        loaded.map_err(|e| Arc::try_unwrap(e).unwrap_or_else(|shared| rewrap(&shared, triple)))
    }

    async fn bytecode(&self, script: &StoredScript) -> Result<Arc<Vec<u8>>, Error> {
        let module = script.module_name();
        let key = (module.clone(), script.code_hash.clone());
        let pool = &self.inner.pool;
        let loaded = self
            .inner
            .bytecode
            .try_get_with(key, async {
                match pool.compile(script.triple.kind, &module, &script.source).await? {
                    Ok(compiled) => Ok(compiled.bytecode),
                    Err((message, location)) => {
                        Err(Error::ModuleLoad { triple: script.triple.clone(), message, location })
                    }
                }
            })
            .await;
        loaded.map_err(|e| Arc::try_unwrap(e).unwrap_or_else(|shared| rewrap(&shared, &script.triple)))
    }

    /// Calls one function of a script (the active revision unless one is given) with JSON
    /// arguments; `ctx` is passed by the host after them.
    pub async fn call(
        &self,
        kind: ScriptKind,
        name: &str,
        revision: Option<u32>,
        function: &str,
        args: Vec<Value>,
    ) -> Result<CallOutput, Error> {
        let mut results = self.call_batch(kind, name, revision, function, &[args]).await?;
        results.pop().expect("one result per call")
    }

    /// Calls one function of a script once per argument list, in one batch spread over the
    /// workers (one round trip per worker instead of one per call). The outer error is for
    /// the whole batch (unknown script, worker start failure); each call has its own result.
    pub async fn call_batch(
        &self,
        kind: ScriptKind,
        name: &str,
        revision: Option<u32>,
        function: &str,
        calls: &[Vec<Value>],
    ) -> Result<Vec<Result<CallOutput, Error>>, Error> {
        let triple = self.resolve(kind, name, revision)?;
        let encoded = calls.iter().map(|args| encode_args(args)).collect::<Result<_, _>>()?;
        let results = self.run(&triple, function, encoded).await?;
        metrics::counter!("slipway_plugin_calls_total", "kind" => kind.as_str())
            .increment(results.len() as u64);
        Ok(results
            .into_iter()
            .map(|outcome| {
                let result = wire::decode(&outcome?)
                    .map_err(|e| verdict::wrong_shape(&triple, function, e.to_string()))?;
                verdict::check_shape(&triple, function, &result)?;
                Ok(CallOutput { result, triple: triple.clone() })
            })
            .collect())
    }

    /// Judges many instances with the active revision of `status/<name>`. An instance whose
    /// instance and observation are unchanged since its last verdict on this revision gets
    /// that verdict again without a call. The outer error is for the whole batch (unknown
    /// script, worker start failure); each instance has its own result.
    pub async fn check_batch(
        &self,
        name: &str,
        inputs: Vec<CheckInput>,
    ) -> Result<Vec<Result<CheckVerdict, Error>>, Error> {
        let triple = self.resolve(ScriptKind::Status, name, None)?;
        let code = self.code(&triple).await?;
        let fingerprinter = self.inner.memo.fingerprinter(&triple);
        let chunk = self.piece_size(inputs.len());
        let mut inputs = inputs.into_iter();
        let mut pieces = Vec::new();
        loop {
            let piece: Vec<CheckInput> = inputs.by_ref().take(chunk).collect();
            if piece.is_empty() {
                break;
            }
            pieces.push(self.check_piece(&triple, &code, &fingerprinter, piece));
        }
        // Pieces run concurrently: while a worker runs one, the host encodes the next ones
        // and reads the answers of the last.
        let mut out = Vec::new();
        for piece in futures::future::join_all(pieces).await {
            out.extend(piece?);
        }
        Ok(out)
    }

    async fn check_piece(
        &self,
        triple: &PluginTriple,
        code: &Code,
        fingerprinter: &Fingerprinter,
        inputs: Vec<CheckInput>,
    ) -> Result<Vec<Result<CheckVerdict, Error>>, Error> {
        let mut out: Vec<Option<Result<CheckVerdict, Error>>> = Vec::with_capacity(inputs.len());
        let mut pending = Vec::new();
        let mut calls = Vec::new();
        for input in inputs {
            // The arguments are encoded once: the bytes are both the fingerprint's input and what is sent.
            let mut args = Vec::with_capacity(512);
            args.push(wire::ARRAY);
            let encoded = wire::encode(&input.instance, &mut args)
                .and_then(|()| wire::encode(&input.observation, &mut args));
            encoded.map_err(|e| Error::Worker(format!("arguments of {}: {e}", input.instance_id)))?;
            args.push(wire::END);
            let remember = if input.memo {
                let fingerprint = fingerprinter.fingerprint(&args);
                match self.inner.memo.get(&input.instance_id, triple, fingerprint) {
                    Ok(verdict) => {
                        out.push(Some(Ok(verdict)));
                        continue;
                    }
                    Err(miss) => Some((input.instance_id, miss, fingerprint)),
                }
            } else {
                None
            };
            pending.push((out.len(), remember));
            calls.push(args);
            out.push(None);
        }
        let memo_hits = out.len() - pending.len();
        metrics::counter!("slipway_plugin_check_memo_hits_total").increment(memo_hits as u64);
        metrics::counter!("slipway_plugin_calls_total", "kind" => "status").increment(pending.len() as u64);
        if !pending.is_empty() {
            let results = self.inner.pool.run(code.batch(triple, "check", calls)).await?;
            for ((index, remember), result) in pending.into_iter().zip(results) {
                let verdict = result.and_then(|bytes| {
                    let (verdict, details) = verdict::from_wire(triple, &bytes)?;
                    if let Some((instance_id, miss, fingerprint)) = remember {
                        self.inner.memo.remember(&instance_id, miss, fingerprint, &verdict, &details);
                    }
                    Ok(verdict)
                });
                out[index] = Some(verdict);
            }
        }
        Ok(out.into_iter().map(|r| r.expect("every input answered")).collect())
    }

    /// The script and bytecode of a revision, as a batch needs them.
    async fn code(&self, triple: &PluginTriple) -> Result<Code, Error> {
        let script = self.script(triple).await?;
        let bytecode = self.bytecode(&script).await?;
        Ok(Code { module: script.module_name(), script, bytecode })
    }

    /// Calls per piece of a batch: at least two pieces per worker, so the host encodes and
    /// decodes one piece while a worker runs another.
    fn piece_size(&self, calls: usize) -> usize {
        let workers = self.inner.config.worker_count();
        calls.div_ceil(workers * 2).clamp(1, self.inner.config.max_batch.max(1))
    }

    /// Splits the calls over the workers and runs the pieces in parallel.
    async fn run(
        &self,
        triple: &PluginTriple,
        function: &str,
        calls: Vec<Vec<u8>>,
    ) -> Result<Vec<CallOutcome>, Error> {
        let code = self.code(triple).await?;
        let chunk = self.piece_size(calls.len());
        let mut calls = calls.into_iter();
        let mut pieces = Vec::new();
        loop {
            let piece: Vec<Vec<u8>> = calls.by_ref().take(chunk).collect();
            if piece.is_empty() {
                break;
            }
            pieces.push(self.inner.pool.run(code.batch(triple, function, piece)));
        }
        let mut results = Vec::new();
        for piece in futures::future::join_all(pieces).await {
            results.extend(piece?);
        }
        Ok(results)
    }
}

/// What a batch of one revision runs: the stored script and its compiled bytecode.
struct Code {
    script: Arc<StoredScript>,
    module: String,
    bytecode: Arc<Vec<u8>>,
}

impl Code {
    fn batch<'a>(&'a self, triple: &'a PluginTriple, function: &'a str, calls: Vec<Vec<u8>>) -> Batch<'a> {
        Batch {
            triple,
            file: &self.module,
            code_hash: &self.script.code_hash,
            bytecode: &self.bytecode,
            function,
            calls,
        }
    }
}

/// A call's arguments (one array) in the wire form.
fn encode_args(args: &[Value]) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::with_capacity(256);
    bytes.push(wire::ARRAY);
    for arg in args {
        wire::encode(arg, &mut bytes).map_err(|e| Error::Worker(format!("arguments: {e}")))?;
    }
    bytes.push(wire::END);
    Ok(bytes)
}

/// moka shares one error among concurrent loaders; when others still hold it, describe it.
fn rewrap(shared: &Error, triple: &PluginTriple) -> Error {
    match shared {
        Error::UnknownRevision { triple } => Error::UnknownRevision { triple: triple.clone() },
        Error::ModuleLoad { triple, message, location } => {
            Error::ModuleLoad { triple: triple.clone(), message: message.clone(), location: location.clone() }
        }
        other => Error::ModuleLoad { triple: triple.clone(), message: other.to_string(), location: None },
    }
}
