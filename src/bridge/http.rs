//! What the bridge's HTTP endpoints share: JSON request bodies, bounded, and JSON answers that
//! no cache keeps. No endpoint lives here, and nothing here authorizes.

use crate::engine::full;
use http_body_util::{BodyExt, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::engine::http::HttpRequest;
use crate::engine::Body;

/// Largest request body.
const MAX_BODY: usize = 1_000_000;

/// The namespace a request names when it names none.
pub(crate) fn root() -> String {
    "/".into()
}

/// A JSON response that no cache keeps.
pub fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut res = Response::new(full(body.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A JSON error response: `{"error": message}`.
pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    json_response(status, &json!({ "error": message.to_string() }))
}

/// Reads a JSON request body, or answers why not.
pub(crate) async fn json_request<T: serde::de::DeserializeOwned>(
    req: HttpRequest,
) -> Result<T, Response<Body>> {
    if req.method() != Method::POST {
        return Err(error(StatusCode::METHOD_NOT_ALLOWED, "use POST"));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body over {MAX_BODY} bytes"),
            ))
        }
    };
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid request: {e}")))
}
