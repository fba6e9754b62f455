//! One stage: its evolving image config, its layers, its cache chain, and every step except
//! `COPY`/`ADD` (in `copy.rs`). A root file system is unpacked only when a step must look
//! at one (RUN, WORKDIR creation, name lookups, COPY destinations) and kept up to date lazily.

use std::collections::BTreeMap;
use std::path::Path;

use crate::digest::KeyHasher;
use crate::dockerfile::expand::{Vars, expand_word};
use crate::dockerfile::{CommandForm, Op, Step};
use crate::error::{Error, Result};
use crate::image::{DEFAULT_PATH, Empty, Healthcheck, History, ImageConfig, LayerRef};
use crate::layer::{Content, LayerEntry};
use crate::layer_cache::CacheRecord;
use crate::rootfs::{Snapshot, apply_layer};

use super::Build;
use super::run::{RunSpec, run};
use super::users;

/// A stage being built (or finished, for `FROM <stage>` and `COPY --from`).
pub struct StageState {
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
    /// Cache key of everything so far; each step's key extends it.
    pub chain: String,
    pub args: Vars,
    cmd_set: bool,
    root: Option<tempfile::TempDir>,
    applied: usize,
}

impl StageState {
    pub fn from_image(config: ImageConfig, layers: Vec<LayerRef>, chain: String) -> Self {
        StageState { config, layers, chain, args: Vars::new(), cmd_set: false, root: None, applied: 0 }
    }

    /// Variables for expansion: declared build args, overridden by `ENV`.
    pub fn vars(&self) -> Vars {
        let mut vars = self.args.clone();
        for kv in self.config.config.env.iter().flatten() {
            if let Some((k, v)) = kv.split_once('=') {
                vars.insert(k.into(), v.into());
            }
        }
        vars
    }

    pub fn workdir(&self) -> String {
        self.config.config.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into())
    }

    /// The root file system with every layer applied.
    pub async fn root(&mut self, build: &Build<'_>) -> Result<&Path> {
        if self.root.is_none() {
            let dir = &build.backend.settings.work_dir;
            self.root = Some(tempfile::TempDir::new_in(dir).map_err(Error::io(dir))?);
        }
        let root = self.root.as_ref().expect("just created").path().to_path_buf();
        while self.applied < self.layers.len() {
            let blob = build.backend.store.blob(&self.layers[self.applied].digest).await?;
            let target = root.clone();
            tokio::task::spawn_blocking(move || apply_layer(&target, &blob))
                .await
                .map_err(|e| Error::ImageData(format!("unpack task failed: {e}")))??;
            self.applied += 1;
        }
        Ok(self.root.as_ref().expect("just created").path())
    }

    fn push_layer(&mut self, key: String, record: &CacheRecord, created_by: &str) {
        self.chain = key;
        if let Some(layer) = &record.layer {
            self.layers.push(layer.clone());
        }
        self.history(created_by, record.layer.is_none());
    }

    fn history(&mut self, created_by: &str, empty_layer: bool) {
        self.config.history.push(History { created: None, created_by: Some(created_by.into()), empty_layer });
    }

    fn shell_command(&self, form: &CommandForm) -> Vec<String> {
        match form {
            CommandForm::Exec(argv) => argv.clone(),
            CommandForm::Shell(text) => {
                let mut argv =
                    self.config.config.shell.clone().unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
                argv.push(text.clone());
                argv
            }
        }
    }
}

