//! The subscribe query string: form decoding (`http::query`), the topics of
//! a subscribe (`subscribe::topics`, path or repeated `topic=`) and its
//! resume id (`subscribe::resume_id`). Never panics; the output is bounded by
//! the input and by `max_topics_per_subscription`; every refusal is a
//! one-line `400`.
//!
//! Input: `<query> [0xFF <path topic> [0xFF <Last-Event-ID value>]]` (0xFF
//! never occurs in UTF-8, so the seeds stay readable).
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use ssegate::fuzzing::ApiError;
use ssegate::fuzzing::query::{pairs, resume_id, single, topics};
use ssegate::fuzzing::topic::TopicName;

fn decoded_pairs(query: &str) -> Vec<(String, String)> {
    pairs(Some(query))
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

fn values_of(query: &str, name: &str) -> Vec<String> {
    decoded_pairs(query)
        .into_iter()
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value)
        .collect()
}

fn check_refusal(err: &ApiError) {
    assert_eq!(err.status(), 400, "{err:?}");
    let reason = err.to_string();
    assert!(
        !reason.is_empty() && !reason.contains(['\r', '\n']),
        "{reason:?}"
    );
}

fn check_pairs(query: &str) {
    assert_eq!(pairs(None).count(), 0);
    let decoded = decoded_pairs(query);
    // One pair at most per `&`-separated piece, and decoding never grows
    // the text (`%XX` is three bytes for one, U+FFFD is three for at least one).
    assert!(decoded.len() <= query.split('&').count());
    let n_bytes: usize = decoded.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(
        n_bytes <= query.len(),
        "{query:?} decoded to {n_bytes} bytes"
    );
}

fn check_single(query: &str, name: &'static str) {
    let values = values_of(query, name);
    match single(Some(query), name) {
        Ok(None) => assert!(values.is_empty()),
        Ok(Some(value)) => assert_eq!(values, [value]),
        Err(err) => {
            assert_eq!(err, ApiError::DuplicateParameter(name));
            assert!(values.len() >= 2);
            check_refusal(&err);
        }
    }
}

fn check_topics(path_topic: Option<&str>, query: Option<&str>, max: usize) {
    let mut distinct: Vec<String> = Vec::new();
    for value in query.map(|q| values_of(q, "topic")).unwrap_or_default() {
        if !distinct.contains(&value) {
            distinct.push(value);
        }
    }
    match topics(path_topic, query, max) {
        Ok(names) => {
            assert!((1..=max).contains(&names.len()));
            let names: Vec<&str> = names.iter().map(TopicName::as_str).collect();
            assert_eq!(names.iter().collect::<HashSet<_>>().len(), names.len());
            for name in &names {
                assert!(TopicName::parse(name).is_ok());
            }
            match path_topic {
                Some(path_topic) => {
                    assert!(distinct.is_empty());
                    assert_eq!(names, [path_topic]);
                }
                None => assert_eq!(names, distinct),
            }
        }
        Err(err) => {
            check_refusal(&err);
            if distinct.len() > max {
                assert_eq!(err, ApiError::TooManyTopics { max });
            }
            match err {
                ApiError::TooManyTopics { .. } => assert!(distinct.len() > max),
                ApiError::AmbiguousTopics => assert!(path_topic.is_some() && !distinct.is_empty()),
                ApiError::MissingTopic { .. } => {
                    assert!(path_topic.is_none() && distinct.is_empty())
                }
                ApiError::InvalidTopic(_) => {}
                other => panic!("unexpected refusal {other:?}"),
            }
        }
    }
}

fn check_resume_id(query: &str, header: Option<&[u8]>) {
    // The request hyper would hand over, if it would take these at all.
    let mut request = http::Request::get(format!("/subscribe?{query}"));
    if let Some(value) = header {
        request = request.header("last-event-id", value);
    }
    let Ok(request) = request.body(()) else {
        return;
    };
    let (head, ()) = request.into_parts();
    let seen_query = head.uri.query().unwrap_or("");
    let expected = match header.filter(|value| !value.is_empty()) {
        Some(value) => Ok(Some(value.to_vec())),
        None => match single(Some(seen_query), "last_event_id") {
            Ok(None) => single(Some(seen_query), "lastEventId"),
            other => other,
        }
        .map(|id| id.map(String::into_bytes)),
    };
    let got = resume_id(&head).map(|id| id.map(|id| id.to_vec()));
    if let Err(err) = &got {
        check_refusal(err);
    }
    if let Ok(Some(id)) = &got {
        assert!(id.len() <= query.len() + header.map_or(0, <[u8]>::len));
    }
    assert_eq!(got, expected);
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0xFF);
    let query = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let path_topic = parts.next().map(String::from_utf8_lossy);
    let header = parts.next();

    check_pairs(&query);
    for name in ["last_event_id", "lastEventId", "event", "topic"] {
        check_single(&query, name);
    }
    for max in [1, 4, 1024] {
        check_topics(path_topic.as_deref(), Some(&query), max);
    }
    check_topics(path_topic.as_deref(), None, 4);
    check_resume_id(&query, header);
});
