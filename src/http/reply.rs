//! Building responses: a status plus a one-line reason, JSON, or nothing.

use bytes::{BufMut, Bytes, BytesMut};
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
pub fn refusal_body(err: &ApiError, retry: std::time::Duration) -> Bytes {
    let jitter = (crate::id::unique_u64() % 1001) as f64 / 1000.0 + 0.5;
    let retry_ms = (retry.as_millis() as f64 * jitter).round() as u64;
    Bytes::from(format!("retry: {retry_ms}\n\n: {err}\n\n"))
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
pub fn error_bytes(err: &ApiError, extra: &HeaderMap) -> Bytes {
    let response = error(err);
    let body = format!("{err}\n");
    let mut headers = response.headers().clone();
    headers.extend(extra.clone());
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut out = http1_head(response.status(), &headers);
    out.put_slice(body.as_bytes());
    out.freeze()
}

/// The head of an HTTP/1.1 response whose connection closes after it (the
/// body of a stream ends with the connection), for `http::direct`, which
/// writes responses without hyper.
pub fn http1_head(status: StatusCode, headers: &HeaderMap) -> BytesMut {
    let mut head = BytesMut::with_capacity(256);
    head.put_slice(b"HTTP/1.1 ");
    head.put_slice(status.as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.put_slice(b"\r\n");
    for (name, value) in headers {
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        head.put_slice(b"\r\n");
    }
    head.put_slice(b"connection: close\r\n\r\n");
    head
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
