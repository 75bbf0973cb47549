//! The typed HTTP client of the fledge API, shared by the CLI, the demo and the
//! tests.
//!
//! It speaks the contract of this crate's types and nothing more: JSON in and out,
//! a bearer token when one is given, and the server's `{"error": {"code",
//! "message"}}` turned into an error that says what the server said. Answers are
//! decoded into the same types the server built them from.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::app::{App, AppConfig};
use crate::group::Group;
use crate::rollout::{Action, ActionRequest, Event, ListQuery, Rollout};
use crate::status::{LiveMessage, Status};

/// The header a client may set to name the spec in error messages (e.g. the file
/// name `fledge apply -f` read it from).
pub const ORIGIN_HEADER: &str = "x-fledge-origin";

/// What went wrong talking to the server.
#[derive(Debug)]
pub enum ClientError {
    /// The `--server` value is not a usable URL.
    BadServer {
        /// The value given.
        server: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The `--ca-cert` file cannot be used.
    CaCert {
        /// The file given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The server could not be reached, or the connection broke.
    Connect {
        /// The URL requested.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The server's error code (`not_found`, `conflict`, …), or the status text.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server answered something that is not the API's JSON.
    Protocol {
        /// The URL requested.
        url: String,
        /// What was wrong with the answer.
        detail: String,
    },
}

// === impl ClientError ===

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadServer { server, reason } => {
                write!(f, "invalid --server/FLEDGE_SERVER {server:?}: {reason}")
            }
            Self::CaCert { path, reason } => {
                write!(
                    f,
                    "cannot use --ca-cert/FLEDGE_CA_CERT {}: {reason}",
                    path.display()
                )
            }
            Self::Connect { url, source } => {
                // The innermost cause says what happened ("Connection refused");
                // the layers above it only repeat the URL.
                let mut cause: &dyn std::error::Error = source;
                while let Some(inner) = cause.source() {
                    cause = inner;
                }
                let what = if source.is_timeout() {
                    "timed out".to_string()
                } else {
                    cause.to_string()
                };
                // A TLS failure means the server answered: the hint is about trust.
                let hint = if what.contains("CaUsedAsEndEntity") {
                    "the server presents a CA certificate as its own, as a bare \
                     `openssl req -x509` makes; issue the server a certificate from a CA \
                     and name that CA with --ca-cert (docs/server.md, TLS)"
                } else if what.contains("certificate") {
                    "does its certificate chain to a CA this machine trusts? name a \
                     private CA with --ca-cert or FLEDGE_CA_CERT"
                } else {
                    "is it running? set its address with --server or FLEDGE_SERVER"
                };
                write!(
                    f,
                    "cannot reach the fledge server at {url}: {what} ({hint})"
                )
            }
            Self::Api {
                status,
                code,
                message,
            } => write!(f, "{message} ({code}, HTTP {})", status.as_u16()),
            Self::Protocol { url, detail } => {
                write!(f, "unexpected answer from {url}: {detail}")
            }
        }
    }
}

impl ClientError {
    /// Whether sending the same request again later may succeed: the server could
    /// not be reached (down, restarting), broke the connection, or answered 5xx or
    /// 429. A refusal that names the request (4xx) or a bad flag is not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Api { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Self::BadServer { .. } | Self::CaCert { .. } | Self::Protocol { .. } => false,
        }
    }
}

impl std::error::Error for ClientError {}

/// A connection to one fledge API server.
#[derive(Clone)]
pub struct ApiClient {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
    /// The same, without a request timeout, for the event stream.
    streaming: reqwest::Client,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// One server-sent event from `GET /events`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, empty when absent.
    pub event: String,
    /// The `data:` lines, joined with newlines.
    pub data: String,
}

// === impl ApiClient ===

