//! Builds and their components as rows: the durable queue. A build is stored before the
//! API answers 202, so an accepted build survives any crash after that.

use serde::{Deserialize, Serialize};
use slipway_registry::manifest::ImageRef;
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe};

use super::PipelineError;
use super::model::{BuildState, BuildSubmission, BuildView, ComponentSpec, ComponentView, PublishedPackage};
use crate::cluster::Cluster;
use crate::storage::{Dialect, ROWS_PER_STATEMENT, now_ms, value_rows};

/// A component write's fence: its build is running under this replica's lease (`$4`).
const HELD: &str = "EXISTS (SELECT 1 FROM builds WHERE id = $2 AND state = 'running' AND owner = $4)";
/// The same fence for a statement whose build id is `$7` and owner `$11`.
const HELD_11: &str = "EXISTS (SELECT 1 FROM builds WHERE id = $7 AND state = 'running' AND owner = $11)";

pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "server-0002-builds",
        "CREATE TABLE builds (
        id TEXT PRIMARY KEY,
        app TEXT NOT NULL,
        version TEXT NOT NULL,
        tags TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        requested_by TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        finished_at_ms BIGINT,
        package_version TEXT,
        package_digest TEXT
    );
    CREATE INDEX builds_state ON builds (state, created_at_ms);
    CREATE INDEX builds_app ON builds (app, created_at_ms);
    CREATE TABLE build_components (
        build_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        name TEXT NOT NULL,
        component_type TEXT NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        plugin TEXT,
        image TEXT,
        digest TEXT,
        result TEXT,
        PRIMARY KEY (build_id, name)
    )",
    ),
    (
        "server-0005-build-leases",
        // A running build belongs to the replica holding its lease (`owner`) until
        // `lease_until_ms` by the database's clock; `attempts` counts the claims of this run.
        "ALTER TABLE builds ADD COLUMN owner TEXT;
         ALTER TABLE builds ADD COLUMN lease_until_ms BIGINT;
         ALTER TABLE builds ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
         CREATE INDEX builds_owner ON builds (owner, state)",
    ),
];

type BuildRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);
type ComponentRow = (String, String, String, Option<String>, Option<String>, Option<String>, Option<String>);

/// A component's outcome, written when it finishes.
pub struct ComponentResult<'a> {
    pub state: BuildState,
    pub reason: Option<&'a str>,
    pub plugin: Option<&'a str>,
    pub image: Option<&'a str>,
    pub digest: Option<&'a str>,
    /// What a retry needs to publish it without building it again.
    pub built: Option<&'a BuiltComponent>,
}

/// A finished component's package input, kept so a retry reuses it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuiltComponent {
    pub images: Vec<ImageRef>,
    pub parameters: serde_json::Value,
    pub plugin: String,
    /// What the build read; recorded with the component package so a later build with the
    /// same inputs reuses it.
    #[serde(default)]
    pub inputs_digest: Option<String>,
    /// Why nothing was built (an existing package reused, prebuilt images): the component
    /// ends `skipped` with this reason.
    #[serde(default)]
    pub skipped: Option<String>,
    /// The version of the component package reused; the app package carries it unchanged.
    #[serde(default)]
    pub reused_version: Option<String>,
}

/// The head of a builds insert; `VALUES` rows follow in the order of its columns.
pub const INSERT_BUILDS: &str =
    "INSERT INTO builds (id, app, version, tags, state, requested_by, created_at_ms) VALUES ";
/// The head of a components insert, as `INSERT_BUILDS`.
pub const INSERT_COMPONENTS: &str =
    "INSERT INTO build_components (build_id, position, name, component_type, spec, state) VALUES ";

/// A validated build with its id, not stored yet: stored alone by the pipeline, or in a
/// caller's transaction beside what must commit with it (a trigger's delivery claims).
pub struct NewBuild {
    pub id: String,
    pub app: String,
    pub submission: BuildSubmission,
    pub requested_by: String,
    pub created_at_ms: i64,
}

impl NewBuild {
    /// Inserts the build and its components on `conn`; the caller's transaction commits
    /// them.
    pub async fn insert(&self, conn: &mut AnyConnection) -> Result<(), PipelineError> {
        Self::insert_all(conn, &[self]).await
    }

