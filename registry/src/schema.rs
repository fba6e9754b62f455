//! The registry's tables. Portable SQL (SQLite and PostgreSQL): TEXT and BIGINT only,
//! timestamps in milliseconds since the epoch.
//!
//! Tag queries are the hot path: `registry_package_tags` has the primary key
//! `(app, tag, version_key)`, so "versions of app A with tag T, newest first" is a reverse
//! index scan, and every further tag of an "all of" query is one primary-key probe.

/// Database migrations of this crate, applied in order by the server at start.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "registry-0001-packages",
        "CREATE TABLE registry_app_packages (
        app TEXT NOT NULL,
        version_key TEXT NOT NULL,
        version TEXT NOT NULL,
        digest TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        manifest TEXT NOT NULL,
        creator TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        PRIMARY KEY (app, version_key)
    );
    CREATE INDEX registry_app_packages_created ON registry_app_packages (app, created_at_ms, version_key);
    CREATE INDEX registry_app_packages_digest ON registry_app_packages (digest);
    CREATE TABLE registry_component_packages (
        app TEXT NOT NULL,
        component TEXT NOT NULL,
        version_key TEXT NOT NULL,
        version TEXT NOT NULL,
        component_type TEXT NOT NULL,
        digest TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        manifest TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        PRIMARY KEY (app, component, version_key)
    );
    CREATE INDEX registry_component_packages_digest ON registry_component_packages (digest);
    CREATE TABLE registry_app_package_components (
        app TEXT NOT NULL,
        app_version_key TEXT NOT NULL,
        component TEXT NOT NULL,
        component_version_key TEXT NOT NULL,
        PRIMARY KEY (app, app_version_key, component)
    );
    CREATE INDEX registry_app_package_components_component
        ON registry_app_package_components (app, component, component_version_key);
    CREATE TABLE registry_package_tags (
        app TEXT NOT NULL,
        tag TEXT NOT NULL,
        version_key TEXT NOT NULL,
        tagged_by TEXT NOT NULL,
        tagged_at_ms BIGINT NOT NULL,
        PRIMARY KEY (app, tag, version_key)
    );
    CREATE INDEX registry_package_tags_version ON registry_package_tags (app, version_key);
    CREATE TABLE registry_exclusive_tags (
        app TEXT NOT NULL,
        tag TEXT NOT NULL,
        set_by TEXT NOT NULL,
        set_at_ms BIGINT NOT NULL,
        PRIMARY KEY (app, tag)
    );
    CREATE TABLE registry_tag_events (
        id TEXT PRIMARY KEY,
        app TEXT NOT NULL,
        tag TEXT NOT NULL,
        version TEXT NOT NULL,
        action TEXT NOT NULL,
        actor TEXT NOT NULL,
        at_ms BIGINT NOT NULL
    );
    CREATE INDEX registry_tag_events_app ON registry_tag_events (app, at_ms);
    CREATE TABLE registry_deletions (
        id TEXT PRIMARY KEY,
        app TEXT NOT NULL,
        version TEXT NOT NULL,
        digest TEXT NOT NULL,
        reason TEXT NOT NULL,
        actor TEXT NOT NULL,
        at_ms BIGINT NOT NULL
    );
    CREATE INDEX registry_deletions_app ON registry_deletions (app, at_ms)",
    ),
    // The build inputs a component package was made from (see `ComponentManifest::inputs_digest`),
    // so a pipeline finds the package it would build again and reuses it.
    (
        "registry-0002-component-inputs",
        "ALTER TABLE registry_component_packages ADD COLUMN inputs_digest TEXT;
        CREATE INDEX registry_component_packages_inputs
            ON registry_component_packages (app, component, inputs_digest)",
    ),
    (
        "registry-0003-app-changes",
        // Bumped by every write transaction on an app's packages or tags (see changes.rs).
        "CREATE TABLE registry_app_changes (app TEXT PRIMARY KEY, changes BIGINT NOT NULL)",
    ),
    (
        "registry-0004-publish-key",
        // Who published a package once, so the same publisher (a build run that another
        // replica took over) publishing again gets the first package, never a second one.
        "ALTER TABLE registry_app_packages ADD COLUMN publish_key TEXT;
        CREATE UNIQUE INDEX registry_app_packages_publish_key ON registry_app_packages (publish_key)",
    ),
];
