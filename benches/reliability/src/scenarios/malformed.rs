//! R13, the malformed-input sweep (nchan's `test_weird_msgids` and more):
//! odd resume ids, topics, event types, query parameters, request heads and
//! bodies, each sent as raw bytes on a connection of its own. Each must be
//! answered as the README's contract says: a one-line `4xx` (status, then a
//! one-line plain-text reason), or for a resume id that cannot be resumed a
//! `gap` (its data the id, JSON-escaped, and nothing injected into the
//! stream); never a `5xx`. After each case, a new subscriber and a publish
//! must still work.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::{Ctx, RowFuture};
use crate::http::{self, Conn, percent_encode};
use crate::row::Row;
use crate::sse::{Frame, SseStream};

pub fn run(ctx: &Ctx) -> RowFuture<'_> {
    Box::pin(sweep(ctx))
}

/// What a case must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
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

struct Case {
    what: String,
    request: Vec<u8>,
    expect: Expect,
    /// The id a `gap` must echo, when the server sees it as text.
    gap_echo: Option<String>,
}

/// What a case got.
#[derive(Debug)]
enum Outcome {
    /// A 200 event stream: whether it opened with a `gap`, and what that
    /// echoed; problems with its frames.
    Stream {
        gap: Option<String>,
        problems: Vec<String>,
    },
    /// Any other answer: status, and whether the body is one line of plain
    /// text.
    Answer {
        status: u16,
        one_line: bool,
        body: String,
    },
    /// No answer (the connection closed or nothing came in time).
    NoAnswer(String),
}

async fn sweep(ctx: &Ctx) -> Result<Row, String> {
    let gateway = ctx.launcher.start(0, &[]).await?;
    let addr = gateway.addr;
    let mut publisher = Conn::connect(addr).await?;
    let first = publisher.publish("sweep/seed", b"seed").await?;
    let epoch = http::published(&first)
        .and_then(|p| p.id.split_once('-').map(|(e, _)| e.to_string()))
        .ok_or("no id in the first publish")?;
    let cases = cases(&epoch);
    let mut row = Row::new("R13", "malformed-input sweep");
    let (mut n_ok, mut n_5xx, mut failures, mut health_failures) = (0, 0, Vec::new(), 0);
    for (i, case) in cases.iter().enumerate() {
        let outcome = send(addr, &case.request).await;
        if let Outcome::Answer { status, .. } = &outcome
            && *status >= 500
        {
            n_5xx += 1;
        }
        match judge(case, &outcome) {
            Ok(()) => n_ok += 1,
            Err(why) => {
                eprintln!("    case {:?}: {why}", case.what);
                failures.push(format!("{}: {why}", case.what));
            }
        }
        if let Err(err) = healthy(addr, &mut publisher, i).await {
            health_failures += 1;
            failures.push(format!("after {}: {err}", case.what));
            // A fresh publish connection, in case that one broke.
            publisher = Conn::connect(addr).await?;
        }
    }
    let alive = gateway.rss_kib() > 0;
    row.load = "one request at a time, a subscribe + publish after each".into();
    row.bad_inputs = format!(
        "{} cases: ids (CR/LF, 129 B, huge, non-ASCII, foreign), topics (//, %2F, NUL, 257 B), event=gap, repeated parameters, invalid UTF-8 bodies, bad heads",
        cases.len()
    );
    row.check(
        n_ok == cases.len(),
        format!(
            "each answered as the contract says (one-line 4xx, or gap for ids): {n_ok}/{}",
            cases.len()
        ),
    );
    row.check(n_5xx == 0, format!("no 5xx ({n_5xx})"));
    row.check(
        health_failures == 0 && alive,
        format!(
            "a new subscribe + publish works after every case ({} of {})",
            cases.len() - health_failures,
            cases.len()
        ),
    );
    for failure in failures {
        row.note(failure);
    }
    Ok(row)
}

/// A subscriber opened now gets a publish made now.
async fn healthy(addr: SocketAddr, publisher: &mut Conn, i: usize) -> Result<(), String> {
    let topic = format!("sweep/ok{}", i % 4);
    let mut stream = SseStream::open(addr, &format!("/subscribe/{topic}"), "").await?;
    if stream.status != 200 {
        return Err(format!("subscribe answered {}", stream.status));
    }
    wait_position(&mut stream).await?;
    let data = format!("ok-{i}");
    let response = publisher.publish(&topic, data.as_bytes()).await?;
    if response.status != 200 {
        return Err(format!("publish answered {}", response.status));
    }
    loop {
        let frame = stream
            .next_frame(Duration::from_secs(2))
            .await?
            .ok_or("stream ended")?;
        if frame.is_event() {
            return match frame.data.as_deref() == Some(data.as_str()) {
                true => Ok(()),
                false => Err(format!("got {:?}, not {data}", frame.data)),
            };
        }
    }
}

async fn wait_position(stream: &mut SseStream) -> Result<(), String> {
    for _ in 0..4 {
        let frame = stream
            .next_frame(Duration::from_secs(2))
            .await?
            .ok_or("stream ended before its position block")?;
        if frame.is_position() {
            return Ok(());
        }
    }
    Err("no position block".into())
}

