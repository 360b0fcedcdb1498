//! One subscriber: a raw HTTP/1.1 connection that reads its event stream in
//! bulk and checks every event against the sequence it expects.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stats::{Clock, Stats, parse_payload};
use crate::wire::{Dechunker, drain_events, parse_head};

/// `(seq, id)` of every event a probe received, in order.
pub type IdLog = Rc<RefCell<Vec<(u64, String)>>>;

/// What one subscriber asks for and what it expects.
#[derive(Debug, Clone)]
pub struct SubscriberSpec {
    pub addr: SocketAddr,
    pub topic: String,
    pub last_event_id: Option<String>,
    /// The first sequence number it must receive, when known.
    pub expect_first: Option<u64>,
    /// Reaching this sequence number counts as caught up (reconnect storm).
    pub catch_up_at: Option<u64>,
    /// Where to record `(seq, id)` of every event (the storm's probe).
    pub record_ids: Option<IdLog>,
    /// Come back after a temporary refusal (`retry:` and the end of the
    /// stream, no event), with the same `Last-Event-ID`, after the `retry:`
    /// delay, as an `EventSource` does; without it, that refusal is a lost
    /// stream.
    pub reconnect: bool,
}

/// Bytes read per `read` call: many events per syscall when behind.
const READ_BYTES: usize = 16 * 1024;

/// Runs until the stream ends or the task is aborted; with `reconnect`,
/// comes back as an `EventSource` does after a temporary refusal.
pub async fn run(spec: SubscriberSpec, stats: Rc<Stats>, clock: Clock) {
    let mut checker = Checker {
        expected: spec.expect_first,
        caught_up: false,
        spec: &spec,
        stats: &stats,
        clock,
    };
    let mut connected = false;
    loop {
        match connection(&spec, &stats, &mut checker, &mut connected).await {
            Ended::Refused => Stats::bump(&stats.refused),
            Ended::Lost => Stats::bump(&stats.lost_streams),
            Ended::ComeBack(retry_ms) if spec.reconnect => {
                Stats::bump(&stats.retried);
                tokio::time::sleep(std::time::Duration::from_millis(retry_ms)).await;
                continue;
            }
            Ended::ComeBack(_) => Stats::bump(&stats.lost_streams),
        }
        return;
    }
}

/// How one connection ended.
enum Ended {
    /// A status other than 200.
    Refused,
    /// The stream ended or failed (or could not be opened).
    Lost,
    /// A temporary refusal to an `EventSource`: `200` with a `retry:` field
    /// (this many ms) and no event, then the end of the stream (ssegate's
    /// cluster mode, when a replay from Redis did not come in time).
    ComeBack(u64),
}

/// One connection: the request, then events until the stream ends.
async fn connection(
    spec: &SubscriberSpec,
    stats: &Stats,
    checker: &mut Checker<'_>,
    connected: &mut bool,
) -> Ended {
    let Ok(mut stream) = TcpStream::connect(spec.addr).await else {
        return Ended::Lost;
    };
    let _ = stream.set_nodelay(true);
    let mut request = format!(
        "GET /subscribe/{} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n",
        spec.topic
    );
    if let Some(id) = &spec.last_event_id {
        request.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    request.push_str("\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return Ended::Lost;
    }
    let mut buf = vec![0u8; READ_BYTES];
    let (mut raw, mut body) = (Vec::new(), Vec::new());
    let mut dechunker: Option<Dechunker> = None;
    let mut head_seen = false;
    // What this connection received: a `retry:` field, and events.
    let (mut retry_ms, mut n_events) = (None, 0u64);
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => {
                return match retry_ms {
                    Some(ms) if head_seen && n_events == 0 => Ended::ComeBack(ms),
                    _ => Ended::Lost,
                };
            }
            Ok(n) => n,
        };
        if !head_seen {
            raw.extend_from_slice(&buf[..n]);
            let Some(head) = parse_head(&raw) else {
                continue;
            };
            if head.status != 200 {
                return Ended::Refused;
            }
            head_seen = true;
            if !*connected {
                *connected = true;
                Stats::bump(&stats.connected);
            }
            raw.drain(..head.len);
            if head.chunked {
                dechunker = Some(Dechunker::default());
            } else {
                body.append(&mut raw);
            }
        } else if dechunker.is_some() {
            raw.extend_from_slice(&buf[..n]);
        } else {
            body.extend_from_slice(&buf[..n]);
        }
        if let Some(dechunker) = dechunker.as_mut() {
            dechunker.decode(&mut raw, &mut body);
        }
        drain_events(&mut body, |event| {
            if let Some(ms) = event.retry {
                retry_ms = Some(ms);
            }
            if let Some(data) = event.data {
                n_events += 1;
                checker.check(event.id, data);
            }
        });
    }
}

struct Checker<'a> {
    expected: Option<u64>,
    caught_up: bool,
    spec: &'a SubscriberSpec,
    stats: &'a Stats,
    clock: Clock,
}

impl Checker<'_> {
    fn check(&mut self, id: &[u8], data: &[u8]) {
        let Some((seq, published_ns)) = parse_payload(data) else {
            if data.starts_with(b"{\"last_event_id\"") {
                Stats::bump(&self.stats.gaps);
            }
            return;
        };
        let now = self.clock.now_ns();
        Stats::bump(&self.stats.deliveries);
        let latency_us = now.saturating_sub(published_ns) / 1000;
        let _ = self.stats.latency_us.borrow_mut().record(latency_us.max(1));
        if self.expected.is_some_and(|expected| expected != seq) {
            Stats::bump(&self.stats.out_of_order);
        }
        self.expected = Some(seq + 1);
        if let Some(ids) = &self.spec.record_ids {
            ids.borrow_mut()
                .push((seq, String::from_utf8_lossy(id).into_owned()));
        }
        if !self.caught_up && self.spec.catch_up_at.is_some_and(|at| seq >= at) {
            self.caught_up = true;
            Stats::bump(&self.stats.caught_up);
            self.stats.last_caught_up_ns.set(now);
            self.stats.caught_up_ns.borrow_mut().push(now);
        }
    }
}
