//! Validation of a bulk request against the registered state, the active status plugins
//! and their parameter schemas. Every bad item is reported; nothing is applied unless all
//! items are good.

use std::collections::{HashMap, HashSet};

use slipway_plugins::{PluginHost, ScriptKind};

use crate::fetch::ClusterRegistry;
use crate::model::{BulkRequest, Observe};
use crate::table::InstanceTable;
use crate::{Error, Problem};

/// The active status plugins and their compiled parameter schemas (`None`: any object).
pub struct Catalog {
    plugins: HashMap<String, Option<jsonschema::Validator>>,
}

impl Catalog {
    pub async fn load(host: &PluginHost) -> Result<Self, Error> {
        let mut plugins = HashMap::new();
        for package in host.list().await? {
            for script in
                package.scripts.into_iter().filter(|s| s.triple.kind == ScriptKind::Status && s.active)
            {
                // Schemas were validated when the package was installed; one that does not
                // compile here is treated as absent rather than blocking registrations.
                let validator = script.params_schema.as_ref().and_then(|s| jsonschema::validator_for(s).ok());
                plugins.insert(script.triple.name.clone(), validator);
            }
        }
        Ok(Self { plugins })
    }

    fn check_parameters(&self, plugin: &str, parameters: &serde_json::Value) -> Result<(), String> {
        let Some(schema) = self.plugins.get(plugin) else {
            return Err(format!("unknown status plugin `status/{plugin}` (no active revision)"));
        };
        let Some(validator) = schema else {
            return if parameters.is_object() { Ok(()) } else { Err("parameters must be an object".into()) };
        };
        let errors: Vec<String> = validator
            .iter_errors(parameters)
            .map(|e| format!("parameters{}: {e}", e.instance_path()))
            .take(5)
            .collect();
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }
}

/// What a valid request will do: app instances emptied by its deletes go too.
pub struct Plan {
    pub emptied_apps: Vec<String>,
}

pub fn validate(
    request: &BulkRequest,
    table: &InstanceTable,
    catalog: &Catalog,
    clusters: &ClusterRegistry,
    limit: usize,
) -> Result<Plan, Error> {
    if request.size() > limit {
        return Err(Error::TooManyItems { count: request.size(), limit });
    }
    let mut problems = Vec::new();
    let mut problem =
        |item: String, id: &str, message: String| problems.push(Problem { item, id: id.to_owned(), message });

    let mut app_ids = HashSet::new();
    for (n, a) in request.app_instances.iter().enumerate() {
        let item = format!("appInstances[{n}]");
        if a.id.is_empty() || a.app.is_empty() {
            problem(item.clone(), &a.id, "`id` and `app` must not be empty".into());
        }
        if !app_ids.insert(a.id.as_str()) {
            problem(item, &a.id, "duplicate app instance id in this request".into());
        }
    }
    let deleted: HashSet<&str> = request.delete.iter().map(String::as_str).collect();
    let mut instance_ids = HashSet::new();
    for (n, i) in request.instances.iter().enumerate() {
        let item = format!("instances[{n}]");
        if i.id.is_empty() || i.component.is_empty() {
            problem(item.clone(), &i.id, "`id` and `component` must not be empty".into());
        }
        if !instance_ids.insert(i.id.as_str()) {
            problem(item.clone(), &i.id, "duplicate instance id in this request".into());
        }
        if deleted.contains(i.id.as_str()) {
            problem(item.clone(), &i.id, "the same request also deletes this id".into());
        }
        if !app_ids.contains(i.app_instance.as_str()) && !table.apps.contains_key(i.app_instance.as_str()) {
            problem(item.clone(), &i.id, format!("app instance `{}` is not registered", i.app_instance));
        }
        if let Err(message) = catalog.check_parameters(&i.status.plugin, &i.status.parameters) {
            problem(item.clone(), &i.id, message);
        }
        if let Err(message) = check_observe(&i.observe, clusters) {
            problem(item, &i.id, message);
        }
    }
    let mut seen_deletes = HashSet::new();
    for (n, id) in request.delete.iter().enumerate() {
        let item = format!("delete[{n}]");
        if !seen_deletes.insert(id.as_str()) {
            problem(item, id, "duplicate id in `delete`".into());
        } else if table.index_of(id).is_none() {
            problem(item, id, "no such instance".into());
        }
    }
    if !problems.is_empty() {
        return Err(Error::InvalidItems { problems });
    }
    let refilled: HashSet<&str> = request.instances.iter().map(|i| i.app_instance.as_str()).collect();
    let emptied_apps = table
        .apps
        .iter()
        .filter(|(id, app)| {
            !refilled.contains(&***id)
                && !app_ids.contains(&***id)
                && !app.components.is_empty()
                && app.components.iter().all(|&c| table.get(c).is_some_and(|i| deleted.contains(&*i.id)))
        })
        .map(|(id, _)| id.to_string())
        .collect();
    Ok(Plan { emptied_apps })
}

fn check_observe(observe: &Observe, clusters: &ClusterRegistry) -> Result<(), String> {
    match observe {
        Observe::Http { url } => {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .ok_or_else(|| format!("`{url}` is not an http:// or https:// URL"))?;
            if rest.split(['/', '?', '#']).next().unwrap_or_default().is_empty() {
                return Err(format!("`{url}` has no host"));
            }
            Ok(())
        }
        Observe::Tcp { address } => match address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
            _ => Err(format!("`{address}` is not host:port")),
        },
        Observe::Kubernetes(k) => {
            if k.api_version.is_empty() || k.kind.is_empty() || k.name.is_empty() {
                return Err("`apiVersion`, `kind` and `name` must not be empty".into());
            }
            if !clusters.contains(&k.cluster) {
                return Err(format!("cluster `{}` is not registered", k.cluster));
            }
            Ok(())
        }
    }
}
