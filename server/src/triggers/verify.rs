//! Proving a webhook came from the CI system that holds the trigger's secret, the way each
//! system signs: GitHub's HMAC-SHA256 of the raw body, GitLab's token header, or a bearer
//! token. Every comparison runs in constant time.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
    Github,
    /// `X-Gitlab-Token: <secret>`.
    Gitlab,
    /// `Authorization: Bearer <secret>`.
    Bearer,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Github => "github",
            AuthMode::Gitlab => "gitlab",
            AuthMode::Bearer => "bearer",
        }
    }

    pub fn parse(text: &str) -> Option<AuthMode> {
        [AuthMode::Github, AuthMode::Gitlab, AuthMode::Bearer].into_iter().find(|m| m.as_str() == text)
    }

    /// The usual way for an adapter: GitHub signs, GitLab sends its token, others a bearer.
    pub fn for_adapter(adapter: &str) -> AuthMode {
        match adapter {
            "github-push" => AuthMode::Github,
            "gitlab-push" => AuthMode::Gitlab,
            _ => AuthMode::Bearer,
        }
    }
}

/// Why a delivery was not accepted as authentic; the message names what was missing or wrong
/// without echoing anything secret.
pub fn verify(mode: AuthMode, secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    match mode {
        AuthMode::Github => {
            let signature = header("x-hub-signature-256").ok_or("missing X-Hub-Signature-256 header")?;
            let hex_digest =
                signature.strip_prefix("sha256=").ok_or("X-Hub-Signature-256 must start with sha256=")?;
            let expected = hex::decode(hex_digest).map_err(|_| "X-Hub-Signature-256 is not hexadecimal")?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
            mac.update(body);
            mac.verify_slice(&expected).map_err(|_| "X-Hub-Signature-256 does not match the body".into())
        }
        AuthMode::Gitlab => {
            let token = header("x-gitlab-token").ok_or("missing X-Gitlab-Token header")?;
            same(token, secret).then_some(()).ok_or_else(|| "X-Gitlab-Token is wrong".into())
        }
        AuthMode::Bearer => {
            let token = header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or("missing `Authorization: Bearer <trigger secret>` header")?;
            same(token, secret).then_some(()).ok_or_else(|| "the bearer secret is wrong".into())
        }
    }
}

fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// GitHub's signature of `body` under `secret`, as the header carries it.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (axum::http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn github_signatures_are_checked_against_the_raw_body() {
        // The example from GitHub's documentation on validating webhook deliveries.
        let secret = "It's a Secret to Everybody";
        let body = b"Hello, World!";
        let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(github_signature(secret, body), signature);
        assert!(
            verify(AuthMode::Github, secret, &headers(&[("x-hub-signature-256", signature)]), body).is_ok()
        );
        let err = verify(
            AuthMode::Github,
            secret,
            &headers(&[("x-hub-signature-256", signature)]),
            b"Hello, World?",
        )
        .unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        assert!(verify(AuthMode::Github, secret, &HeaderMap::new(), body).unwrap_err().contains("missing"));
    }

    #[test]
    fn tokens_must_match_exactly() {
        assert!(verify(AuthMode::Gitlab, "s3", &headers(&[("x-gitlab-token", "s3")]), b"").is_ok());
        assert!(verify(AuthMode::Gitlab, "s3", &headers(&[("x-gitlab-token", "s33")]), b"").is_err());
        assert!(verify(AuthMode::Bearer, "s3", &headers(&[("authorization", "Bearer s3")]), b"").is_ok());
        assert!(verify(AuthMode::Bearer, "s3", &headers(&[("authorization", "Bearer s4")]), b"").is_err());
    }
}
