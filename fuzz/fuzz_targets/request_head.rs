//! The direct path's decision on the first bytes of a plain-text connection
//! (`http::direct::parse_head`, httparse underneath): never panics on any
//! bytes, takes only complete plain `GET /subscribe...` HTTP/1.1 heads
//! without a body or upgrade, and what the subscribe handler then reads from
//! such a head (topics, resume id) never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssegate::fuzzing::ApiError;
use ssegate::fuzzing::direct::{Parsed, parse_head};
use ssegate::fuzzing::query::{resume_id, topics};

fn is_subscribe(bytes: &[u8]) -> bool {
    matches!(parse_head(bytes), Parsed::Subscribe(..))
}

fuzz_target!(|data: &[u8]| {
    let (request, head_len) = match parse_head(data) {
        Parsed::Subscribe(request, head_len) => (request, head_len),
        Parsed::Partial => {
            // Still arriving: so far it can only be a subscribe.
            let n = data.len().min(14);
            assert_eq!(&data[..n], &b"GET /subscribe"[..n]);
            return;
        }
        Parsed::Other => return,
    };
    assert!(head_len <= data.len());
    let head = &data[..head_len];
    assert!(head.starts_with(b"GET /subscribe"));
    assert!(
        head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"),
        "{head:?}"
    );
    assert_eq!(request.method, http::Method::GET);
    assert_eq!(request.version, http::Version::HTTP_11);
    assert!(request.uri.path().starts_with("/subscribe"));
    for name in [http::header::TRANSFER_ENCODING, http::header::UPGRADE] {
        assert!(!request.headers.contains_key(&name), "{name}");
    }
    for length in request.headers.get_all(http::header::CONTENT_LENGTH) {
        assert_eq!(length, "0");
    }
    // The head alone decides the same (what follows it, pipelined requests
    // included, is not its business), and no shorter prefix is taken.
    match parse_head(head) {
        Parsed::Subscribe(again, len) => {
            assert_eq!(len, head_len);
            assert_eq!(again.uri, request.uri);
            assert_eq!(again.headers, request.headers);
        }
        _ => panic!("the head alone is not taken"),
    }
    assert!(!is_subscribe(&head[..head_len - 1]));

    // What `http::subscribe::open` reads next, routed as `http::Endpoint`
    // does (`/subscribe`, or `/subscribe/<topic>` with a topic).
    let path_topic = match request.uri.path() {
        "/subscribe" => None,
        path => match path.strip_prefix("/subscribe/") {
            Some(topic) if !topic.is_empty() => Some(topic),
            _ => return,
        },
    };
    for max in [1, 1024] {
        if let Err(err) = topics(path_topic, request.uri.query(), max) {
            assert_eq!(err.status(), 400, "{err:?}");
        }
    }
    match resume_id(&request) {
        Ok(Some(id)) => assert!(!id.is_empty() || request.uri.query().is_some()),
        Ok(None) => {}
        Err(err) => assert!(matches!(err, ApiError::DuplicateParameter(_)), "{err:?}"),
    }
});
