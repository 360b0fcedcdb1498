//! Building responses: a status plus a one-line reason, JSON, or nothing.

use hyper::header::{self, HeaderValue};
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

/// The response for a refused request, with the headers its status implies.
pub fn error(err: &ApiError) -> HttpResponse {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = text(status, &err.to_string());
    let headers = response.headers_mut();
    match err {
        ApiError::MethodNotAllowed { allow } => {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        ApiError::Unauthorized => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        _ => {}
    }
    if let Some(secs) = err.retry_after() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}
