//! Plugin packages: a `.tar.gz` holding `plugin.toml` and the script files. Reading one
//! checks everything that does not need the engine (manifest, names, files, schemas); the
//! host then compiles each module in a worker before it registers anything.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::triple::{PluginTriple, ScriptKind, validate_name};

pub const MANIFEST: &str = "plugin.toml";
/// Largest archive (compressed) and largest unpacked content accepted.
const MAX_UNPACKED_BYTES: u64 = 16 * 1024 * 1024;

/// `plugin.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    package: ManifestPackage,
    #[serde(default)]
    scripts: Vec<ManifestScript>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestPackage {
    name: String,
    version: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestScript {
    kind: ScriptKind,
    name: String,
    revision: u32,
    file: String,
    /// Path of a JSON Schema file for the script's parameters.
    params_schema: Option<String>,
}

/// A package read and checked, ready to be compiled and registered.
#[derive(Debug, Clone)]
pub struct ParsedPackage {
    pub name: String,
    pub version: String,
    pub description: String,
    /// `sha256:<hex>` of the archive.
    pub digest: String,
    pub scripts: Vec<PackageScript>,
}

#[derive(Debug, Clone)]
pub struct PackageScript {
    pub triple: PluginTriple,
    pub file: String,
    pub source: String,
    pub code_hash: String,
    pub params_schema: Option<Value>,
}

fn invalid(file: &str, message: impl Into<String>) -> Error {
    Error::InvalidPackage { file: file.to_owned(), line: None, column: None, message: message.into() }
}

/// `sha256:<hex>` of some bytes: package digests and module content hashes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Reads and checks a package archive.
pub fn parse(archive: &Bytes) -> Result<ParsedPackage, Error> {
    let files = unpack(archive)?;
    let manifest_text =
        files.get(MANIFEST).ok_or_else(|| invalid(MANIFEST, "the archive has no plugin.toml"))?;
    let manifest_text = std::str::from_utf8(manifest_text).map_err(|_| invalid(MANIFEST, "not UTF-8"))?;
    let manifest: Manifest = toml::from_str(manifest_text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start).min(manifest_text.len());
        let (line, column) = line_column(manifest_text, offset);
        Error::InvalidPackage {
            file: MANIFEST.into(),
            line: Some(line),
            column: Some(column),
            message: e.message().trim().to_owned(),
        }
    })?;
    validate_name(&manifest.package.name).map_err(|m| invalid(MANIFEST, format!("package.name: {m}")))?;
    semver::Version::parse(&manifest.package.version)
        .map_err(|e| invalid(MANIFEST, format!("package.version `{}`: {e}", manifest.package.version)))?;
    if manifest.scripts.is_empty() {
        return Err(invalid(MANIFEST, "the package declares no [[scripts]]"));
    }
    let mut seen = HashSet::new();
    let mut scripts = Vec::with_capacity(manifest.scripts.len());
    for script in manifest.scripts {
        validate_name(&script.name).map_err(|m| invalid(MANIFEST, format!("script name: {m}")))?;
        if script.revision == 0 {
            return Err(invalid(
                MANIFEST,
                format!("{}/{}: revision must be positive", script.kind, script.name),
            ));
        }
        let triple = PluginTriple::new(script.kind, script.name, script.revision);
        if !seen.insert((triple.kind, triple.name.clone())) {
            return Err(invalid(MANIFEST, format!("{}/{} is declared twice", triple.kind, triple.name)));
        }
        let bytes = files
            .get(&script.file)
            .ok_or_else(|| invalid(&script.file, format!("file named by {triple} is not in the archive")))?;
        let source = String::from_utf8(bytes.clone()).map_err(|_| invalid(&script.file, "not UTF-8"))?;
        let params_schema = match &script.params_schema {
            None => None,
            Some(path) => Some(read_schema(&files, path)?),
        };
        scripts.push(PackageScript {
            code_hash: sha256(source.as_bytes()),
            triple,
            file: script.file,
            source,
            params_schema,
        });
    }
    Ok(ParsedPackage {
        name: manifest.package.name,
        version: manifest.package.version,
        description: manifest.package.description,
        digest: sha256(archive),
        scripts,
    })
}

