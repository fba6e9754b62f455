//! Request bodies written as files (`-f fleet.yaml`): YAML, which also reads JSON.

use std::path::Path;

use serde_json::Value;

use super::exit::{CliError, CliResult};

pub fn read(path: &Path) -> CliResult<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    serde_norway::from_str(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn yaml_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("fleet.yaml");
        std::fs::write(&yaml, "instances:\n  - id: web-1\n    observe: {http: {url: 'http://x/'}}\n")
            .unwrap();
        assert_eq!(super::read(&yaml).unwrap()["instances"][0]["observe"]["http"]["url"], "http://x/");
        let json = dir.path().join("fleet.json");
        std::fs::write(&json, r#"{"instances": []}"#).unwrap();
        assert_eq!(super::read(&json).unwrap()["instances"], serde_json::json!([]));
        std::fs::write(&json, "instances: [").unwrap();
        assert!(super::read(&json).is_err());
    }
}
