//! Persistence in the service's database (portable SQL for SQLite and PostgreSQL):
//! clusters (with their kubeconfig, a secret), app instances, component instances with
//! their last status, and the transition history.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::{Any, AnyPool, AssertSqlSafe, Row, Transaction};

use crate::Error;
use crate::events::Transition;
use crate::health::Health;
use crate::model::{AppInstanceSpec, ComponentInstanceSpec};

pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "status-0001-instances-clusters-history",
        "CREATE TABLE status_clusters (
        name TEXT PRIMARY KEY,
        server TEXT NOT NULL,
        kubeconfig TEXT NOT NULL,
        registered_at_ms BIGINT NOT NULL
    );
    CREATE TABLE status_app_instances (
        id TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    );
    CREATE TABLE status_instances (
        id TEXT PRIMARY KEY,
        app_instance TEXT NOT NULL,
        spec TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        since_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    );
    CREATE TABLE status_transitions (
        instance_id TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        from_status TEXT NOT NULL,
        to_status TEXT NOT NULL,
        reason TEXT NOT NULL,
        app_instance TEXT NOT NULL,
        component TEXT NOT NULL
    );
    CREATE INDEX status_transitions_instance ON status_transitions (instance_id, at_ms)",
    ),
    // What each bulk change touched, so the other replicas of a sharded fleet load just
    // those rows (and replay what they missed while they were not listening).
    (
        "status-0002-changes",
        "CREATE TABLE status_changes (
            id TEXT PRIMARY KEY,
            at_ms BIGINT NOT NULL,
            ids TEXT NOT NULL
        );
        CREATE INDEX status_changes_at ON status_changes (at_ms)",
    ),
];

/// Changes older than this are pruned from the feed: a replica away for longer reloads
/// everything when it comes back.
pub const CHANGES_KEPT_MS: i64 = 3_600_000;

/// Rows per multi-row statement. Binding costs sqlx's SQLite driver time that grows with
/// the square of the parameters in one statement (it looks up every `$n` by name, and
/// SQLite finds a name by scanning the list), so 500 rows of 7 columns spent more time
/// binding than writing; 64 rows keep a statement under 500 parameters.
const CHUNK: usize = 64;

/// A stored component instance with its last known status.
pub struct StoredInstance {
    pub spec: ComponentInstanceSpec,
    pub status: Health,
    pub reason: String,
    pub since_ms: i64,
}

pub struct StoredCluster {
    pub name: String,
    pub server: String,
    pub kubeconfig: String,
    pub registered_at_ms: i64,
}

/// `($1, $2, …), ($n+1, …)` for a multi-row VALUES list. Numbered placeholders are the form
/// both SQLite and PostgreSQL read; sqlx's `QueryBuilder` writes `?` for the Any driver,
/// which PostgreSQL refuses.
fn rows(count: usize, columns: usize) -> String {
    let row = |r: usize| {
        let values: Vec<String> = (1..=columns).map(|c| format!("${}", r * columns + c)).collect();
        format!("({})", values.join(", "))
    };
    (0..count).map(row).collect::<Vec<_>>().join(", ")
}

fn corrupt(what: &'static str, id: &str, e: impl std::fmt::Display) -> Error {
    Error::Corrupt { what, id: id.to_owned(), message: e.to_string() }
}

pub async fn load_clusters(db: &AnyPool) -> Result<Vec<StoredCluster>, Error> {
    let rows =
        sqlx::query("SELECT name, server, kubeconfig, registered_at_ms FROM status_clusters ORDER BY name")
            .fetch_all(db)
            .await?;
    rows.iter()
        .map(|r| {
            Ok(StoredCluster {
                name: r.try_get(0)?,
                server: r.try_get(1)?,
                kubeconfig: r.try_get(2)?,
                registered_at_ms: r.try_get(3)?,
            })
        })
        .collect()
}