async fn send(addr: SocketAddr, request: &[u8]) -> Outcome {
    let stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(err) => return Outcome::NoAnswer(format!("connect: {err}")),
    };
    let sse =
        match tokio::time::timeout(Duration::from_secs(5), SseStream::open_on(stream, request))
            .await
        {
            Ok(Ok(sse)) => sse,
            Ok(Err(err)) => return Outcome::NoAnswer(err),
            Err(_) => return Outcome::NoAnswer("no answer within 5 s".into()),
        };
    let is_stream = sse.status == 200
        && sse
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream");
    if is_stream {
        return read_opening(sse).await;
    }
    let status = sse.status;
    let plain = sse
        .head
        .to_ascii_lowercase()
        .contains("content-type: text/plain; charset=utf-8");
    match sse.rest_of_body(Duration::from_secs(2)).await {
        Ok(body) => {
            let body = String::from_utf8_lossy(&body).into_owned();
            let one_line = plain
                && body.len() > 1
                && body.ends_with('\n')
                && body.matches('\n').count() == 1
                && !body.contains('\r');
            Outcome::Answer {
                status,
                one_line,
                body,
            }
        }
        Err(err) => Outcome::NoAnswer(format!("{status} with {err}")),
    }
}

/// Reads a stream's opening (`retry:`, maybe a `gap`, the position block).
async fn read_opening(mut sse: SseStream) -> Outcome {
    let (mut gap, mut problems) = (None, Vec::new());
    for _ in 0..6 {
        let frame = match sse.next_frame(Duration::from_secs(2)).await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                problems.push("the stream ended in its opening".into());
                break;
            }
            Err(err) => {
                problems.push(err);
                break;
            }
        };
        if frame.n_unknown_lines > 0 || frame.n_data_lines > 1 {
            problems.push(format!("a malformed frame: {frame:?}"));
        }
        if frame.is_position() {
            break;
        }
        if frame.is_gap() {
            if gap.is_some() {
                problems.push("two gap events".into());
            }
            gap = Some(gap_echo(&frame).unwrap_or_else(|| {
                problems.push(format!(
                    "gap data is not {{\"last_event_id\": ...}}: {frame:?}"
                ));
                String::new()
            }));
        } else if frame.is_event() {
            problems.push(format!("an event nobody published: {frame:?}"));
        } else if frame.retry.is_none() {
            problems.push(format!("an unexpected frame: {frame:?}"));
        }
    }
    Outcome::Stream { gap, problems }
}

fn gap_echo(frame: &Frame) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(frame.data.as_deref()?).ok()?;
    Some(value.get("last_event_id")?.as_str()?.to_string())
}

fn judge(case: &Case, outcome: &Outcome) -> Result<(), String> {
    let refusal_ok = |status: u16, one_line: bool, want: Option<u16>| -> Result<(), String> {
        let status_ok = match want {
            Some(want) => status == want,
            None => (400..500).contains(&status),
        };
        match (status_ok, one_line) {
            (true, true) => Ok(()),
            (true, false) => Err(format!("{status} without a one-line reason")),
            (false, _) => Err(format!("answered {status}")),
        }
    };
    match (case.expect, outcome) {
        (_, Outcome::NoAnswer(why)) => Err(format!("no answer: {why}")),
        (_, Outcome::Stream { problems, .. }) if !problems.is_empty() => Err(problems.join("; ")),
        (
            Expect::Gap | Expect::GapOr4xx,
            Outcome::Stream {
                gap: Some(echo), ..
            },
        ) => match &case.gap_echo {
            Some(id) if id != echo => Err(format!("gap echoes {echo:?}, not {id:?}")),
            _ => Ok(()),
        },
        (Expect::Gap | Expect::GapOr4xx, Outcome::Stream { gap: None, .. }) => {
            Err("200 without a gap".into())
        }
        (
            Expect::GapOr4xx,
            Outcome::Answer {
                status, one_line, ..
            },
        ) => refusal_ok(*status, *one_line, None),
        (
            Expect::Status(want),
            Outcome::Answer {
                status, one_line, ..
            },
        ) => {
            if (200..300).contains(&want) {
                return match *status == want {
                    true => Ok(()),
                    false => Err(format!("answered {status}, not {want}")),
                };
            }
            refusal_ok(*status, *one_line, Some(want))
        }
        (Expect::Ok, Outcome::Stream { gap: None, .. }) => Ok(()),
        (Expect::Ok, Outcome::Stream { gap: Some(_), .. }) => Err("an unexpected gap".into()),
        (Expect::Not5xx, Outcome::Stream { .. }) => Ok(()),
        (
            Expect::Not5xx,
            Outcome::Answer {
                status, one_line, ..
            },
        ) => match *status {
            200..=299 => Ok(()),
            _ => refusal_ok(*status, *one_line, None),
        },
        (expect, Outcome::Answer { status, body, .. }) => Err(format!(
            "expected {expect:?}, answered {status}: {:?}",
            body.trim_end()
        )),
        (expect, Outcome::Stream { .. }) => Err(format!("expected {expect:?}, got a stream")),
    }
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
fn cases(epoch: &str) -> Vec<Case> {
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