fn unpack(archive: &Bytes) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let decoder = flate2::read::GzDecoder::new(&archive[..]).take(MAX_UNPACKED_BYTES + 1);
    let mut tar = tar::Archive::new(decoder);
    let mut files = BTreeMap::new();
    let mut total = 0u64;
    let entries = tar.entries().map_err(|e| invalid("<archive>", format!("not a .tar.gz: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid("<archive>", format!("not a .tar.gz: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(|e| invalid("<archive>", e.to_string()))?;
        let path = path.to_string_lossy().trim_start_matches("./").to_owned();
        if path.split('/').any(|part| part == "..") {
            return Err(invalid(&path, "paths may not leave the package"));
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(|e| invalid(&path, e.to_string()))?;
        total += bytes.len() as u64;
        if total > MAX_UNPACKED_BYTES {
            return Err(invalid("<archive>", format!("unpacks to more than {MAX_UNPACKED_BYTES} bytes")));
        }
        files.insert(path, bytes);
    }
    Ok(files)
}

/// A parameter schema must be a JSON object whose `type`, where given, names JSON types.
fn read_schema(files: &BTreeMap<String, Vec<u8>>, path: &str) -> Result<Value, Error> {
    let bytes = files.get(path).ok_or_else(|| invalid(path, "schema file is not in the archive"))?;
    let text = std::str::from_utf8(bytes).map_err(|_| invalid(path, "not UTF-8"))?;
    let schema: Value = serde_json::from_str(text).map_err(|e| Error::InvalidPackage {
        file: path.to_owned(),
        line: Some(e.line() as u32),
        column: Some(e.column() as u32),
        message: e.to_string(),
    })?;
    let Some(object) = schema.as_object() else {
        return Err(invalid(path, "a JSON Schema must be an object"));
    };
    const TYPES: [&str; 7] = ["null", "boolean", "object", "array", "number", "string", "integer"];
    let type_ok = |v: &Value| v.as_str().is_some_and(|t| TYPES.contains(&t));
    match object.get("type") {
        None => {}
        Some(Value::Array(types)) if types.iter().all(type_ok) => {}
        Some(t) if type_ok(t) => {}
        Some(t) => return Err(invalid(path, format!("`type` {t} is not a JSON Schema type"))),
    }
    Ok(schema)
}

/// 1-based line and column of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (u32, u32) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line as u32, column as u32)
}

/// Packs files into a plugin package `.tar.gz` the same way every time (sorted, zero mtime, fixed mode),
/// so the built-in package has one digest per content.
pub fn pack(files: &[(&str, &[u8])]) -> Bytes {
    let mut sorted: Vec<_> = files.to_vec();
    sorted.sort_by_key(|(path, _)| *path);
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    for (path, bytes) in sorted {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, bytes).expect("writing to memory cannot fail");
    }
    let encoder = builder.into_inner().expect("writing to memory cannot fail");
    Bytes::from(encoder.finish().expect("writing to memory cannot fail"))
}

pub use crate::builtin::builtin_package;

#[cfg(test)]
mod tests {
    use super::*;

    fn package(manifest: &str, files: &[(&str, &str)]) -> Bytes {
        let mut all: Vec<(&str, &[u8])> = vec![(MANIFEST, manifest.as_bytes())];
        all.extend(files.iter().map(|(p, t)| (*p, t.as_bytes())));
        pack(&all)
    }

    const OK: &str = "[package]\nname = \"acme\"\nversion = \"1.0.0\"\n\n[[scripts]]\nkind = \"status\"\nname = \"ping\"\nrevision = 2\nfile = \"ping.js\"\nparams_schema = \"ping.schema.json\"\n";

    #[test]
    fn reads_a_valid_package() {
        let p = parse(&package(
            OK,
            &[("ping.js", "export function check() {}"), ("ping.schema.json", "{\"type\": \"object\"}")],
        ))
        .unwrap();
        assert_eq!((p.name.as_str(), p.version.as_str()), ("acme", "1.0.0"));
        assert_eq!(p.scripts[0].triple.to_string(), "status/ping/2");
        assert!(p.digest.starts_with("sha256:"));
        assert_eq!(p.scripts[0].params_schema, Some(serde_json::json!({"type": "object"})));
    }

    #[test]
    fn packing_is_deterministic() {
        let files = [("b.js", "2"), ("a.js", "1")];
        assert_eq!(package(OK, &files), package(OK, &files));
    }

    #[test]
    fn manifest_errors_carry_line_and_column() {
        let bad = OK.replace("revision = 2", "revision = \"two\"");
        let err = parse(&package(&bad, &[("ping.js", "")])).unwrap_err();
        let Error::InvalidPackage { file, line, column, .. } = &err else { panic!("{err}") };
        assert_eq!((file.as_str(), *line), ("plugin.toml", Some(8)));
        assert_eq!(*column, Some(12), "{err}");
    }

    #[test]
    fn missing_files_and_bad_schemas_are_named() {
        let err = parse(&package(OK, &[("ping.schema.json", "{}")])).unwrap_err();
        assert!(err.to_string().contains("ping.js"), "{err}");
        let err = parse(&package(OK, &[("ping.js", ""), ("ping.schema.json", "{\"type\": \"thing\"}")]))
            .unwrap_err();
        assert!(err.to_string().contains("ping.schema.json") && err.to_string().contains("thing"), "{err}");
        let err =
            parse(&package(OK, &[("ping.js", ""), ("ping.schema.json", "{\n  \"type\": }")])).unwrap_err();
        assert!(err.to_string().contains("ping.schema.json:2:"), "{err}");
        let err = parse(&Bytes::from_static(b"not gzip")).unwrap_err();
        assert!(err.to_string().contains("<archive>"), "{err}");
    }
}