pub async fn save_cluster(db: &AnyPool, c: &StoredCluster) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO status_clusters (name, server, kubeconfig, registered_at_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE SET server = excluded.server, kubeconfig = excluded.kubeconfig,
         registered_at_ms = excluded.registered_at_ms",
    )
    .bind(&c.name)
    .bind(&c.server)
    .bind(&c.kubeconfig)
    .bind(c.registered_at_ms)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn load_app_instances(db: &AnyPool) -> Result<Vec<AppInstanceSpec>, Error> {
    let rows = sqlx::query("SELECT id, spec FROM status_app_instances").fetch_all(db).await?;
    rows.iter().map(app_instance_row).collect()
}

pub async fn load_instances(db: &AnyPool) -> Result<Vec<StoredInstance>, Error> {
    let rows =
        sqlx::query("SELECT id, spec, status, reason, since_ms FROM status_instances").fetch_all(db).await?;
    rows.iter().map(instance_row).collect()
}

/// The app instances among `ids` that exist (a missing one was deleted).
pub async fn load_app_instances_by_id(db: &AnyPool, ids: &[String]) -> Result<Vec<AppInstanceSpec>, Error> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let sql = format!("SELECT id, spec FROM status_app_instances WHERE id IN ({})", list(chunk.len()));
        let rows =
            chunk.iter().fold(sqlx::query(AssertSqlSafe(sql)), |q, id| q.bind(id)).fetch_all(db).await?;
        out.extend(rows.iter().map(app_instance_row).collect::<Result<Vec<_>, _>>()?);
    }
    Ok(out)
}

/// The component instances among `ids` that exist, with their last status.
pub async fn load_instances_by_id(db: &AnyPool, ids: &[String]) -> Result<Vec<StoredInstance>, Error> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT id, spec, status, reason, since_ms FROM status_instances WHERE id IN ({})",
            list(chunk.len())
        );
        let rows =
            chunk.iter().fold(sqlx::query(AssertSqlSafe(sql)), |q, id| q.bind(id)).fetch_all(db).await?;
        out.extend(rows.iter().map(instance_row).collect::<Result<Vec<_>, _>>()?);
    }
    Ok(out)
}

fn app_instance_row(r: &sqlx::any::AnyRow) -> Result<AppInstanceSpec, Error> {
    let id: String = r.try_get(0)?;
    let spec: String = r.try_get(1)?;
    serde_json::from_str(&spec).map_err(|e| corrupt("app instance", &id, e))
}

fn instance_row(r: &sqlx::any::AnyRow) -> Result<StoredInstance, Error> {
    let id: String = r.try_get(0)?;
    let spec: String = r.try_get(1)?;
    let status: String = r.try_get(2)?;
    Ok(StoredInstance {
        spec: serde_json::from_str(&spec).map_err(|e| corrupt("instance", &id, e))?,
        status: status.parse().map_err(|e| corrupt("instance", &id, e))?,
        reason: r.try_get(3)?,
        since_ms: r.try_get(4)?,
    })
}

/// One entry of the change feed: the ids a bulk change touched, as JSON.
pub struct StoredChange {
    pub id: String,
    pub at_ms: i64,
    pub ids: String,
}

pub async fn load_change(db: &AnyPool, id: &str) -> Result<Option<StoredChange>, Error> {
    let row: Option<(String, i64, String)> =
        sqlx::query_as("SELECT id, at_ms, ids FROM status_changes WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(id, at_ms, ids)| StoredChange { id, at_ms, ids }))
}

/// Changes made at or after `at_ms`, oldest first.
pub async fn changes_since(db: &AnyPool, at_ms: i64) -> Result<Vec<StoredChange>, Error> {
    let rows: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT id, at_ms, ids FROM status_changes WHERE at_ms >= $1 ORDER BY at_ms, id")
            .bind(at_ms)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().map(|(id, at_ms, ids)| StoredChange { id, at_ms, ids }).collect())
}

