//! JSON and NDJSON publish bodies: events given as `{"data": ..., "event": ...}`
//! objects instead of a raw body.
//!
//! Pure parsing, no I/O: `publish` reads the body and hands it here, and
//! publishes what comes back all at once (`Registry::publish_batch`), so a
//! bad line refuses the whole batch before anything is published.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ApiError;

/// How a publish body is to be read, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// The body is the event's data, verbatim (the contract's form).
    Plain,
    /// `application/json`: one event envelope, or else verbatim data.
    Json,
    /// `application/x-ndjson`: one event envelope per line.
    Ndjson,
}

impl BodyFormat {
    /// Reads the media type, ignoring parameters (`; charset=utf-8`) and
    /// case. Anything not JSON is plain: the raw body keeps working whatever
    /// a client labels it.
    pub fn of(content_type: Option<&str>) -> BodyFormat {
        let Some(content_type) = content_type else {
            return BodyFormat::Plain;
        };
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case("application/json") {
            BodyFormat::Json
        } else if essence.eq_ignore_ascii_case("application/x-ndjson")
            || essence.eq_ignore_ascii_case("application/ndjson")
        {
            BodyFormat::Ndjson
        } else {
            BodyFormat::Plain
        }
    }
}

/// One event as a publisher wrote it in JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonEvent {
    /// Set only when the line named a type; the `event=` parameter applies
    /// otherwise.
    pub event_type: Option<String>,
    pub data: String,
}

/// The envelope: `data` is required, `event` optional, nothing else, so that
/// an ordinary JSON document is never mistaken for one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
    event: Option<String>,
}

impl Envelope<'_> {
    /// A JSON string is the data itself; any other JSON value is published
    /// as its text, exactly as written.
    fn into_event(self) -> Result<JsonEvent, serde_json::Error> {
        let raw = self.data.get();
        let data = if raw.starts_with('"') {
            serde_json::from_str::<String>(raw)?
        } else {
            raw.to_owned()
        };
        Ok(JsonEvent {
            event_type: self.event,
            data,
        })
    }
}

/// An `application/json` body: `Some` event when it is an envelope, `None`
/// when it is any other JSON (or not JSON at all), which the contract says
/// is published verbatim.
pub fn parse_envelope(body: &str) -> Option<JsonEvent> {
    serde_json::from_str::<Envelope>(body)
        .and_then(Envelope::into_event)
        .ok()
}

/// The longest piece of a client's input quoted back in a reason.
const MAX_QUOTED: usize = 120;

/// An `application/x-ndjson` body: one envelope per line, blank lines
/// skipped. The first bad line refuses the batch, with its number (counting
/// from 1) in the reason. More than `max_events` events is refused as soon
/// as the line after the last allowed one is seen, before it is parsed: a
/// body of tiny lines must not turn into a crowd of allocations first.
pub fn parse_ndjson(body: &str, max_events: usize) -> Result<Vec<(usize, JsonEvent)>, ApiError> {
    let mut events = Vec::new();
    for (index, line) in body.split('\n').enumerate() {
        let line_number = index + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        if events.len() == max_events {
            return Err(ApiError::BatchTooManyEvents { max: max_events });
        }
        let event = serde_json::from_str::<Envelope>(line)
            .and_then(Envelope::into_event)
            .map_err(|err| ApiError::InvalidBatchLine {
                line: line_number,
                reason: format!(
                    "expected {{\"data\": ..., \"event\": ...}} ({})",
                    describe(&err)
                ),
            })?;
        events.push((line_number, event));
    }
    if events.is_empty() {
        return Err(ApiError::EmptyBatch);
    }
    Ok(events)
}

/// serde_json's message without its "at line 1 column N" suffix, which
/// would be wrong here (the line is ours to count), on one line (it may
/// quote a key the client wrote: escaped) and short.
fn describe(err: &serde_json::Error) -> String {
    let message = err.to_string();
    let message = match message.rfind(" at line ") {
        Some(at) => &message[..at],
        None => &message,
    };
    let escaped: String = message.escape_debug().collect();
    match escaped.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: Option<&str>, data: &str) -> JsonEvent {
        JsonEvent {
            event_type: event_type.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    #[test]
    fn formats() {
        assert_eq!(BodyFormat::of(None), BodyFormat::Plain);
        assert_eq!(BodyFormat::of(Some("text/plain")), BodyFormat::Plain);
        assert_eq!(
            BodyFormat::of(Some("Application/JSON; charset=utf-8")),
            BodyFormat::Json
        );
        assert_eq!(
            BodyFormat::of(Some("application/x-ndjson")),
            BodyFormat::Ndjson
        );
        assert_eq!(
            BodyFormat::of(Some("application/ndjson")),
            BodyFormat::Ndjson
        );
        assert_eq!(
            BodyFormat::of(Some("application/x-www-form-urlencoded")),
            BodyFormat::Plain
        );
    }

    #[test]
    fn envelopes() {
        assert_eq!(
            parse_envelope(r#"{"data":"a\nb","event":"tick"}"#),
            Some(event(Some("tick"), "a\nb"))
        );
        // Non-string data is published as written.
        assert_eq!(
            parse_envelope(r#"{"data": {"price": 3.10}}"#),
            Some(event(None, r#"{"price": 3.10}"#))
        );
        // Anything else is not an envelope: published verbatim by the caller.
        assert_eq!(parse_envelope(r#"{"price": 3}"#), None);
        assert_eq!(parse_envelope(r#"{"data": "x", "id": 1}"#), None);
        assert_eq!(parse_envelope(r#"["data"]"#), None);
        assert_eq!(parse_envelope("plain text"), None);
    }

    #[test]
    fn ndjson_lines() {
        let body = "{\"data\":\"one\"}\r\n\n  \n{\"data\":\"two\",\"event\":\"x\"}\n";
        assert_eq!(
            parse_ndjson(body, 10),
            Ok(vec![(1, event(None, "one")), (4, event(Some("x"), "two"))])
        );
    }

    #[test]
    fn a_bad_line_is_named() {
        let body = "{\"data\":\"one\"}\n{\"data\":\"two\"}\n{\"dta\":\"three\"}\n";
        let err = parse_ndjson(body, 10).unwrap_err();
        assert_eq!(err.status(), 400);
        let reason = err.to_string();
        assert!(reason.starts_with("line 3: "), "{reason}");
        assert!(!reason.contains('\n'), "{reason}");
        assert!(matches!(
            parse_ndjson("{\"data\":\"ok\"}\nnot json", 10),
            Err(ApiError::InvalidBatchLine { line: 2, .. })
        ));
    }

    #[test]
    fn an_empty_batch_is_refused() {
        assert_eq!(parse_ndjson("", 10), Err(ApiError::EmptyBatch));
        assert_eq!(parse_ndjson("\n\r\n", 10), Err(ApiError::EmptyBatch));
    }

    #[test]
    fn too_many_events_stop_the_parse() {
        let body = "{\"data\":0}\n".repeat(3) + "not even json\n";
        assert_eq!(
            parse_ndjson(&body, 3).unwrap_err(),
            ApiError::BatchTooManyEvents { max: 3 }
        );
    }

    #[test]
    fn quoted_keys_stay_on_one_short_line() {
        let key = format!("a\\nb{}", "x".repeat(500));
        let body = format!("{{\"{key}\":1}}");
        let reason = parse_ndjson(&body, 10).unwrap_err().to_string();
        assert!(!reason.contains('\n'), "{reason}");
        assert!(reason.len() < 300, "{reason}");
    }
}