impl ApiClient {
    /// A client for `server` (`http://host:port` or `https://host:port`; a bare
    /// `host:port` means http). An `https` server's certificate must chain to the
    /// system's roots or to a CA in the PEM file `ca_cert`.
    pub fn new(
        server: &str,
        token: Option<String>,
        ca_cert: Option<&Path>,
    ) -> Result<Self, ClientError> {
        install_crypto_provider();
        let bad = |reason: String| ClientError::BadServer {
            server: server.to_string(),
            reason,
        };
        let with_scheme = if server.contains("://") {
            server.to_string()
        } else {
            format!("http://{server}")
        };
        let mut base = Url::parse(&with_scheme).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad(format!(
                "scheme {:?} is not http or https",
                base.scheme()
            )));
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(bad("no host".to_string()));
        }
        // Paths are joined below the server URL, which may carry a prefix.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let token = token.filter(|t| !t.trim().is_empty());
        let extra_roots = match ca_cert {
            Some(path) => read_ca_certs(path)?,
            None => Vec::new(),
        };
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .user_agent(concat!("fledge-cli/", env!("CARGO_PKG_VERSION")))
                .tls_certs_merge(extra_roots.iter().cloned())
        };
        let http = builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let streaming = builder().build().map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            base,
            token,
            http,
            streaming,
        })
    }

    /// The URL of `segments` below the base, each one percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    fn request(
        &self,
        client: &reqwest::Client,
        method: Method,
        url: Url,
    ) -> reqwest::RequestBuilder {
        let req = client
            .request(method, url)
            .header(reqwest::header::ACCEPT, "application/json");
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// Sends a request and decodes the JSON answer, turning error statuses into
    /// [`ClientError::Api`].
    ///
    /// A 429 (the server's per-client rate limit) is retried after the
    /// `Retry-After` it names, a few times: the server refuses such a request before
    /// handling it, so sending it again is safe even when it changes something.
    async fn send(
        &self,
        mut req: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<Value, ClientError> {
        let connect = |source| ClientError::Connect {
            url: url.to_string(),
            source,
        };
        let mut attempts = 1;
        let resp = loop {
            // A body that streams cannot be sent twice; every body here is in memory.
            let again = req.try_clone();
            let resp = req.send().await.map_err(connect)?;
            match (again, retry_after(&resp)) {
                (Some(next), Some(wait)) if attempts < RATE_LIMIT_ATTEMPTS => {
                    eprintln!(
                        "fledge: the server is rate limiting this client; retrying in {}s",
                        wait.as_secs()
                    );
                    tokio::time::sleep(wait).await;
                    attempts += 1;
                    req = next;
                }
                _ => break resp,
            }
        };
        let status = resp.status();
        let body = resp.bytes().await.map_err(connect)?;
        if !status.is_success() {
            return Err(api_error(status, &body));
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol {
            url: url.to_string(),
            detail: format!("not JSON ({e})"),
        })
    }

    /// Sends a request and decodes its answer as `T`.
    async fn send_as<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<T, ClientError> {
        let value = self.send(req, url).await?;
        serde_json::from_value(value).map_err(|e| ClientError::Protocol {
            url: url.to_string(),
            detail: format!("not the API's JSON ({e})"),
        })
    }

    /// `GET` a path below the base URL, as JSON of any shape.
    pub async fn get(&self, segments: &[&str]) -> Result<Value, ClientError> {
        let url = self.url(segments);
        let req = self.request(&self.http, Method::GET, url.clone());
        self.send(req, &url).await
    }

    /// `GET` a path below the base URL, decoded as `T`.
    async fn get_as<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, ClientError> {
        let url = self.url(segments);
        let req = self.request(&self.http, Method::GET, url.clone());
        self.send_as(req, &url).await
    }

    /// `POST /rollouts` with a spec, as YAML or JSON according to `content_type`;
    /// `origin` names the spec in the server's error messages (e.g. its file name).
    pub async fn create_rollout(
        &self,
        spec: String,
        content_type: &str,
        origin: Option<&str>,
    ) -> Result<Rollout, ClientError> {
        self.post_document("rollouts", spec, content_type, origin)
            .await
    }

    /// `POST /groups` with a group document, as YAML or JSON according to
    /// `content_type`; `origin` names it in the server's error messages.
    pub async fn create_group(
        &self,
        document: String,
        content_type: &str,
        origin: Option<&str>,
    ) -> Result<Group, ClientError> {
        self.post_document("groups", document, content_type, origin)
            .await
    }

    /// `GET /groups/{id}`; `id` may be a group's name (the newest of that name).
    pub async fn group(&self, id: &str) -> Result<Group, ClientError> {
        self.get_as(&["groups", id]).await
    }

    /// `GET /groups`, newest first; only active ones when `active`.
    pub async fn groups(
        &self,
        active: bool,
        limit: Option<u32>,
    ) -> Result<Vec<Group>, ClientError> {
        let mut url = self.url(&["groups"]);
        if active {
            url.query_pairs_mut().append_pair("active", "true");
        }
        if let Some(limit) = limit {
            url.query_pairs_mut()
                .append_pair("limit", &limit.to_string());
        }
        let req = self.request(&self.http, Method::GET, url.clone());
        self.send_as(req, &url).await
    }

    /// `POST /groups/{id}/{action}` (`promote`, `abort`, `pause` or `resume`);
    /// `full` only for a promote, `reason` recorded in the group's history.
    pub async fn act_on_group(
        &self,
        id: &str,
        action: Action,
        full: bool,
        reason: Option<String>,
    ) -> Result<Group, ClientError> {
        let full = (full && action == Action::Promote).then_some("full");
        self.post_action(&["groups", id, action.as_str()], full, reason)
            .await
    }

    /// `POST` a YAML or JSON document to a collection.
    async fn post_document<T: DeserializeOwned>(
        &self,
        collection: &str,
        body: String,
        content_type: &str,
        origin: Option<&str>,
    ) -> Result<T, ClientError> {
        let url = self.url(&[collection]);
        let mut req = self
            .request(&self.http, Method::POST, url.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        if let Some(origin) = origin {
            req = req.header(ORIGIN_HEADER, origin);
        }
        self.send_as(req, &url).await
    }

    /// `GET /rollouts/{id}`; `id` may be an app name (its active or latest rollout).
    pub async fn rollout(&self, id: &str) -> Result<Rollout, ClientError> {
        self.get_as(&["rollouts", id]).await
    }

    /// `GET /rollouts/{id}/events`: the events after `after` (a `seq`), oldest first.
    pub async fn rollout_events(&self, id: &str, after: i64) -> Result<Vec<Event>, ClientError> {
        let mut url = self.url(&["rollouts", id, "events"]);
        if after > 0 {
            url.query_pairs_mut()
                .append_pair("after", &after.to_string());
        }
        let req = self.request(&self.http, Method::GET, url.clone());
        self.send_as(req, &url).await
    }

    /// `GET /rollouts`, newest first, filtered as `query` says.
    pub async fn rollouts(&self, query: &ListQuery) -> Result<Vec<Rollout>, ClientError> {
        let mut url = self.url(&["rollouts"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(app) = &query.app {
                q.append_pair("app", app);
            }
            if let Some(phase) = query.phase {
                q.append_pair("phase", phase.as_str());
            }
            if let Some(limit) = query.limit {
                q.append_pair("limit", &limit.to_string());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let req = self.request(&self.http, Method::GET, url.clone());
        self.send_as(req, &url).await
    }

    /// `GET /status`.
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.get_as(&["status"]).await
    }

    /// `GET /apps`.
    pub async fn apps(&self) -> Result<Vec<App>, ClientError> {
        self.get_as(&["apps"]).await
    }

    /// `PUT /apps/{app}`: registers or changes an app.
    pub async fn put_app(&self, app: &AppConfig) -> Result<App, ClientError> {
        let url = self.url(&["apps", &app.name]);
        let req = self.request(&self.http, Method::PUT, url.clone()).json(app);
        self.send_as(req, &url).await
    }

    /// `POST /rollouts/{id}/{action}`; `full` only for a promote, `reason` recorded
    /// in the event.
    pub async fn act(
        &self,
        id: &str,
        action: Action,
        full: bool,
        reason: Option<String>,
    ) -> Result<Rollout, ClientError> {
        let full = (full && action == Action::Promote).then_some("full");
        self.post_action(&["rollouts", id, action.as_str()], full, reason)
            .await
    }

    /// `POST /apps/{app}/undo`: starts a rollout back to the app's previous stable
    /// version, through the latest spec's stages or, with `now`, all at once.
    pub async fn undo(
        &self,
        app: &str,
        now: bool,
        reason: Option<String>,
    ) -> Result<Rollout, ClientError> {
        self.post_action(&["apps", app, "undo"], now.then_some("now"), reason)
            .await
    }

    /// `POST` to an action's path, with `?{flag}=true` when given, and the reason to
    /// record in the body.
    async fn post_action<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        flag: Option<&str>,
        reason: Option<String>,
    ) -> Result<T, ClientError> {
        let mut url = self.url(segments);
        if let Some(flag) = flag {
            url.query_pairs_mut().append_pair(flag, "true");
        }
        let req = self
            .request(&self.http, Method::POST, url.clone())
            .json(&ActionRequest { reason });
        self.send_as(req, &url).await
    }

    /// Opens `GET /events` and yields its messages as they arrive; the stream ends
    /// when the server closes the connection. A message this client cannot read
    /// is an error in the stream, not its end.
    pub async fn live(
        &self,
    ) -> Result<impl Stream<Item = Result<LiveMessage, ClientError>> + use<>, ClientError> {
        let url = self.url(&["events"]).to_string();
        let events = self.events().await?;
        Ok(events.map(move |e| {
            let e = e?;
            LiveMessage::parse(&e.event, &e.data).map_err(|detail| ClientError::Protocol {
                url: url.clone(),
                detail,
            })
        }))
    }

    /// Opens `GET /events` and yields the raw server-sent events as they arrive; the
    /// stream ends when the server closes the connection.
    pub async fn events(
        &self,
    ) -> Result<impl Stream<Item = Result<SseEvent, ClientError>> + use<>, ClientError> {
        let url = self.url(&["events"]);
        let resp = self
            .request(&self.streaming, Method::GET, url.clone())
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|source| ClientError::Connect {
                url: url.to_string(),
                source,
            })?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(api_error(status, &body));
        }
        let mut parser = SseParser::default();
        let url_text = url.to_string();
        let stream = resp
            .bytes_stream()
            .map(move |chunk| match chunk {
                Ok(bytes) => Ok(parser.push(&bytes)),
                Err(source) => Err(ClientError::Connect {
                    url: url_text.clone(),
                    source,
                }),
            })
            .flat_map(|batch| {
                let items: Vec<Result<SseEvent, ClientError>> = match batch {
                    Ok(events) => events.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                };
                futures::stream::iter(items)
            });
        Ok(stream)
    }
}

/// How many times a request refused by the server's rate limit is sent in all.
const RATE_LIMIT_ATTEMPTS: u32 = 4;

/// The longest `Retry-After` the client waits for; beyond it the 429 is the answer.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How long a 429 answer asks the client to wait, if it is a rate-limit refusal
/// with a `Retry-After` in seconds no longer than [`MAX_RETRY_AFTER`].
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    if resp.status() != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let secs: u64 = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.max(1))).filter(|d| *d <= MAX_RETRY_AFTER)
}

