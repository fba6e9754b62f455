//! The built-in plugin package, packed from `plugins/builtin/` into the binary. The
//! archive is assembled the same way every time, so its digest changes only when its
//! content does, and the host installs it at start only when this build's is missing.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::package::{MANIFEST, pack};

/// Shared Kubernetes rules, prepended to each `status/k8s-*` module.
const K8S_RULES: &str = include_str!("../builtin/status/k8s-rules.js");
/// Shared image-step helpers, prepended to the image-building component types.
const IMAGE_RULES: &str = include_str!("../builtin/component/image-rules.js");
const IMAGE_COMPONENTS: &[(&str, &str)] = &[
    ("component/microservice.js", include_str!("../builtin/component/microservice.js")),
    ("component/job.js", include_str!("../builtin/component/job.js")),
];

/// `status/<name>` → the kind it judges (`None`: any kind with a rule, the dispatcher).
const K8S_CHECKS: &[(&str, Option<&str>)] = &[
    ("k8s", None),
    ("k8s-deployment", Some("Deployment")),
    ("k8s-statefulset", Some("StatefulSet")),
    ("k8s-daemonset", Some("DaemonSet")),
    ("k8s-replicaset", Some("ReplicaSet")),
    ("k8s-pod", Some("Pod")),
    ("k8s-job", Some("Job")),
    ("k8s-pvc", Some("PersistentVolumeClaim")),
    ("k8s-service", Some("Service")),
    ("k8s-ingress", Some("Ingress")),
    ("k8s-hpa", Some("HorizontalPodAutoscaler")),
    ("k8s-apiservice", Some("APIService")),
];

const FILES: &[(&str, &str)] = &[
    (MANIFEST, include_str!("../builtin/plugin.toml")),
    ("component/helm.js", include_str!("../builtin/component/helm.js")),
    ("status/http.js", include_str!("../builtin/status/http.js")),
    ("status/tcp.js", include_str!("../builtin/status/tcp.js")),
    ("schemas/http.json", include_str!("../builtin/schemas/http.json")),
    ("schemas/tcp.json", include_str!("../builtin/schemas/tcp.json")),
    ("trigger/github-push.js", include_str!("../builtin/trigger/github-push.js")),
    ("trigger/gitlab-push.js", include_str!("../builtin/trigger/gitlab-push.js")),
    ("trigger/generic.js", include_str!("../builtin/trigger/generic.js")),
];

/// The built-in package as a `.tar.gz`, assembled once per process.
pub fn builtin_package() -> Bytes {
    static PACKAGE: OnceLock<Bytes> = OnceLock::new();
    PACKAGE
        .get_or_init(|| {
            let k8s: Vec<(String, String)> = K8S_CHECKS
                .iter()
                .map(|(name, kind)| {
                    let expected = kind.map_or_else(|| "null".to_owned(), |k| format!("\"{k}\""));
                    let source = format!(
                        "{K8S_RULES}\nexport function check(instance, observation, ctx) {{\n  return k8sHealth(observation, {expected});\n}}\n"
                    );
                    (format!("status/{name}.js"), source)
                })
                .collect();
            let images: Vec<(&str, String)> =
                IMAGE_COMPONENTS.iter().map(|(path, source)| (*path, format!("{IMAGE_RULES}\n{source}"))).collect();
            let mut files: Vec<(&str, &[u8])> = FILES.iter().map(|(p, t)| (*p, t.as_bytes())).collect();
            files.extend(k8s.iter().map(|(p, t)| (p.as_str(), t.as_bytes())));
            files.extend(images.iter().map(|(p, t)| (*p, t.as_bytes())));
            pack(&files)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_package_is_valid_and_complete() {
        let package = crate::package::parse(&builtin_package()).unwrap();
        assert_eq!(package.name, "builtin");
        let names: Vec<String> = package.scripts.iter().map(|s| s.triple.to_string()).collect();
        for expected in [
            "component/microservice/1",
            "component/job/1",
            "component/helm/1",
            "status/http/4",
            "status/tcp/2",
            "status/k8s/1",
            "status/k8s-hpa/1",
            "status/k8s-apiservice/1",
            "trigger/github-push/1",
            "trigger/gitlab-push/1",
            "trigger/generic/2",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
        }
        assert_eq!(package.scripts.len(), 3 + 2 + K8S_CHECKS.len() + 3);
    }

    /// A released revision is installed once and never again (installing changed content
    /// under a known triple is a conflict), so a built-in script edited without a new
    /// revision would never reach databases that already hold the old one. The ledger holds
    /// every released revision's content hash; it only grows.
    #[test]
    fn released_builtin_revisions_keep_their_content() {
        let ledger: Vec<(&str, &str)> = include_str!("../builtin/released.txt")
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| line.split_once(' ').expect("`<triple> <content hash>` per line"))
            .collect();
        for (i, (triple, _)) in ledger.iter().enumerate() {
            assert!(
                ledger[..i].iter().all(|(earlier, _)| earlier != triple),
                "{triple} is listed twice in released.txt: a revision has one content"
            );
        }
        let package = crate::package::parse(&builtin_package()).unwrap();
        let unreleased: Vec<String> = package
            .scripts
            .iter()
            .map(|script| format!("{} {}", script.triple, script.code_hash))
            .filter(|line| !ledger.iter().any(|(triple, hash)| *line == format!("{triple} {hash}")))
            .collect();
        assert!(
            unreleased.is_empty(),
            "built-in scripts not in released.txt as they are now; a released script that changed needs \
             a new revision in plugin.toml, then add its line:\n{}",
            unreleased.join("\n")
        );
    }
}
