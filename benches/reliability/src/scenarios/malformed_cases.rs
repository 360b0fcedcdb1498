//! The cases of R13 (`malformed`): raw requests, each with what the
//! contract (docs/http-api.md) says it must get.

use crate::http::percent_encode;

/// What a case must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    /// Exactly this status, with a one-line reason.
    Status(u16),
    /// A `gap` first, echoing the id.
    Gap,
    /// A `gap`, or a one-line 4xx.
    GapOr4xx,
    /// `200` without a `gap` (a valid input at the edge of the rules).
    Ok,
    /// Nothing but "not a 5xx, and one line if an error" (the contract
    /// leaves the answer open).
    Not5xx,
}

pub(super) struct Case {
    pub(super) what: String,
    pub(super) request: Vec<u8>,
    pub(super) expect: Expect,
    /// The id a `gap` must echo, when the server sees it as text.
    pub(super) gap_echo: Option<String>,
}

fn get(target: &[u8], extra: &[u8]) -> Vec<u8> {
    [b"GET ", target, b" HTTP/1.1\r\nHost: r\r\n", extra, b"\r\n"].concat()
}

fn post(target: &[u8], extra: &[u8], body: &[u8]) -> Vec<u8> {
    let length = format!("Content-Length: {}\r\n", body.len());
    [
        b"POST ",
        target,
        b" HTTP/1.1\r\nHost: r\r\n",
        extra,
        length.as_bytes(),
        b"\r\n",
        body,
    ]
    .concat()
}

