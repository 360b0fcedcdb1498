//! Query strings, decoded as `application/x-www-form-urlencoded` (what
//! `URLSearchParams` produces, so `topic=orders%2F42` means `orders/42`).

use std::borrow::Cow;

use crate::error::ApiError;

/// Every `name=value` pair, percent-decoded.
pub fn pairs(query: Option<&str>) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
}

/// The value of a parameter that may appear at most once.
pub fn single(query: Option<&str>, name: &'static str) -> Result<Option<String>, ApiError> {
    let mut values = pairs(query).filter(|(key, _)| key == name).map(|(_, v)| v);
    let first = values.next().map(Cow::into_owned);
    match values.next() {
        Some(_) => Err(ApiError::DuplicateParameter(name)),
        None => Ok(first),
    }
}
