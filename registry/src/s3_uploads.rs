//! Incomplete S3 multipart uploads: what a process killed mid-upload leaves in the bucket.
//!
//! An interrupted streamed upload to `uploads/<uuid>` never completes its multipart upload,
//! and S3 keeps the parts (billed, invisible to object listings) until someone aborts it.
//! The object store API can neither list nor abort an upload it did not start itself, so
//! the garbage collector asks S3 directly (`ListMultipartUploads`, `AbortMultipartUpload`),
//! signing with object_store's own SigV4 authorizer.

use chrono::{DateTime, Utc};
use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::{HttpRequest, HttpRequestBody};
use reqwest::{Method, Url};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Where the bucket is and how to sign for it (the server's `[object_store.s3]` settings).
#[derive(Debug, Clone)]
pub struct S3Access {
    /// `http(s)://host:port`; empty for AWS itself.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listing {
    #[serde(rename = "Upload", default)]
    uploads: Vec<Upload>,
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Upload {
    key: String,
    upload_id: String,
    initiated: DateTime<Utc>,
}

impl S3Access {
    /// Aborts the multipart uploads under `prefix/` started before `cutoff_ms`; returns
    /// their keys.
    pub(crate) async fn abort_stale(&self, prefix: &str, cutoff_ms: i64) -> Result<Vec<String>> {
        let client = reqwest::Client::new();
        let mut aborted = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut query = vec![("uploads", String::new()), ("prefix", format!("{prefix}/"))];
            if let Some((key, id)) = markers.take() {
                query.extend([("key-marker", key), ("upload-id-marker", id)]);
            }
            let body = self.send(&client, Method::GET, "", &query).await?;
            let listing: Listing = quick_xml::de::from_str(&body)
                .map_err(|e| self.error("", format!("unreadable ListMultipartUploads answer: {e}")))?;
            for upload in listing.uploads {
                if upload.initiated.timestamp_millis() < cutoff_ms {
                    let query = [("uploadId", upload.upload_id)];
                    self.send(&client, Method::DELETE, &upload.key, &query).await?;
                    aborted.push(upload.key);
                }
            }
            match (listing.is_truncated, listing.next_key_marker, listing.next_upload_id_marker) {
                (true, Some(key), Some(id)) => markers = Some((key, id)),
                _ => return Ok(aborted),
            }
        }
    }

    /// Sends one signed path-style request for `key` (the bucket itself when empty);
    /// returns the answer's body.
    async fn send(
        &self,
        client: &reqwest::Client,
        method: Method,
        key: &str,
        query: &[(&str, String)],
    ) -> Result<String> {
        let endpoint = match self.endpoint.as_str() {
            "" => format!("https://s3.{}.amazonaws.com", self.region),
            endpoint => endpoint.trim_end_matches('/').to_owned(),
        };
        let mut url = Url::parse(&endpoint).map_err(|e| self.error(key, format!("endpoint: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| self.error(key, "endpoint cannot carry a path".into()))?
            .push(&self.bucket)
            .extend(key.split('/').filter(|s| !s.is_empty()));
        url.query_pairs_mut().extend_pairs(query);
        let mut request: HttpRequest = http::Request::builder()
            .method(method.as_str())
            .uri(url.as_str())
            .body(HttpRequestBody::empty())
            .map_err(|e| self.error(key, e.to_string()))?;
        let credential = AwsCredential {
            key_id: self.access_key_id.clone(),
            secret_key: self.secret_access_key.clone(),
            token: None,
        };
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| self.error(key, e.to_string()))?;
        let response = client
            .request(method, url)
            .headers(request.headers().clone())
            .send()
            .await
            .map_err(|e| self.error(key, e.to_string()))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| self.error(key, e.to_string()))?;
        if !status.is_success() {
            return Err(self.error(key, format!("S3 answered {status}: {body}")));
        }
        Ok(body)
    }

    fn error(&self, key: &str, message: String) -> Error {
        Error::ObjectStore {
            key: format!("{}/{key}", self.bucket),
            source: object_store::Error::Generic { store: "S3", source: message.into() },
        }
    }
}
