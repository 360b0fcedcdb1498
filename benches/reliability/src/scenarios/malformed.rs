//! R13, the malformed-input sweep (nchan's `test_weird_msgids` and more):
//! odd resume ids, topics, event types, query parameters, request heads and
//! bodies, each sent as raw bytes on a connection of its own. Each must be
//! answered as the contract (docs/http-api.md) says: a one-line `4xx` (status, then a
//! one-line plain-text reason), or for a resume id that cannot be resumed a
//! `gap` (its data the id, JSON-escaped, and nothing injected into the
//! stream); never a `5xx`. After each case, a new subscriber and a publish
//! must still work.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::malformed_cases::{Case, Expect, cases};
use super::{Ctx, RowFuture};
use crate::http::{self, Conn};
use crate::row::Row;
use crate::sse::{Frame, SseStream};

pub fn run(ctx: &Ctx) -> RowFuture<'_> {
    Box::pin(sweep(ctx))
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
