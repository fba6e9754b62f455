//! [`PluginHost`]: the public face of the crate. It resolves names to revisions, keeps
//! compiled bytecode and the active map cached, validates what scripts return, and hands
//! batches of calls to the worker pool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use object_store::ObjectStore;
use serde_json::Value;
use sqlx::AnyPool;

use crate::config::HostConfig;
use crate::error::Error;
use crate::memo::{Fingerprint, Fingerprinter, InstanceKey, Memo};
use crate::model::{CallOutput, CheckInput, CheckVerdict, PackageInfo, ScriptRevisions};
use crate::package::{self, ParsedPackage};
use crate::pool::{CallOutcome, Job, Pool, lock};
use crate::protocol::{CallList, WorkerStats};
use crate::store::{Store, StoredScript};
use crate::triple::{PluginTriple, ScriptKind};
use crate::verdict;
use crate::wire;
use crate::wire_value::WireValue;

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
        // "One per core" is resolved once: `available_parallelism` reads the cgroup's CPU
        // limits from files each time it is asked, and every batch asks for the count.
        let config = HostConfig { workers: config.worker_count(), ..config };
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
        let args = args.iter().map(WireValue::from_value).collect();
        let mut results = self.call_batch(kind, name, revision, function, &[args]).await?;
        results.pop().expect("one result per call")
    }

    /// Calls one function of a script once per argument list, in one batch spread over the
    /// workers (one round trip per piece of the batch instead of one per call). The
    /// arguments come in the wire form, so a caller that builds them anyway (a webhook's
    /// request) writes them once and the host copies their bytes. The outer error is for
    /// the whole batch (unknown script, worker start failure, arguments nested too deep);
    /// each call has its own result.
    pub async fn call_batch(
        &self,
        kind: ScriptKind,
        name: &str,
        revision: Option<u32>,
        function: &str,
        calls: &[Vec<WireValue>],
    ) -> Result<Vec<Result<CallOutput, Error>>, Error> {
        let triple = self.resolve(kind, name, revision)?;
        let code = self.code(&triple).await?;
        let piece_size = self.piece_size(calls.len());
        let mut pieces = calls.chunks(piece_size);
        let mut encoded = Ok(());
        let make = || {
            let piece = pieces.next()?;
            let mut list = CallList::with_capacity(piece.len() * 256);
            for args in piece {
                if let Err(e) = list.push_with(|buf| encode_args(args, buf)) {
                    encoded = Err(Error::Worker(format!("arguments: {e}")));
                    return None;
                }
            }
            Some(list)
        };
        let mut out: Vec<Option<Result<CallOutput, Error>>> = (0..calls.len()).map(|_| None).collect();
        let done = |piece: usize, results: Vec<CallOutcome>| {
            for (slot, outcome) in out[piece * piece_size..].iter_mut().zip(results) {
                *slot = Some(outcome.and_then(|bytes| {
                    let result = wire::decode(&bytes)
                        .map_err(|e| verdict::wrong_shape(&triple, function, e.to_string()))?;
                    verdict::check_shape(&triple, function, &result)?;
                    Ok(CallOutput { result, triple: triple.clone() })
                }));
            }
        };
        let lanes = self.inner.config.worker_count();
        self.inner.pool.run_pieces(&code.job(&triple, function), lanes, make, done).await?;
        encoded?;
        metrics::counter!("slipway_plugin_calls_total", "kind" => kind.as_str())
            .increment(calls.len() as u64);
        Ok(out.into_iter().map(|r| r.expect("every call answered")).collect())
    }

    /// Judges many instances with the active revision of `status/<name>`. An instance whose
    /// instance and observation are unchanged since its last verdict on this revision gets
    /// that verdict again without a call. The outer error is for the whole batch (unknown
    /// script, worker start failure); each instance has its own result.
    ///
    /// The batch runs in pieces that are encoded as the workers take them and decoded as
    /// they are answered, so the host's work overlaps the workers' (see `pool::pipeline`).
    /// The inputs are borrowed: the caller, which built them, frees them too, off the path
    /// that keeps the workers fed.
    pub async fn check_batch(
        &self,
        name: &str,
        inputs: &[CheckInput],
    ) -> Result<Vec<Result<CheckVerdict, Error>>, Error> {
        // One triple for the batch, shared by its verdicts and the memo's.
        let triple = Arc::new(self.resolve(ScriptKind::Status, name, None)?);
        let code = self.code(&triple).await?;
        let fingerprinter = self.inner.memo.fingerprinter(&triple);
        let memo = &self.inner.memo;
        let total = inputs.len();
        let piece_size = self.piece_size(total);
        let out: Mutex<Vec<Option<Result<CheckVerdict, Error>>>> =
            Mutex::new((0..total).map(|_| None).collect());
        let pieces: Mutex<Vec<PieceInputs>> = Mutex::new(Vec::new());
        let sent = AtomicUsize::new(0);
        let mut inputs = inputs.iter().enumerate();
        // The first pieces are small, so the worker starts soon after the batch does; each
        // is twice the last up to the full size, and the host, the faster side, stays ahead.
        let mut size = FIRST_PIECE_CALLS.min(piece_size);
        let mut call_bytes = 512;
        let make = || {
            let mut calls = CallList::with_capacity(size * call_bytes);
            let mut piece = Vec::with_capacity(size);
            while piece.len() < size {
                let Some((index, input)) = inputs.next() else { break };
                match encode_check(memo, &fingerprinter, &triple, input, &mut calls) {
                    Encoded::Call(remember) => piece.push((index, remember)),
                    Encoded::Answered(result) => lock(&out)[index] = Some(result),
                }
            }
            if piece.is_empty() {
                return None;
            }
            // The next pieces' calls are likely as large: one allocation instead of doublings.
            call_bytes = calls.as_bytes().len() / calls.len().max(1) * 9 / 8 + 1;
            size = (size * 2).min(piece_size);
            sent.fetch_add(piece.len(), Ordering::Relaxed);
            lock(&pieces).push(piece);
            Some(calls)
        };
        let done = |number: usize, results: Vec<CallOutcome>| {
            let piece = std::mem::take(&mut lock(&pieces)[number]);
            let mut out = lock(&out);
            for ((index, remember), result) in piece.into_iter().zip(results) {
                out[index] = Some(result.and_then(|bytes| {
                    let verdict = verdict::from_wire(&triple, &bytes)?;
                    if let Some(Remember { instance, fingerprint }) = remember {
                        memo.remember(instance, fingerprint, &verdict);
                    }
                    Ok(verdict)
                }));
            }
        };
        let lanes = self.inner.config.worker_count();
        self.inner.pool.run_pieces(&code.job(&triple, "check"), lanes, make, done).await?;
        let calls = sent.into_inner();
        metrics::counter!("slipway_plugin_check_memo_hits_total").increment((total - calls) as u64);
        metrics::counter!("slipway_plugin_calls_total", "kind" => "status").increment(calls as u64);
        let out = out.into_inner().unwrap_or_else(PoisonError::into_inner);
        Ok(out.into_iter().map(|r| r.expect("every input answered")).collect())
    }

    /// The script and bytecode of a revision, as a batch needs them.
    async fn code(&self, triple: &PluginTriple) -> Result<Code, Error> {
        let script = self.script(triple).await?;
        let bytecode = self.bytecode(&script).await?;
        Ok(Code { module: script.module_name(), script, bytecode })
    }

    /// Calls per piece of a batch: small enough that the first piece is soon encoded and
    /// the last soon decoded (the worker waits for both), large enough that a piece's frame
    /// and header cost little per call, and every worker gets a share.
    fn piece_size(&self, calls: usize) -> usize {
        let workers = self.inner.config.worker_count();
        calls.div_ceil(workers).clamp(1, PIECE_CALLS.min(self.inner.config.max_batch.max(1)))
    }
}

