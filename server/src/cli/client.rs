//! A small client over the HTTP API: JSON calls, streamed bodies and server-sent events, with
//! every failure turned into a [`CliError`] that carries the server's own error message.

use futures::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;

use super::exit::{CliError, CliResult};

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
    /// Where the token came from, named in the hint when the server refuses it.
    token_origin: String,
}

/// One server-sent event: its `event:` name and its `data:` text.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

impl ApiClient {
    pub fn new(server: &str, token: Option<String>, token_origin: String) -> CliResult<Self> {
        let server = server.trim_end_matches('/').to_owned();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(CliError::Usage(format!(
                "--server `{server}` must be an http:// or https:// URL, e.g. http://127.0.0.1:7700"
            )));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("slipway-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self { http, server, token, token_origin })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.server));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request` and returns the response if it succeeded, the API error otherwise.
    pub async fn send(&self, request: RequestBuilder) -> CliResult<Response> {
        let response = request.send().await.map_err(|e| self.transport(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.api_error(response).await)
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> CliResult<Value> {
        self.json(self.request(Method::GET, path).query(query)).await
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> CliResult<Value> {
        let request = self.request(method, path);
        self.json(match body {
            Some(body) => request.json(body),
            None => request,
        })
        .await
    }

    /// The JSON answer of `request`; an empty answer (204) is `null`.
    pub async fn json(&self, request: RequestBuilder) -> CliResult<Value> {
        let response = self.send(request).await?;
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| CliError::Failed(format!("the server answered something other than JSON: {e}")))
    }

    /// Follows a server-sent event stream until the server ends it.
    pub async fn events(&self, path: &str) -> CliResult<impl Stream<Item = SseEvent> + use<>> {
        let response = self.send(self.request(Method::GET, path)).await?;
        let chunks = response.bytes_stream();
        let events =
            futures::stream::unfold((chunks, String::new()), |(mut chunks, mut buffer)| async move {
                loop {
                    if let Some(end) = buffer.find("\n\n") {
                        let block: String = buffer.drain(..end + 2).collect();
                        return Some((parse_event(&block), (chunks, buffer)));
                    }
                    match chunks.next().await {
                        Some(Ok(bytes)) => {
                            buffer.push_str(&String::from_utf8_lossy(&bytes).replace("\r\n", "\n"))
                        }
                        _ => return None,
                    }
                }
            });
        Ok(events.filter_map(|event| async move { event }))
    }

    pub fn transport(&self, e: reqwest::Error) -> CliError {
        if e.is_connect() || e.is_timeout() {
            let reason = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
            CliError::Unreachable { server: self.server.clone(), reason: innermost(reason) }
        } else {
            CliError::Failed(format!("talking to {}: {e}", self.server))
        }
    }

    async fn api_error(&self, response: Response) -> CliError {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let error = &body["error"];
        let code = error["code"].as_str().unwrap_or("unknown").to_owned();
        let mut message = error["message"].as_str().map_or_else(|| format!("HTTP {status}"), str::to_owned);
        if let Some(problems) = error["details"]["problems"].as_array() {
            // A single problem is often the message itself.
            let listed: Vec<&str> =
                problems.iter().filter_map(Value::as_str).filter(|p| !message.contains(p)).collect();
            for problem in listed {
                message.push_str("\n  - ");
                message.push_str(problem);
            }
        }
        let hint = match status {
            401 if self.token.is_none() => Some(format!(
                "no API token: set SLIPWAY_TOKEN, or run where the server's data directory is ({})",
                self.token_origin
            )),
            401 => Some(format!(
                "the token from {} was refused; use a valid one (the first admin token is in the server's data directory, file admin-token)",
                self.token_origin
            )),
            403 => Some(format!("the token from {} lacks the scope this call needs", self.token_origin)),
            _ => None,
        };
        CliError::Api { status, code, message, hint }
    }
}

fn parse_event(block: &str) -> Option<SseEvent> {
    let mut event = String::from("message");
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if let Some(name) = line.strip_prefix("event:") {
            event = name.trim().to_owned();
        } else if let Some(text) = line.strip_prefix("data:") {
            data.push(text.strip_prefix(' ').unwrap_or(text));
        }
    }
    // A block of only comments is a keep-alive.
    (!data.is_empty()).then(|| SseEvent { event, data: data.join("\n") })
}

/// "error trying to connect: tcp connect error: Connection refused (os error 111)" reads
/// best as its last part.
fn innermost(reason: String) -> String {
    reason.rsplit(": ").next().map(str::to_owned).unwrap_or(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_keep_alives() {
        assert_eq!(
            parse_event("event: line\ndata: building web\n\n"),
            Some(SseEvent { event: "line".into(), data: "building web".into() })
        );
        assert_eq!(parse_event(":\n\n"), None);
        assert_eq!(parse_event("data: a\ndata: b\n\n").unwrap().data, "a\nb");
    }
}