impl Build<'_> {
    pub(super) fn expand(&self, word: &str, vars: &Vars, step: &Step) -> Result<String> {
        expand_word(word, vars, self.df.escape).map_err(|message| Error::Expansion {
            file: self.df.file.clone(),
            line: step.line,
            message,
        })
    }

    fn global_vars(&self) -> Vars {
        self.df
            .global_args
            .iter()
            .filter_map(|(name, default)| {
                let value = self.request.build_args.get(name).cloned().or_else(|| default.clone())?;
                Some((name.clone(), value))
            })
            .collect()
    }

    /// Starts a stage from `scratch`, an earlier stage, or a pulled image, then runs its steps.
    pub(super) async fn run_stage(&mut self, index: usize) -> Result<StageState> {
        let stage = self.df.stages[index].clone();
        let globals = self.global_vars();
        let base = expand_word(&stage.base, &globals, self.df.escape)
            .map_err(|message| Error::Expansion { file: self.df.file.clone(), line: stage.line, message })?;
        self.log.line(format!("[stage {index}] FROM {base}"));
        let mut state = match self.stage_index(&base) {
            Some(dep) => {
                let parent = self.stages[dep].as_ref().expect("dependencies are built first");
                let mut state = StageState::from_image(
                    parent.config.clone(),
                    parent.layers.clone(),
                    parent.chain.clone(),
                );
                state.config.history = parent.config.history.clone();
                state
            }
            None => self.pull_stage(&base).await?,
        };
        if state.config.config.env_var("PATH").is_none() {
            state.config.config.env.get_or_insert_with(Vec::new).push(DEFAULT_PATH.into());
        }
        state.config.config.on_build = None;
        for step in &stage.steps {
            self.log.line(format!("[stage {index}] {}", step.text));
            self.step(&mut state, step, &globals).await?;
        }
        Ok(state)
    }

    pub(super) async fn pull_stage(&mut self, base: &str) -> Result<StageState> {
        if base == "scratch" {
            let config =
                ImageConfig { architecture: "amd64".into(), os: "linux".into(), ..Default::default() };
            return Ok(StageState::from_image(
                config,
                Vec::new(),
                KeyHasher::default().part("scratch").finish(),
            ));
        }
        let image = self.registry.pull(base, &self.backend.store).await?;
        let mut config = image.config;
        config.history.retain(|h| h.created_by.is_some() || !h.empty_layer);
        config.created = None;
        let chain = KeyHasher::default().part("image").part(&image.manifest_digest).finish();
        Ok(StageState::from_image(config, image.layers, chain))
    }

    async fn step(&mut self, state: &mut StageState, step: &Step, globals: &Vars) -> Result<()> {
        let vars = state.vars();
        let x = |w: &str| self.expand(w, &vars, step);
        let rc = &mut state.config.config;
        let mut effect = String::new();
        match &step.op {
            Op::Arg(decls) => {
                for (name, default) in decls {
                    let default = default.as_deref().map(&x).transpose()?;
                    let value = self
                        .request
                        .build_args
                        .get(name)
                        .cloned()
                        .or(default)
                        .or_else(|| globals.get(name).cloned());
                    effect.push_str(&format!("{name}={value:?};"));
                    if let Some(value) = value {
                        state.args.insert(name.clone(), value);
                    }
                }
            }
            Op::Env(pairs) => {
                for (k, v) in pairs {
                    let (k, v) = (x(k)?, x(v)?);
                    rc.set_env(&k, &v);
                }
            }
            Op::Label(pairs) => {
                for (k, v) in pairs {
                    rc.labels.get_or_insert_with(BTreeMap::new).insert(x(k)?, x(v)?);
                }
            }
            Op::User(user) => rc.user = Some(x(user)?),
            Op::Expose(ports) => {
                for port in ports {
                    let port = x(port)?;
                    let port = if port.contains('/') { port.to_lowercase() } else { format!("{port}/tcp") };
                    rc.exposed_ports.get_or_insert_with(BTreeMap::new).insert(port, Empty {});
                }
            }
            Op::Volume(paths) => {
                for path in paths {
                    rc.volumes.get_or_insert_with(BTreeMap::new).insert(x(path)?, Empty {});
                }
            }
            Op::StopSignal(signal) => rc.stop_signal = Some(x(signal)?),
            Op::Cmd(form) => {
                state.config.config.cmd = Some(state.shell_command(form));
                state.cmd_set = true;
            }
            Op::Entrypoint(form) => {
                let argv = state.shell_command(form);
                let rc = &mut state.config.config;
                rc.entrypoint = Some(argv);
                if !state.cmd_set {
                    rc.cmd = None;
                }
            }
            Op::Shell(argv) => rc.shell = Some(argv.clone()),
            Op::Healthcheck(None) => {
                rc.healthcheck = Some(Healthcheck { test: vec!["NONE".into()], ..Default::default() })
            }
            Op::Healthcheck(Some((flags, form))) => {
                let test = match form {
                    CommandForm::Exec(argv) => {
                        std::iter::once("CMD".to_string()).chain(argv.iter().cloned()).collect()
                    }
                    CommandForm::Shell(text) => vec!["CMD-SHELL".into(), text.clone()],
                };
                let ns = |d: Option<std::time::Duration>| d.map_or(0, |d| d.as_nanos() as i64);
                rc.healthcheck = Some(Healthcheck {
                    test,
                    interval: ns(flags.interval),
                    timeout: ns(flags.timeout),
                    start_period: ns(flags.start_period),
                    retries: flags.retries.map_or(0, i64::from),
                });
            }
            Op::Onbuild(trigger) => rc.on_build.get_or_insert_with(Vec::new).push(trigger.clone()),
            Op::Maintainer(_) => {}
            Op::Workdir(dir) => {
                let dir = x(dir)?;
                let joined = if dir.starts_with('/') { dir } else { format!("{}/{dir}", state.workdir()) };
                let clean = format!("/{}", crate::context::relative_inside(&joined).unwrap_or_default());
                state.config.config.working_dir = Some(clean.clone());
                return self.workdir_layer(state, step, &clean).await;
            }
            Op::Copy { sources, dest, flags, add } => {
                return self.copy(state, step, sources, dest, flags, *add).await;
            }
            Op::Run { command, .. } => return self.run_step(state, step, command).await,
        }
        // Metadata steps make no layer, but later steps depend on them, so they extend the chain.
        let mut key = KeyHasher::default();
        key.part(&state.chain).part(&step.text).part(&effect);
        key.part(serde_json::to_vec(&state.config.config).map_err(|e| Error::ImageData(e.to_string()))?);
        state.chain = key.finish();
        state.history(&step.text, true);
        Ok(())
    }

    /// Takes a step's layer from the cache when present; true on a hit.
    pub(super) async fn cache_hit(&mut self, state: &mut StageState, key: &str, step: &Step) -> Result<bool> {
        let Some(record) = self.backend.cache.get(key).await? else { return Ok(false) };
        self.layers_cached += 1;
        self.log.line("  cached");
        state.push_layer(key.to_string(), &record, &step.text);
        Ok(true)
    }

    /// Writes a step's layer, records it in the cache and adds it to the stage;
    /// `root_has_them` says the stage's unpacked root already holds the change (RUN).
    pub(super) async fn commit_layer(
        &mut self,
        state: &mut StageState,
        key: String,
        step: &Step,
        entries: Vec<LayerEntry>,
        root_has_them: bool,
    ) -> Result<()> {
        let record = if entries.is_empty() {
            CacheRecord { layer: None }
        } else {
            let mtime = self.epoch.max(0) as u64;
            let blob = tokio::task::spawn_blocking(move || {
                crate::layer::write_tar(&entries, mtime).map(|tar| crate::layer::compress(&tar))
            })
            .await
            .map_err(|e| Error::ImageData(format!("layer task failed: {e}")))??;
            self.backend.store.put_blob(&blob.layer.digest, blob.blob).await?;
            self.layers_built += 1;
            self.log.line(format!("  layer {} ({} bytes)", blob.layer.digest, blob.layer.size));
            CacheRecord { layer: Some(blob.layer) }
        };
        self.backend.cache.put(&key, &record).await?;
        let up_to_date = state.applied == state.layers.len();
        state.push_layer(key, &record, &step.text);
        if root_has_them && up_to_date {
            state.applied = state.layers.len();
        }
        Ok(())
    }

    /// Docker creates a missing `WORKDIR` (root-owned, 0755) as a layer of its own.
    async fn workdir_layer(&mut self, state: &mut StageState, step: &Step, dir: &str) -> Result<()> {
        let key = KeyHasher::default().part(&state.chain).part("WORKDIR").part(dir).finish();
        if self.cache_hit(state, &key, step).await? {
            return Ok(());
        }
        let entries = missing_dirs(state.root(self).await?, dir, 0o755, (0, 0));
        self.commit_layer(state, key, step, entries, false).await
    }

    async fn run_step(&mut self, state: &mut StageState, step: &Step, command: &CommandForm) -> Result<()> {
        let argv = state.shell_command(command);
        let mut env = state.config.config.env.clone().unwrap_or_default();
        for (k, v) in &state.args {
            if state.config.config.env_var(k).is_none() {
                env.push(format!("{k}={v}"));
            }
        }
        let user = state.config.config.user.clone().unwrap_or_default();
        let workdir = state.workdir();
        let mut key = KeyHasher::default();
        key.part(&state.chain).part("RUN").part(&user).part(&workdir);
        for part in argv.iter().chain(&env) {
            key.part(part);
        }
        let key = key.finish();
        if self.cache_hit(state, &key, step).await? {
            return Ok(());
        }
        let log = self.log.clone();
        let (file, line) = (self.df.file.clone(), step.line);
        let entries = {
            let root = state.root(self).await?.to_path_buf();
            let (uid, gid) = if user.is_empty() {
                (0, 0)
            } else {
                users::resolve(Some(&root), &user, false).map_err(|reason| Error::RunFailed {
                    file: file.clone(),
                    line,
                    code: -1,
                    tail: reason,
                })?
            };
            let spec = RunSpec { root: root.clone(), argv, env, workdir, uid, gid };
            tokio::task::spawn_blocking(move || {
                let before = Snapshot::take(&spec.root)?;
                let result = run(&spec, |l| log.line(format!("  | {l}")))?;
                if result.code != 0 {
                    return Err(Error::RunFailed {
                        file,
                        line,
                        code: result.code,
                        tail: result.tail.join("\n"),
                    });
                }
                before.diff(&spec.root)
            })
            .await
            .map_err(|e| Error::ImageData(format!("RUN task failed: {e}")))??
        };
        self.commit_layer(state, key, step, entries, true).await
    }
}

/// Directory entries for the components of `dir` that do not exist under `root`.
pub fn missing_dirs(root: &Path, dir: &str, mode: u32, (uid, gid): (u32, u32)) -> Vec<LayerEntry> {
    let mut path = String::new();
    let mut out = Vec::new();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(part);
        if root.join(&path).symlink_metadata().is_err() {
            out.push(LayerEntry {
                path: path.clone(),
                content: Content::Dir,
                mode,
                uid: uid.into(),
                gid: gid.into(),
            });
        }
    }
    out
}
