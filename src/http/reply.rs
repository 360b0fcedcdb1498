//! Building responses: a status plus a one-line reason, JSON, or nothing.

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use crate::error::ApiError;
use crate::http::body::ResponseBody;

pub type HttpResponse = Response<ResponseBody>;

/// A plain-text response whose body is `reason` and a newline.
pub fn text(status: StatusCode, reason: &str) -> HttpResponse {
    let mut response = Response::new(ResponseBody::full(format!("{reason}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A response whose body is JSON already written out.
pub fn json(status: StatusCode, body: String) -> HttpResponse {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub fn empty(status: StatusCode) -> HttpResponse {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = status;
    response
}

/// A temporary refusal as an `EventSource` understands it: `200` with the
/// stream headers, a `retry:` field, a comment naming the reason, and the
/// end of the stream, so that it comes back by itself (a `503` would end it
/// for good). The delay is `refusal_retry` with up to ±50% jitter, so that a
/// crowd refused at once does not return at once.
pub fn temporary_refusal(err: &ApiError, state: &crate::state::AppState) -> HttpResponse {
    let mut response = Response::new(ResponseBody::full(refusal_body(
        err,
        state.config.refusal_retry,
    )));
    for (name, value) in crate::http::subscribe::STREAM_HEADERS {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The body of `temporary_refusal`.
pub fn refusal_body(err: &ApiError, retry: std::time::Duration) -> bytes::Bytes {
    let jitter = (crate::id::unique_u64() % 1001) as f64 / 1000.0 + 0.5;
    let retry_ms = (retry.as_millis() as f64 * jitter).round() as u64;
    bytes::Bytes::from(format!("retry: {retry_ms}\n\n: {err}\n\n"))
}

/// The response for a refused request, with the headers its status implies.
pub fn error(err: &ApiError) -> HttpResponse {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = text(status, &err.to_string());
    error_headers(err, response.headers_mut());
    response
}

/// `error` written out as a complete HTTP/1.1 response that closes the
/// connection, with `extra` headers (CORS), for `http::direct`.
pub fn error_bytes(err: &ApiError, extra: &HeaderMap) -> bytes::Bytes {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = format!("{err}\n");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    error_headers(err, &mut headers);
    headers.extend(extra.clone());
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body.as_bytes());
    bytes::Bytes::from(out)
}

/// The headers a refusal's status implies.
fn error_headers(err: &ApiError, headers: &mut HeaderMap) {
    match err {
        ApiError::MethodNotAllowed { allow } => {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        ApiError::Auth(auth) => {
            if let Some(challenge) = auth.www_authenticate() {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
        }
        _ => {}
    }
    if let Some(secs) = err.retry_after() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
}
