//! CORS for the publish and subscribe endpoints (`cors_allowed_origins`).
//!
//! A listed origin is echoed back (with `Vary: Origin` and credentials
//! allowed, so `new EventSource(url, {withCredentials: true})` works); `*`
//! answers `*` to everyone. Errors carry the header too, so a browser script
//! can read why it was refused.

use hyper::StatusCode;
use hyper::header::{self, HeaderMap, HeaderValue};

use crate::error::ApiError;
use crate::http::reply::{self, HttpResponse};

/// What `Access-Control-Allow-Origin` says for one request.
#[derive(Debug, Clone)]
pub enum AllowOrigin {
    Any,
    Origin(HeaderValue),
}

/// The allowance for this request's `Origin`, if it has one that is allowed.
pub fn allow_origin(headers: &HeaderMap, allowed: &[String]) -> Option<AllowOrigin> {
    let origin = headers.get(header::ORIGIN)?;
    if allowed.iter().any(|a| a == "*") {
        return Some(AllowOrigin::Any);
    }
    let listed = allowed.iter().any(|a| a.as_bytes() == origin.as_bytes());
    listed.then(|| AllowOrigin::Origin(origin.clone()))
}

/// Adds the CORS response headers for an allowed origin.
pub fn decorate(headers: &mut HeaderMap, allow: &AllowOrigin) {
    match allow {
        AllowOrigin::Any => {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
        AllowOrigin::Origin(origin) => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

/// Answers `OPTIONS`: a CORS preflight when the request has an `Origin`,
/// otherwise a plain list of the allowed methods.
pub fn preflight(
    request_headers: &HeaderMap,
    allowed: &[String],
    methods: &'static str,
) -> Result<HttpResponse, ApiError> {
    let mut response = reply::empty(StatusCode::NO_CONTENT);
    let headers = response.headers_mut();
    headers.insert(header::ALLOW, HeaderValue::from_static(methods));
    if !request_headers.contains_key(header::ORIGIN) {
        return Ok(response);
    }
    if allow_origin(request_headers, allowed).is_none() {
        return Err(ApiError::OriginNotAllowed);
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    // Echo what the browser asks for (bounded by hyper's header limits):
    // Authorization, Content-Type, Last-Event-ID, Cache-Control, ...
    let asked = request_headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        asked.cloned().unwrap_or(HeaderValue::from_static(
            "Authorization, Content-Type, Last-Event-ID",
        )),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    headers.append(
        header::VARY,
        HeaderValue::from_static("Access-Control-Request-Headers"),
    );
    Ok(response)
}