/// The certificates of a PEM file, to trust as roots; at least one.
fn read_ca_certs(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let bad = |reason: String| ClientError::CaCert {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| bad(format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no certificate (expected PEM blocks `-----BEGIN CERTIFICATE-----`)".into(),
        ));
    }
    Ok(certs)
}

/// Installs rustls' ring provider as the process default. reqwest (built with
/// `rustls-no-provider`) panics when it builds a client without one, even for plain
/// HTTP; installing twice is harmless, so every client constructor calls this.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The server's `{"error": {"code", "message"}}` as a [`ClientError`]; falls back to
/// the status and the start of the body for answers of another shape (a proxy, a
/// wrong port).
fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let parsed: Option<(String, String)> =
        serde_json::from_slice::<Value>(body).ok().and_then(|v| {
            let err = v.get("error")?;
            let message = err.get("message")?.as_str()?.to_string();
            let code = err
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_string();
            Some((code, message))
        });
    let (code, message) = parsed.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text: String = text.trim().chars().take(200).collect();
        let message = if text.is_empty() {
            format!(
                "the server answered {}",
                status.canonical_reason().unwrap_or("an error")
            )
        } else {
            text
        };
        (
            status
                .canonical_reason()
                .unwrap_or("error")
                .to_lowercase()
                .replace(' ', "_"),
            message,
        )
    });
    ClientError::Api {
        status,
        code,
        message,
    }
}

