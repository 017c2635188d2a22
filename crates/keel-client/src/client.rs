//! The async HTTP client (feature `http`, on by default).

use std::time::Duration;

use keel_model::ValidationError;

use crate::routes::InvalidKey;
use reqwest::{header, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// What can go wrong talking to keel.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach keel at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    /// The server answered with an error; `errors` lists every invalid field (with lines for imports).
    #[error("{message}")]
    Api {
        status: u16,
        message: String,
        errors: Vec<ValidationError>,
    },
    #[error("unexpected answer from keel: {0}")]
    Decode(String),
    /// A record key that cannot be one path segment (empty, `.` or `..`): no request is sent.
    #[error(transparent)]
    InvalidKey(#[from] InvalidKey),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A JSON answer and the record version from its ETag, if any.
#[derive(Debug)]
pub struct Versioned<T> {
    pub value: T,
    pub version: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// For streams: no overall timeout, and TCP keepalive to notice a dead server.
    stream_http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// `base` is keel's URL (e.g. `http://127.0.0.1:8080`); `token` a bearer token, if any.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        Self::with_trust(base, token, None)
    }

    /// A client that reaches an `https://` keel trusting only `trust` (the site's CA, the
    /// certificate's pinned fingerprint); without it, an `https://` URL trusts the system's store.
    pub fn with_trust(
        base: &str,
        token: Option<String>,
        trust: Option<&crate::tls::Trust>,
    ) -> Result<Self, ClientError> {
        let tls = match trust {
            Some(t) => Some(crate::tls::client_config(t)?),
            None if base.starts_with("https://") => Some(crate::tls::client_config(&crate::tls::Trust::System)?),
            None => None,
        };
        let builder = |b: reqwest::ClientBuilder| match &tls {
            Some(c) => b.use_preconfigured_tls(c.clone()),
            None => b,
        };
        let http = builder(reqwest::Client::builder())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| ClientError::Unreachable {
                url: base.to_owned(),
                source: e,
            })?;
        let stream_http = builder(reqwest::Client::builder())
            .connect_timeout(Duration::from_secs(5))
            .tcp_keepalive(Duration::from_secs(15))
            .build()
            .map_err(|e| ClientError::Unreachable {
                url: base.to_owned(),
                source: e,
            })?;
        Ok(Self {
            http,
            stream_http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request to `path` (below the base URL) and returns the raw successful response.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<u64>,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(v) = if_match {
            req = req.header(header::IF_MATCH, format!("\"{v}\""));
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        self.send(req).await
    }

    /// Sends a built request; a non-2xx answer becomes `ClientError::Api` with the server's reason.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            source: e,
        })?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(api_error(resp).await)
        }
    }

    /// Sends a GET whose answer is a stream (no overall timeout: it lasts as long as it is read).
    pub async fn request_streaming(&self, method: Method, path: &str) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.stream_http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    /// Sends a request and decodes its JSON answer, with the ETag's version.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<u64>,
    ) -> Result<Versioned<T>, ClientError> {
        let resp = self.request(method, path, body, if_match).await?;
        let version = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim_matches('"').parse().ok());
        if resp.status() == StatusCode::NO_CONTENT {
            let value = serde_json::from_value(Value::Null).map_err(|e| ClientError::Decode(e.to_string()))?;
            return Ok(Versioned { value, version });
        }
        let bytes = resp.bytes().await.map_err(|e| ClientError::Decode(e.to_string()))?;
        let value = serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok(Versioned { value, version })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Ok(self.call(Method::GET, path, None, None).await?.value)
    }

    /// Calls an RPC method the prologin way and returns its `data`.
    pub async fn rpc(&self, path: &str, kwargs: Value) -> Result<Value, ClientError> {
        let body = serde_json::json!({ "args": [], "kwargs": kwargs });
        let reply: keel_model::wire::RpcReply = self.call(Method::POST, path, Some(&body), None).await?.value;
        match reply {
            keel_model::wire::RpcReply::Result { data } => Ok(data),
            keel_model::wire::RpcReply::Exception { exn_message, .. } => Err(ClientError::Api {
                status: 200,
                message: exn_message,
                errors: Vec::new(),
            }),
        }
    }

    /// Edits a record safely: reads its version, then sends the change guarded by `If-Match`.
    pub async fn edit<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let current: Versioned<Value> = self.call(Method::GET, path, None, None).await?;
        let version = current
            .version
            .ok_or_else(|| ClientError::Decode("no ETag on the record".into()))?;
        Ok(self.call(method, path, body, Some(version)).await?.value)
    }
}

async fn api_error(resp: reqwest::Response) -> ClientError {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let message = body
        .get("error")
        .or_else(|| body.get("exn_message"))
        .and_then(Value::as_str)
        .map_or_else(|| format!("HTTP {status}"), str::to_owned);
    let errors = body
        .get("errors")
        .and_then(|e| serde_json::from_value(e.clone()).ok())
        .unwrap_or_default();
    ClientError::Api {
        status: status.as_u16(),
        message,
        errors,
    }
}