    /// Inserts builds and their components on `conn` with one statement per table (per
    /// chunk of rows); the caller's transaction commits them.
    pub async fn insert_all(conn: &mut AnyConnection, builds: &[&NewBuild]) -> Result<(), PipelineError> {
        const BUILD_COLUMNS: usize = 7;
        const COMPONENT_COLUMNS: usize = 6;
        for chunk in builds.chunks(ROWS_PER_STATEMENT) {
            let sql = format!("{INSERT_BUILDS}{}", value_rows(chunk.len(), BUILD_COLUMNS));
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for build in chunk {
                query = query
                    .bind(&build.id)
                    .bind(&build.app)
                    .bind(&build.submission.version)
                    .bind(serde_json::to_string(&build.submission.tags)?)
                    .bind(BuildState::Queued.as_str())
                    .bind(&build.requested_by)
                    .bind(build.created_at_ms);
            }
            query.execute(&mut *conn).await?;
        }
        let components: Vec<(&NewBuild, usize, &ComponentSpec)> = builds
            .iter()
            .flat_map(|build| {
                build.submission.components.iter().enumerate().map(move |(p, c)| (*build, p, c))
            })
            .collect();
        for chunk in components.chunks(ROWS_PER_STATEMENT) {
            let sql = format!("{INSERT_COMPONENTS}{}", value_rows(chunk.len(), COMPONENT_COLUMNS));
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (build, position, component) in chunk {
                query = query
                    .bind(&build.id)
                    .bind(*position as i64)
                    .bind(&component.name)
                    .bind(&component.component_type)
                    .bind(serde_json::to_string(component)?)
                    .bind(BuildState::Queued.as_str());
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// The build as stored: queued, nothing run yet. Answering with it saves reading back
    /// what was just written.
    pub fn view(&self) -> BuildView {
        let components = self
            .submission
            .components
            .iter()
            .map(|c| ComponentView {
                name: c.name.clone(),
                component_type: c.component_type.clone(),
                state: BuildState::Queued,
                reason: None,
                plugin: None,
                image: None,
                digest: None,
            })
            .collect();
        BuildView {
            id: self.id.clone(),
            app: self.app.clone(),
            version: self.submission.version.clone(),
            tags: self.submission.tags.clone(),
            state: BuildState::Queued,
            reason: None,
            requested_by: self.requested_by.clone(),
            created_at_ms: self.created_at_ms,
            finished_at_ms: None,
            package: None,
            replica: None,
            attempts: 0,
            components,
        }
    }
}

/// The builds table as one replica sees it: every write to a running build is fenced by
/// that replica's lease, so a replica that lost a build to another cannot change it.
#[derive(Clone)]
pub struct BuildStore {
    pub(super) db: AnyPool,
    /// This replica's id, the `owner` of the builds it runs.
    pub(super) owner: String,
    pub(super) dialect: Dialect,
    pub(super) lease_ms: i64,
}

impl BuildStore {
    pub fn new(db: AnyPool, cluster: &Cluster) -> Self {
        Self {
            db,
            owner: cluster.id().to_owned(),
            dialect: cluster.dialect(),
            lease_ms: cluster.lease().as_millis() as i64,
        }
    }

    /// Stores a validated build and its components in one transaction.
    pub async fn insert(&self, build: &NewBuild) -> Result<(), PipelineError> {
        let mut tx = self.db.begin().await?;
        build.insert(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The components in order, each with its kept result when an earlier run finished it
    /// (built or skipped).
    pub async fn components(
        &self,
        id: &str,
    ) -> Result<Vec<(ComponentSpec, Option<BuiltComponent>)>, PipelineError> {
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT spec, state, result FROM build_components WHERE build_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.db)
        .await?;
        rows.into_iter()
            .map(|(spec, state, result)| {
                let finished =
                    state == BuildState::Succeeded.as_str() || state == BuildState::Skipped.as_str();
                let kept = match (finished, result) {
                    (true, Some(result)) => Some(serde_json::from_str(&result)?),
                    _ => None,
                };
                Ok((serde_json::from_str(&spec)?, kept))
            })
            .collect()
    }

    /// Ends a build that has not finished as cancelled, with its unfinished components.
    /// False when it had already finished.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<bool, PipelineError> {
        let mut tx = self.db.begin().await?;
        let changed = sqlx::query(
            "UPDATE builds SET state = $1, reason = $2, finished_at_ms = $3 WHERE id = $4 AND state IN ($5, $6)",
        )
        .bind(BuildState::Cancelled.as_str())
        .bind(reason)
        .bind(now_ms())
        .bind(id)
        .bind(BuildState::Queued.as_str())
        .bind(BuildState::Running.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "UPDATE build_components SET state = $1, reason = $2 WHERE build_id = $3 AND state IN ($4, $5)",
        )
        .bind(BuildState::Cancelled.as_str())
        .bind(reason)
        .bind(id)
        .bind(BuildState::Queued.as_str())
        .bind(BuildState::Running.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(changed == 1)
    }

    /// Queues a failed or cancelled build again; only its components that did not succeed
    /// (or were skipped) will run. False when the build is in another state.
    pub async fn requeue(&self, id: &str) -> Result<bool, PipelineError> {
        let mut tx = self.db.begin().await?;
        let changed = sqlx::query(
            "UPDATE builds SET state = $1, reason = NULL, finished_at_ms = NULL, owner = NULL, lease_until_ms = NULL,
                 attempts = 0
             WHERE id = $2 AND state IN ($3, $4)",
        )
        .bind(BuildState::Queued.as_str())
        .bind(id)
        .bind(BuildState::Failed.as_str())
        .bind(BuildState::Cancelled.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "UPDATE build_components SET state = $1, reason = NULL WHERE build_id = $2 AND state NOT IN ($3, $4)",
        )
        .bind(BuildState::Queued.as_str())
        .bind(id)
        .bind(BuildState::Succeeded.as_str())
        .bind(BuildState::Skipped.as_str())
        .execute(&mut *tx)
        .await?;
        if changed == 1 {
            tx.commit().await?;
        }
        Ok(changed == 1)
    }

    pub async fn set_component_state(
        &self,
        id: &str,
        name: &str,
        state: BuildState,
    ) -> Result<(), PipelineError> {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE build_components SET state = $1 WHERE build_id = $2 AND name = $3 AND {HELD}"
        )))
        .bind(state.as_str())
        .bind(id)
        .bind(name)
        .bind(&self.owner)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    pub async fn finish_component(
        &self,
        id: &str,
        name: &str,
        result: ComponentResult<'_>,
    ) -> Result<(), PipelineError> {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE build_components SET state = $1, reason = $2, plugin = $3, image = $4, digest = $5, result = $6
             WHERE build_id = $7 AND name = $8 AND state IN ($9, $10) AND {HELD_11}"
        )))
        .bind(result.state.as_str())
        .bind(result.reason)
        .bind(result.plugin)
        .bind(result.image)
        .bind(result.digest)
        .bind(result.built.map(serde_json::to_string).transpose()?)
        .bind(id)
        .bind(name)
        .bind(BuildState::Queued.as_str())
        .bind(BuildState::Running.as_str())
        .bind(&self.owner)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Ends a running build this replica holds; nothing happens if it lost the lease.
    pub async fn finish(
        &self,
        id: &str,
        state: BuildState,
        reason: Option<&str>,
        package: Option<&PublishedPackage>,
    ) -> Result<(), PipelineError> {
        sqlx::query(
            "UPDATE builds SET state = $1, reason = $2, finished_at_ms = $3, package_version = $4, package_digest = $5,
                 owner = NULL, lease_until_ms = NULL
             WHERE id = $6 AND state = $7 AND owner = $8",
        )
        .bind(state.as_str())
        .bind(reason)
        .bind(now_ms())
        .bind(package.map(|p| p.version.as_str()))
        .bind(package.map(|p| p.digest.as_str()))
        .bind(id)
        .bind(BuildState::Running.as_str())
        .bind(&self.owner)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<BuildView, PipelineError> {
        let row: Option<BuildRow> = sqlx::query_as(
            "SELECT id, app, version, tags, state, reason, requested_by, created_at_ms, finished_at_ms, package_version,
                 package_digest, owner, attempts
             FROM builds WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db)
        .await?;
        let row = row.ok_or_else(|| PipelineError::NotFound { id: id.into() })?;
        let components: Vec<ComponentRow> = sqlx::query_as(
            "SELECT name, component_type, state, reason, plugin, image, digest
             FROM build_components WHERE build_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.db)
        .await?;
        to_view(row, components)
    }

    /// Builds newest first, optionally of one app and in one state.
    pub async fn list(
        &self,
        app: Option<&str>,
        state: Option<BuildState>,
        limit: i64,
    ) -> Result<Vec<BuildView>, PipelineError> {
        let ids: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM builds WHERE ($1 IS NULL OR app = $1) AND ($2 IS NULL OR state = $2)
             ORDER BY created_at_ms DESC, id DESC LIMIT $3",
        )
        .bind(app)
        .bind(state.map(BuildState::as_str))
        .bind(limit)
        .fetch_all(&self.db)
        .await?;
        let mut views = Vec::with_capacity(ids.len());
        for (id,) in ids {
            views.push(self.get(&id).await?);
        }
        Ok(views)
    }
}

fn parse_state(text: &str) -> Result<BuildState, PipelineError> {
    BuildState::parse(text).ok_or_else(|| PipelineError::Corrupt(format!("unknown build state `{text}`")))
}

fn to_view(row: BuildRow, components: Vec<ComponentRow>) -> Result<BuildView, PipelineError> {
    let (
        id,
        app,
        version,
        tags,
        state,
        reason,
        requested_by,
        created_at_ms,
        finished_at_ms,
        pv,
        pd,
        replica,
        attempts,
    ) = row;
    let package = pv.zip(pd).map(|(version, digest)| PublishedPackage { version, digest });
    let components = components
        .into_iter()
        .map(|(name, component_type, state, reason, plugin, image, digest)| {
            Ok(ComponentView {
                name,
                component_type,
                state: parse_state(&state)?,
                reason,
                plugin,
                image,
                digest,
            })
        })
        .collect::<Result<_, PipelineError>>()?;
    Ok(BuildView {
        id,
        app,
        version,
        tags: serde_json::from_str(&tags)?,
        state: parse_state(&state)?,
        reason,
        requested_by,
        created_at_ms,
        finished_at_ms,
        package,
        replica,
        attempts,
        components,
    })
}