/// Every instance's last recorded status: (id, status, reason, since).
pub async fn load_health(db: &AnyPool) -> Result<Vec<(String, Health, String, i64)>, Error> {
    let rows: Vec<(String, String, String, i64)> =
        sqlx::query_as("SELECT id, status, reason, since_ms FROM status_instances").fetch_all(db).await?;
    rows.into_iter()
        .map(|(id, status, reason, since)| {
            let health = status.parse().map_err(|e| corrupt("instance", &id, e))?;
            Ok((id, health, reason, since))
        })
        .collect()
}

/// `$1, $2, …` for an `IN` list.
fn list(count: usize) -> String {
    (1..=count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// Writes one bulk request in one transaction: all of it or none.
pub async fn apply_bulk(
    db: &AnyPool,
    apps: &[AppInstanceSpec],
    instances: &[ComponentInstanceSpec],
    deleted: &[String],
    emptied_apps: &[String],
    change: Option<&StoredChange>,
    now_ms: i64,
) -> Result<(), Error> {
    let mut tx = db.begin().await?;
    if let Some(c) = change {
        sqlx::query("INSERT INTO status_changes (id, at_ms, ids) VALUES ($1, $2, $3)")
            .bind(&c.id)
            .bind(c.at_ms)
            .bind(&c.ids)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM status_changes WHERE at_ms < $1")
            .bind(c.at_ms - CHANGES_KEPT_MS)
            .execute(&mut *tx)
            .await?;
    }
    for chunk in apps.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO status_app_instances (id, spec, updated_at_ms) VALUES {}
             ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, updated_at_ms = excluded.updated_at_ms",
            rows(chunk.len(), 3)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for a in chunk {
            q = q.bind(&a.id).bind(serde_json::to_string(a).unwrap_or_default()).bind(now_ms);
        }
        q.execute(&mut *tx).await?;
    }
    for chunk in instances.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO status_instances (id, app_instance, spec, status, reason, since_ms, updated_at_ms)
             VALUES {}
             ON CONFLICT (id) DO UPDATE SET app_instance = excluded.app_instance, spec = excluded.spec,
             updated_at_ms = excluded.updated_at_ms",
            rows(chunk.len(), 7)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for i in chunk {
            q = q
                .bind(&i.id)
                .bind(&i.app_instance)
                .bind(serde_json::to_string(i).unwrap_or_default())
                .bind(Health::Unknown.as_str())
                .bind(crate::table::NOT_CHECKED)
                .bind(now_ms)
                .bind(now_ms);
        }
        q.execute(&mut *tx).await?;
    }
    delete_ids(&mut tx, "status_instances", deleted).await?;
    delete_ids(&mut tx, "status_app_instances", emptied_apps).await?;
    tx.commit().await?;
    Ok(())
}