/// An incremental parser of the `text/event-stream` format: fields per line, an empty
/// line ends an event, `:` lines are comments (keep-alives).
#[derive(Debug, Default)]
struct SseParser {
    buffer: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

// === impl SseParser ===

impl SseParser {
    /// Feeds a chunk and returns the events it completed.
    fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.has_data || !self.current.event.is_empty() {
                    out.push(std::mem::take(&mut self.current));
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "event" => self.current.event = value.to_string(),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_handles_split_chunks_and_comments() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\n\nevent: rollout\nda").is_empty());
        let events = p.push(b"ta: {\"id\":1}\r\ndata: x\n\ndata: y\n\n");
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: "rollout".into(),
                    data: "{\"id\":1}\nx".into()
                },
                SseEvent {
                    event: String::new(),
                    data: "y".into()
                }
            ]
        );
    }

    #[test]
    fn api_errors_carry_the_servers_message() {
        let body =
            br#"{"error":{"code":"conflict","message":"app checkout has an active rollout"}}"#;
        let e = api_error(StatusCode::CONFLICT, body);
        assert_eq!(
            e.to_string(),
            "app checkout has an active rollout (conflict, HTTP 409)"
        );
        let e = api_error(StatusCode::BAD_GATEWAY, b"");
        assert!(e.to_string().contains("Bad Gateway"), "{e}");
    }

    #[test]
    fn only_server_side_and_rate_limit_errors_are_transient() {
        assert!(api_error(StatusCode::SERVICE_UNAVAILABLE, b"").is_transient());
        assert!(api_error(StatusCode::TOO_MANY_REQUESTS, b"").is_transient());
        assert!(!api_error(StatusCode::NOT_FOUND, b"").is_transient());
        assert!(!api_error(StatusCode::UNAUTHORIZED, b"").is_transient());
    }

    #[test]
    fn server_urls_are_normalised_and_ids_encoded() {
        let c = ApiClient::new("127.0.0.1:9", None, None).unwrap();
        assert_eq!(c.base.as_str(), "http://127.0.0.1:9/");
        assert_eq!(
            c.url(&["rollouts", "a b/c", "abort"]).as_str(),
            "http://127.0.0.1:9/rollouts/a%20b%2Fc/abort"
        );
        let c = ApiClient::new("http://h:1/prefix", None, None).unwrap();
        assert_eq!(c.url(&["status"]).as_str(), "http://h:1/prefix/status");
        assert!(ApiClient::new("ftp://h", None, None).is_err());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let c = ApiClient::new("http://h:1", Some("s3cret".into()), None).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
