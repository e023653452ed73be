//! The auth hook: before a socket connects, forward what the browser presented (its Cookie
//! header, its `auth` payload) to an application URL, and let the answer decide.
//!
//! Request: `POST <url>` with JSON
//! `{"namespace", "socket", "auth", "cookie", "remote_address", "user_agent", "origin"}`.
//! Answer (200, JSON): `{"allow": true, "user": "...", "rooms": [...], "data": {...}}` connects the
//! socket, joins the rooms and stores `{user, rooms, data}` as `socket.data()`;
//! `{"allow": false, "message": "...", "data": ...}` refuses it with that CONNECT_ERROR. Any other
//! status, a timeout or an unreachable service refuses with "authentication unavailable": a
//! broken auth service must not open the door.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::socketio::{ConnectError, Halley, Socket};
use halley_transports::IpRange;

/// Largest answer read from the auth service.
const MAX_ANSWER: usize = 64 * 1024;

/// Where and how long to ask.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `http://host:port/path` (plain HTTP: the service is expected beside Halley).
    pub url: Uri,
    pub timeout: Duration,
}

#[derive(Debug, Deserialize)]
struct Answer {
    allow: bool,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    data: Option<Value>,
}

/// Installs the hook on every namespace of `io`.
pub fn install(io: &Halley, config: AuthConfig) {
    let config = Arc::new(config);
    // Behind a reverse proxy the peer is the proxy: report the client it names.
    let trusted: Arc<[IpRange]> = io.engine().config().trusted_proxies.clone().into();
    io.connect_hook(move |socket| {
        let config = Arc::clone(&config);
        let trusted = Arc::clone(&trusted);
        async move { check(&config, &socket, &trusted).await }
    });
}

async fn check(
    config: &AuthConfig,
    socket: &Arc<Socket>,
    trusted: &[IpRange],
) -> Result<(), ConnectError> {
    let unavailable = || ConnectError::new("authentication unavailable");
    let asked = ask(&config.url, socket, trusted);
    let answer = match tokio::time::timeout(config.timeout, asked).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => {
            tracing::warn!(%error, url = %config.url, "auth hook failed");
            return Err(unavailable());
        }
        Err(_) => {
            tracing::warn!(url = %config.url, "auth hook timed out");
            return Err(unavailable());
        }
    };
    if !answer.allow {
        let mut refusal =
            ConnectError::new(answer.message.unwrap_or_else(|| "not authorized".into()));
        refusal.data = answer.data;
        return Err(refusal);
    }
    for room in &answer.rooms {
        socket.join(room.as_str());
    }
    socket.set_data(json!({
        "user": answer.user,
        "rooms": answer.rooms,
        "data": answer.data,
    }));
    Ok(())
}

/// Why asking failed.
#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("auth url needs an http://host:port")]
    BadUrl,
    #[error("connect: {0}")]
    Connect(#[from] std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("status {0}")]
    Status(StatusCode),
    #[error("answer: {0}")]
    Answer(String),
}

async fn ask(url: &Uri, socket: &Socket, trusted: &[IpRange]) -> Result<Answer, AskError> {
    let host = url.host().ok_or(AskError::BadUrl)?;
    if url.scheme_str() != Some("http") {
        return Err(AskError::BadUrl);
    }
    let port = url.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);

    let handshake = socket.handshake();
    let header = |name: header::HeaderName| handshake.headers.get(name.as_str()).map(str::to_owned);
    let body = json!({
        "namespace": socket.ns(),
        "socket": socket.id(),
        "auth": socket.auth(),
        "cookie": header(header::COOKIE),
        "remote_address": handshake.client_ip(trusted).to_string(),
        "user_agent": header(header::USER_AGENT),
        "origin": header(header::ORIGIN),
    });
    let authority = url.authority().map(|a| a.as_str()).unwrap_or(host);
    let request = Request::builder()
        .method(Method::POST)
        .uri(url.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(
            header::HOST,
            HeaderValue::from_str(authority).map_err(|_| AskError::BadUrl)?,
        )
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|_| AskError::BadUrl)?;
    let response = sender.send_request(request).await?;
    if response.status() != StatusCode::OK {
        return Err(AskError::Status(response.status()));
    }
    let bytes = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| AskError::Answer(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| AskError::Answer(e.to_string()))
}