async fn delete_ids(tx: &mut Transaction<'_, Any>, table: &str, ids: &[String]) -> Result<(), Error> {
    for chunk in ids.chunks(CHUNK) {
        let mut q =
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE id IN ({})", list(chunk.len()))));
        for id in chunk {
            q = q.bind(id);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Appends transitions to the history and records each instance's new status.
pub async fn record_transitions(db: &AnyPool, transitions: &[Transition]) -> Result<(), Error> {
    let mut tx = db.begin().await?;
    for chunk in transitions.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO status_transitions (instance_id, at_ms, from_status, to_status, reason, app_instance, component)
             VALUES {}",
            rows(chunk.len(), 7)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for t in chunk {
            q = q
                .bind(&*t.instance_id)
                .bind(t.at_ms)
                .bind(t.from.as_str())
                .bind(t.to.as_str())
                .bind(&*t.reason)
                .bind(&*t.app_instance)
                .bind(&*t.component);
        }
        q.execute(&mut *tx).await?;
    }
    // The stored status is the newest transition's: one UPDATE per chunk of instances, so
    // each instance may appear once in it (which of two joined rows wins is undefined).
    let mut seen = HashSet::new();
    let newest: Vec<&Transition> =
        transitions.iter().rev().filter(|t| seen.insert(&*t.instance_id)).collect();
    for chunk in newest.chunks(CHUNK) {
        let sql = format!(
            "WITH v (id, status, reason, since_ms) AS (VALUES {})
             UPDATE status_instances SET status = v.status, reason = v.reason, since_ms = v.since_ms
             FROM v WHERE status_instances.id = v.id",
            rows(chunk.len(), 4)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for t in chunk {
            q = q.bind(&*t.instance_id).bind(t.to.as_str()).bind(&*t.reason).bind(t.at_ms);
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The newest `limit` transitions of an instance, newest first.
pub async fn history(db: &AnyPool, instance_id: &str, limit: i64) -> Result<Vec<Transition>, Error> {
    let rows = sqlx::query(
        "SELECT at_ms, from_status, to_status, reason, app_instance, component FROM status_transitions
         WHERE instance_id = $1 ORDER BY at_ms DESC LIMIT $2",
    )
    .bind(instance_id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            let status = |i: usize| -> Result<Health, Error> {
                let s: String = r.try_get(i)?;
                s.parse().map_err(|e| corrupt("transition of", instance_id, e))
            };
            let text = |i: usize| -> Result<Arc<str>, Error> { Ok(r.try_get::<String, _>(i)?.into()) };
            Ok(Transition {
                instance_id: instance_id.into(),
                at_ms: r.try_get(0)?,
                from: status(1)?,
                to: status(2)?,
                reason: text(3)?,
                app_instance: text(4)?,
                component: text(5)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Observe, StatusCheckSpec};

    #[test]
    fn rows_number_placeholders_across_rows() {
        assert_eq!(super::rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(super::rows(1, 1), "($1)");
    }

    /// More transitions than one statement's chunk, some instances twice in a batch: each
    /// stored status is the instance's newest, and the history keeps them all.
    #[tokio::test]
    async fn the_newest_transition_of_each_instance_is_its_stored_status() {
        sqlx::any::install_default_drivers();
        let db = sqlx::pool::PoolOptions::<Any>::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        for (_, sql) in MIGRATIONS {
            sqlx::raw_sql(AssertSqlSafe(*sql)).execute(&db).await.unwrap();
        }
        let count = CHUNK * 2 + 5;
        let specs: Vec<ComponentInstanceSpec> = (0..count)
            .map(|n| ComponentInstanceSpec {
                id: format!("i{n}"),
                app_instance: "a".into(),
                component: "web".into(),
                status: StatusCheckSpec { plugin: "http".into(), parameters: serde_json::json!({}) },
                observe: Observe::Http { url: format!("http://h/{n}") },
            })
            .collect();
        apply_bulk(&db, &[], &specs, &[], &[], None, 1).await.unwrap();
        let transition = |n: usize, to: Health, at_ms: i64| Transition {
            instance_id: format!("i{n}").into(),
            app_instance: "a".into(),
            component: "web".into(),
            from: Health::Unknown,
            to,
            reason: format!("{to:?} at {at_ms}").into(),
            at_ms,
        };
        let mut batch: Vec<Transition> = (0..count).map(|n| transition(n, Health::Degraded, 10)).collect();
        batch.extend((0..count).step_by(3).map(|n| transition(n, Health::Healthy, 20)));
        record_transitions(&db, &batch).await.unwrap();
        for stored in load_instances(&db).await.unwrap() {
            let n: usize = stored.spec.id[1..].parse().unwrap();
            let (status, at) = if n % 3 == 0 { (Health::Healthy, 20) } else { (Health::Degraded, 10) };
            assert_eq!(
                (stored.status, stored.since_ms, stored.reason),
                (status, at, format!("{status:?} at {at}"))
            );
        }
        assert_eq!(history(&db, "i3", 10).await.unwrap().len(), 2);
    }
}