/// Every case, on topics of their own (`m/<n>`: no events, so a resume
/// there opens with a gap or nothing).
pub(super) fn cases(epoch: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |what: &str, request: Vec<u8>, expect: Expect, gap_echo: Option<String>| {
        cases.push(Case {
            what: what.to_string(),
            request,
            expect,
            gap_echo,
        });
    };
    let n = std::cell::Cell::new(0);
    let topic = || {
        n.set(n.get() + 1);
        format!("/subscribe/m/{}", n.get())
    };
    // Resume ids in the header: ssegate sees the bytes as sent.
    let header_ids: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("id 129 bytes", vec![b'a'; 129], Expect::Gap),
        ("id 128 bytes of junk", vec![b'b'; 128], Expect::Gap),
        ("id 4096 bytes", vec![b'c'; 4096], Expect::Gap),
        ("id a huge decimal", b"9".repeat(40), Expect::Gap),
        (
            "id own epoch, seq 2^64-1 (future)",
            format!("{epoch}-ffffffffffffffff").into_bytes(),
            Expect::Gap,
        ),
        (
            "id foreign epoch",
            b"ffffffffffffffff-0000000000000001".to_vec(),
            Expect::Gap,
        ),
        (
            "id own epoch, upper-case hex",
            format!("{}-0000000000000001", epoch.to_ascii_uppercase()).into_bytes(),
            Expect::Gap,
        ),
        ("id -1", b"-1".to_vec(), Expect::Gap),
        ("id a lone dash", b"-".to_vec(), Expect::Gap),
        (
            "id own epoch, seq 17 hex digits",
            format!("{epoch}-10000000000000000").into_bytes(),
            Expect::Gap,
        ),
        (
            "id non-ASCII (UTF-8 é)",
            "é-ü".as_bytes().to_vec(),
            Expect::Gap,
        ),
        ("id invalid UTF-8", vec![0xff, 0xfe, b'x'], Expect::GapOr4xx),
        ("id with a NUL-free tab", b"a\tb".to_vec(), Expect::Gap),
        (
            "id with a bare CR",
            b"abc\rdef".to_vec(),
            Expect::Status(400),
        ),
    ];
    for (what, id, expect) in header_ids {
        let header = [b"Last-Event-ID: ".as_slice(), &id, b"\r\n"].concat();
        let echo = String::from_utf8(id.clone()).ok();
        let echo = echo.filter(|_| expect == Expect::Gap);
        add(what, get(topic().as_bytes(), &header), expect, echo);
    }
    // Resume ids in the query: ssegate form-decodes them.
    let query_ids: Vec<(&str, &[u8])> = vec![
        ("query id with CR/LF", b"abc\r\ndef"),
        (
            "query id injecting an event",
            b"x\n\nevent: evil\ndata: injected\nid: 1",
        ),
        ("query id with a NUL", b"a\0b"),
        ("query id of 129 bytes", &[b'q'; 129]),
        ("query id non-ASCII", "ä€𝄞".as_bytes()),
    ];
    for (what, id) in query_ids {
        let target = format!("{}?last_event_id={}", topic(), percent_encode(id));
        let echo = String::from_utf8(id.to_vec()).ok();
        add(what, get(target.as_bytes(), b""), Expect::Gap, echo);
    }
    add(
        "query id of invalid UTF-8 (%FF)",
        get(format!("{}?lastEventId=%FF%FE", topic()).as_bytes(), b""),
        Expect::GapOr4xx,
        None,
    );
    add(
        "an own id at seq 0 (valid, nothing missed)",
        get(
            topic().as_bytes(),
            format!("Last-Event-ID: {epoch}-0000000000000000\r\n").as_bytes(),
        ),
        Expect::Ok,
        None,
    );
    add(
        "two Last-Event-ID headers (both junk)",
        get(
            topic().as_bytes(),
            b"Last-Event-ID: junk-one\r\nLast-Event-ID: junk-two\r\n",
        ),
        Expect::GapOr4xx,
        None,
    );
    add(
        "an empty Last-Event-ID",
        get(topic().as_bytes(), b"Last-Event-ID: \r\n"),
        Expect::Not5xx,
        None,
    );
    // Repeated query parameters.
    add(
        "last_event_id twice",
        get(
            format!("{}?last_event_id=a&last_event_id=b", topic()).as_bytes(),
            b"",
        ),
        Expect::Status(400),
        None,
    );
    add(
        "lastEventId twice",
        get(
            format!("{}?lastEventId=a&lastEventId=b", topic()).as_bytes(),
            b"",
        ),
        Expect::Status(400),
        None,
    );
    add(
        "last_event_id and lastEventId (the first wins)",
        get(
            format!("{}?last_event_id=junk&lastEventId=other", topic()).as_bytes(),
            b"",
        ),
        Expect::Gap,
        Some("junk".into()),
    );
    add(
        "event twice on a publish",
        post(b"/publish/m/x?event=a&event=b", b"", b"x"),
        Expect::Status(400),
        None,
    );
    add(
        "the same topic twice in the query",
        get(b"/subscribe?topic=m/dup&topic=m/dup", b""),
        Expect::Not5xx,
        None,
    );
    // Topics.
    let long = |n: usize| "t".repeat(n);
    for (what, target, expect) in [
        ("subscribe a//b", "/subscribe/a//b".to_string(), 400),
        ("publish a//b", "/publish/a//b".to_string(), 400),
        (
            "subscribe a%2Fb in the path",
            "/subscribe/a%2Fb".into(),
            400,
        ),
        ("publish a%2Fb in the path", "/publish/a%2Fb".into(), 400),
        ("subscribe a%00b", "/subscribe/a%00b".into(), 400),
        ("publish a%00b", "/publish/a%00b".into(), 400),
        (
            "subscribe ?topic=a%00b",
            "/subscribe?topic=a%00b".into(),
            400,
        ),
        (
            "subscribe 257-byte topic",
            format!("/subscribe/{}", long(257)),
            400,
        ),
        (
            "publish 257-byte topic",
            format!("/publish/{}", long(257)),
            400,
        ),
        (
            "subscribe ?topic= of 257 bytes",
            format!("/subscribe?topic={}", long(257)),
            400,
        ),
        ("subscribe //a (leading slash)", "/subscribe//a".into(), 400),
        ("subscribe a/ (trailing slash)", "/subscribe/a/".into(), 400),
        ("subscribe with no topic", "/subscribe".into(), 400),
        ("subscribe with an empty topic", "/subscribe/".into(), 400),
        ("subscribe ?topic= empty", "/subscribe?topic=".into(), 400),
        (
            "subscribe %C3%A9 (non-ASCII)",
            "/subscribe/%C3%A9".into(),
            400,
        ),
        ("subscribe a space", "/subscribe?topic=a%20b".into(), 400),
        (
            "topics in path and query",
            "/subscribe/a?topic=b".into(),
            400,
        ),
        (
            "33 topics",
            format!(
                "/subscribe?{}",
                (0..33).map(|i| format!("topic=m{i}&")).collect::<String>()
            ),
            400,
        ),
        ("unknown path", "/nowhere".into(), 404),
    ] {
        let request = match target.starts_with("/publish") {
            true => post(target.as_bytes(), b"", b"x"),
            false => get(target.as_bytes(), b""),
        };
        add(what, request, Expect::Status(expect), None);
    }
    add(
        "a raw NUL byte in the path",
        get(b"/subscribe/a\0b", b""),
        Expect::Status(400),
        None,
    );
    add(
        "raw UTF-8 bytes in the path",
        get("/subscribe/é".as_bytes(), b""),
        Expect::Status(400),
        None,
    );
    add(
        "publish a 256-byte topic (the limit)",
        post(format!("/publish/{}", long(256)).as_bytes(), b"", b"x"),
        Expect::Status(200),
        None,
    );
    add(
        "subscribe ?topic=a%2Fb (a/b)",
        get(b"/subscribe?topic=m%2Fslash", b""),
        Expect::Ok,
        None,
    );
    add(
        "DELETE /publish/x",
        b"DELETE /publish/m/x HTTP/1.1\r\nHost: r\r\n\r\n".to_vec(),
        Expect::Status(405),
        None,
    );
    // Event types.
    for (what, query) in [
        ("event=gap", "event=gap".to_string()),
        ("event of 65 bytes", format!("event={}", "e".repeat(65))),
        ("event empty", "event=".into()),
        ("event with a space", "event=a%20b".into()),
        ("event with a newline", "event=a%0Adata:%20x".into()),
        ("event non-ASCII", "event=%C3%A9".into()),
    ] {
        let target = format!("/publish/m/e?{query}");
        add(
            what,
            post(target.as_bytes(), b"", b"x"),
            Expect::Status(400),
            None,
        );
    }
    // Bodies.
    let ndjson = b"Content-Type: application/x-ndjson\r\n";
    let json = b"Content-Type: application/json\r\n";
    for (what, extra, body) in [
        ("body 0xFF 0xFE", &b""[..], &b"\xff\xfe"[..]),
        ("body truncated UTF-8", b"", b"abc\xe2\x82"),
        ("body overlong UTF-8", b"", b"\xc0\xaf"),
        ("body UTF-8 surrogate", b"", b"\xed\xa0\x80"),
        ("JSON body, invalid UTF-8", json, b"{\"data\":\"\xff\"}"),
        (
            "NDJSON body, invalid UTF-8",
            ndjson,
            b"{\"data\":\"a\"}\n{\"data\":\"\xff\"}\n",
        ),
        (
            "NDJSON, a bad line",
            ndjson,
            b"{\"data\":\"a\"}\nnot json\n",
        ),
        (
            "NDJSON, event gap",
            ndjson,
            b"{\"data\":\"a\",\"event\":\"gap\"}\n",
        ),
        ("NDJSON, empty", ndjson, b"\n\n"),
        (
            "JSON envelope, event gap",
            json,
            b"{\"data\":\"a\",\"event\":\"gap\"}",
        ),
    ] {
        add(
            what,
            post(b"/publish/m/b", extra, body),
            Expect::Status(400),
            None,
        );
    }
    add(
        "body with a NUL (valid UTF-8)",
        post(b"/publish/m/b", b"", b"a\0b"),
        Expect::Status(200),
        None,
    );
    // Heads.
    add(
        "a header of 100 KiB",
        get(
            b"/subscribe/m/h",
            format!("X-Big: {}\r\n", "h".repeat(100 * 1024)).as_bytes(),
        ),
        Expect::GapOr4xx,
        None,
    );
    add(
        "a query of 100 KiB",
        get(
            format!("/subscribe/m/q?x={}", "q".repeat(100 * 1024)).as_bytes(),
            b"",
        ),
        Expect::GapOr4xx,
        None,
    );
    add(
        "Content-Length not a number",
        b"POST /publish/m/c HTTP/1.1\r\nHost: r\r\nContent-Length: ten\r\n\r\nx".to_vec(),
        Expect::Status(400),
        None,
    );
    add(
        "two different Content-Lengths",
        b"POST /publish/m/c HTTP/1.1\r\nHost: r\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy"
            .to_vec(),
        Expect::Status(400),
        None,
    );
    add(
        "HTTP/1.0 garbage request line",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n".to_vec(),
        Expect::Status(400),
        None,
    );
    cases
}