/// Calls per piece of a large batch.
const PIECE_CALLS: usize = 64;
/// Calls in the first piece of a status batch.
const FIRST_PIECE_CALLS: usize = 8;

/// Per call of a piece, the input it judges and what to remember of its verdict.
type PieceInputs = Vec<(usize, Option<Remember>)>;

/// What a check's verdict is remembered under.
struct Remember {
    instance: InstanceKey,
    fingerprint: Fingerprint,
}

/// A check either becomes a call or is answered already (by the memo, or refused).
enum Encoded {
    Call(Option<Remember>),
    Answered(Result<CheckVerdict, Error>),
}

/// Appends a check's arguments to `calls` unless the memo answers it.
fn encode_check(
    memo: &Memo,
    fingerprinter: &Fingerprinter,
    triple: &Arc<PluginTriple>,
    input: &CheckInput,
    calls: &mut CallList,
) -> Encoded {
    if !input.instance.fits() || !input.observation.fits() {
        let error = wire::WireError::TooDeep;
        return Encoded::Answered(Err(Error::Worker(format!("arguments of {}: {error}", input.instance_id))));
    }
    // The caller's bytes are the call's: copied, not walked.
    let args = calls.push_parts(&[
        &[wire::ARRAY],
        input.instance.as_bytes(),
        input.observation.as_bytes(),
        &[wire::END],
    ]);
    if !input.memo {
        return Encoded::Call(None);
    }
    // The arguments as sent are the fingerprint's input.
    let fingerprint = fingerprinter.fingerprint(args);
    let instance = memo.instance_key(&input.instance_id);
    match memo.get(instance, fingerprint, triple) {
        Some(verdict) => {
            calls.pop();
            Encoded::Answered(Ok(verdict))
        }
        None => Encoded::Call(Some(Remember { instance, fingerprint })),
    }
}

/// What a batch of one revision runs: the stored script and its compiled bytecode.
struct Code {
    script: Arc<StoredScript>,
    module: String,
    bytecode: Arc<Vec<u8>>,
}

impl Code {
    fn job<'a>(&'a self, triple: &'a PluginTriple, function: &'a str) -> Job<'a> {
        Job {
            triple,
            file: &self.module,
            code_hash: &self.script.code_hash,
            bytecode: &self.bytecode,
            function,
        }
    }
}

/// A call's arguments (one array) in the wire form.
fn encode_args(args: &[WireValue], buf: &mut Vec<u8>) -> Result<(), wire::WireError> {
    if !args.iter().all(WireValue::fits) {
        return Err(wire::WireError::TooDeep);
    }
    buf.push(wire::ARRAY);
    for arg in args {
        buf.extend_from_slice(arg.as_bytes());
    }
    buf.push(wire::END);
    Ok(())
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
