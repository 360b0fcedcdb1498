//! The well-behaved clients beside every attack: subscribers and one
//! publisher on a topic of their own, publishing at a steady rate (and, if
//! asked, a new subscriber every 250 ms). It measures publish → receive
//! latency, publish request latency and a newcomer's wait for its stream
//! per window (so an attack phase compares with a baseline phase), and
//! counts what its subscribers lost or got twice.
//!
//! It runs on a thread of its own, at the battery's raised priority, so
//! that what it measures is the gateway: the attackers on the main thread
//! only get the battery's core when the probe does not need it.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use ssegate_bench::stats::{Clock, parse_payload, payload};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::http::Conn;
use crate::sse::SseStream;

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    pub addr: SocketAddr,
    pub topic: String,
    /// Events a second, and their size in bytes.
    pub rate: f64,
    pub size: usize,
    pub n_subscribers: usize,
    /// A new subscriber every 250 ms, timed from connect to its position
    /// block.
    pub newcomers: bool,
}

impl Spec {
    /// One subscriber and a publisher of `rate` small events a second.
    pub fn new(addr: SocketAddr, topic: &str, rate: f64) -> Spec {
        Spec {
            addr,
            topic: topic.to_string(),
            rate,
            size: 64,
            n_subscribers: 1,
            newcomers: false,
        }
    }
}

/// The handle: the probe itself lives on its thread.
pub struct Probe {
    commands: mpsc::UnboundedSender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum Command {
    Window(oneshot::Sender<Window>),
    Stop(oneshot::Sender<Report>),
}

/// Latencies over one window, in ms.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub p99_ms: f64,
    pub publish_p99_ms: f64,
    /// A newcomer's wait for its stream (with `newcomers`).
    pub subscribe_p99_ms: f64,
    pub n_subscribes: u64,
}

/// Scheduler jitter on a shared machine: a p99 within this of its
/// baseline is never called worse, whatever the ratio (a ratio of two
/// sub-millisecond p99s measures the machine, not the gateway).
pub const JITTER_MS: f64 = 1.0;

/// Whether `value` is within `ratio` × `baseline`, or `JITTER_MS` of it.
pub fn within(value: f64, baseline: f64, ratio: f64) -> bool {
    value <= (baseline * ratio).max(baseline + JITTER_MS)
}

/// What the probe saw over its whole life.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub n_subscribers: usize,
    pub n_published: u64,
    pub n_failed: u64,
    pub n_received: u64,
    pub n_lost: u64,
    pub n_duplicated: u64,
    /// Subscribers whose stream ended while it should have been open.
    pub n_ended: usize,
}

impl Report {
    /// Every publish answered 200 and every event arrived once, in order.
    pub fn clean(&self) -> bool {
        self.n_failed == 0 && self.n_lost == 0 && self.n_duplicated == 0 && self.n_ended == 0
    }

    pub fn describe(&self) -> String {
        let ended = match self.n_ended {
            0 => String::new(),
            n => format!(", {n} streams ended early"),
        };
        format!(
            "{} published ({} failed), {} received by {} subscribers, {} lost, {} duplicated{ended}",
            self.n_published,
            self.n_failed,
            self.n_received,
            self.n_subscribers,
            self.n_lost,
            self.n_duplicated,
        )
    }
}

impl Probe {
    /// Starts the probe on its own thread at scheduling priority `nice`
    /// (0: as the battery), once its subscribers are live.
    pub async fn start(spec: Spec, clock: Clock, nice: i32) -> Result<Probe, String> {
        let (commands, mut inbox) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("probe".into())
            .spawn(move || {
                if nice != 0 {
                    set_thread_nice(nice);
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("probe runtime");
                tokio::task::LocalSet::new().block_on(&runtime, async move {
                    let local = match Local::start(&spec, clock).await {
                        Ok(local) => local,
                        Err(err) => {
                            let _ = ready_tx.send(Err(err));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    while let Some(command) = inbox.recv().await {
                        match command {
                            Command::Window(reply) => {
                                let _ = reply.send(local.take_window());
                            }
                            Command::Stop(reply) => {
                                let _ = reply.send(local.stop().await);
                                return;
                            }
                        }
                    }
                });
            })
            .map_err(|e| format!("probe thread: {e}"))?;
        let mut probe = Probe {
            commands,
            thread: Some(thread),
        };
        match ready_rx.await {
            Ok(Ok(())) => Ok(probe),
            Ok(Err(err)) => {
                probe.join();
                Err(err)
            }
            Err(_) => {
                probe.join();
                Err("the probe thread died".into())
            }
        }
    }

    /// The latencies since the last call (or the start), and a new window.
    pub async fn take_window(&self) -> Window {
        let (reply, answer) = oneshot::channel();
        let _ = self.commands.send(Command::Window(reply));
        answer.await.unwrap_or_default()
    }

    /// Stops publishing, waits for the subscribers to catch up, and reports.
    pub async fn stop(mut self) -> Report {
        let (reply, answer) = oneshot::channel();
        let _ = self.commands.send(Command::Stop(reply));
        let report = answer.await.unwrap_or(Report {
            n_subscribers: 0,
            n_published: 0,
            n_failed: 1,
            n_received: 0,
            n_lost: 0,
            n_duplicated: 0,
            n_ended: 0,
        });
        self.join();
        report
    }

    fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sets the calling thread's nice value (Linux: per thread).
pub fn set_thread_nice(nice: i32) -> bool {
    // SAFETY: gettid and setpriority on the calling thread only.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) == 0
    }
}

/// The probe on its thread.
struct Local {
    shared: Rc<Shared>,
    publisher: JoinHandle<()>,
    subscribers: Vec<(Rc<Subscriber>, JoinHandle<()>)>,
    newcomers: Option<JoinHandle<()>>,
}

/// One subscriber's place in the sequence.
#[derive(Default)]
struct Subscriber {
    next_seq: Cell<u64>,
    /// Its stream ended or failed while it should be open.
    ended: Cell<bool>,
}

#[derive(Default)]
struct Shared {
    stop: Cell<bool>,
    /// Publishes answered 200, and those that were not (or failed).
    n_published: Cell<u64>,
    n_failed: Cell<u64>,
    n_received: Cell<u64>,
    n_lost: Cell<u64>,
    n_duplicated: Cell<u64>,
    window: RefCell<Latencies>,
}

struct Latencies {
    /// Publish → receive, µs.
    delivery: Histogram<u64>,
    /// The publish request's round trip, µs.
    publish: Histogram<u64>,
    /// A newcomer's connect → position block, µs.
    subscribe: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Latencies {
        let histogram = || Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds");
        Latencies {
            delivery: histogram(),
            publish: histogram(),
            subscribe: histogram(),
        }
    }
}

impl Local {
    async fn start(spec: &Spec, clock: Clock) -> Result<Local, String> {
        let shared = Rc::new(Shared::default());
        let mut subscribers = Vec::with_capacity(spec.n_subscribers);
        for _ in 0..spec.n_subscribers {
            let stream = live_subscriber(spec.addr, &spec.topic).await?;
            let state = Rc::new(Subscriber::default());
            let task = tokio::task::spawn_local(subscribe(
                stream,
                Rc::clone(&state),
                Rc::clone(&shared),
                clock,
            ));
            subscribers.push((state, task));
        }
        let conn = Conn::connect(spec.addr).await?;
        let publisher =
            tokio::task::spawn_local(publish(conn, spec.clone(), Rc::clone(&shared), clock));
        let newcomers = spec.newcomers.then(|| {
            tokio::task::spawn_local(newcomers(spec.addr, spec.topic.clone(), Rc::clone(&shared)))
        });
        Ok(Local {
            shared,
            publisher,
            subscribers,
            newcomers,
        })
    }

    fn take_window(&self) -> Window {
        let old = self.shared.window.replace(Latencies::default());
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Window {
            p99_ms: ms(&old.delivery, 0.99),
            publish_p99_ms: ms(&old.publish, 0.99),
            subscribe_p99_ms: ms(&old.subscribe, 0.99),
            n_subscribes: old.subscribe.len(),
        }
    }

    async fn stop(self) -> Report {
        let shared = &self.shared;
        shared.stop.set(true);
        if let Some(newcomers) = &self.newcomers {
            newcomers.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.publisher).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let behind = |s: &Subscriber| s.next_seq.get() < shared.n_published.get() && !s.ended.get();
        while self.subscribers.iter().any(|(s, _)| behind(s)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut missing = 0;
        for (state, task) in &self.subscribers {
            task.abort();
            missing += shared
                .n_published
                .get()
                .saturating_sub(state.next_seq.get());
        }
        Report {
            n_subscribers: self.subscribers.len(),
            n_published: shared.n_published.get(),
            n_failed: shared.n_failed.get(),
            n_received: shared.n_received.get(),
            n_lost: shared.n_lost.get() + missing,
            n_duplicated: shared.n_duplicated.get(),
            n_ended: self
                .subscribers
                .iter()
                .filter(|(s, _)| s.ended.get())
                .count(),
        }
    }
}

/// A subscriber of `topic` whose stream is live (its position block came).
async fn live_subscriber(addr: SocketAddr, topic: &str) -> Result<SseStream, String> {
    let mut stream = SseStream::open(addr, &format!("/subscribe/{topic}"), "").await?;
    if stream.status != 200 {
        return Err(format!("probe subscribe answered {}", stream.status));
    }
    while let Some(frame) = stream.next_frame(Duration::from_secs(10)).await? {
        if frame.is_position() {
            return Ok(stream);
        }
    }
    Err("the probe's stream ended before its position".into())
}

/// Publishes event `seq` at `start + seq / rate`, its payload carrying
/// `seq` and the time it was sent.
async fn publish(mut conn: Conn, spec: Spec, shared: Rc<Shared>, clock: Clock) {
    let period = Duration::from_secs_f64(1.0 / spec.rate);
    let start = Instant::now();
    for seq in 0u64.. {
        if shared.stop.get() {
            return;
        }
        tokio::time::sleep_until(start + period.mul_f64(seq as f64)).await;
        let sent = Instant::now();
        let body = payload(seq, clock.now_ns(), spec.size);
        match conn.publish(&spec.topic, &body).await {
            Ok(response) if response.status == 200 => {
                bump(&shared.n_published);
                let us = sent.elapsed().as_micros() as u64;
                let _ = shared.window.borrow_mut().publish.record(us.max(1));
            }
            _ => {
                // The sequence must stay gap-free for the subscribers.
                bump(&shared.n_failed);
                return;
            }
        }
    }
}

/// A new subscriber every 250 ms, timed to its position block, then gone.
async fn newcomers(addr: SocketAddr, topic: String, shared: Rc<Shared>) {
    for _ in 0u64.. {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let started = Instant::now();
        let us = match live_subscriber(addr, &topic).await {
            Ok(_) => started.elapsed().as_micros() as u64,
            Err(_) => 600_000_000,
        };
        let _ = shared.window.borrow_mut().subscribe.record(us.max(1));
    }
}

async fn subscribe(mut stream: SseStream, state: Rc<Subscriber>, shared: Rc<Shared>, clock: Clock) {
    loop {
        let read = stream
            .read_frames(|frame| {
                let Some((seq, published_ns)) = frame.data.and_then(parse_payload) else {
                    return;
                };
                bump(&shared.n_received);
                let next = state.next_seq.get();
                if seq < next {
                    bump(&shared.n_duplicated);
                    return;
                }
                shared.n_lost.set(shared.n_lost.get() + (seq - next));
                state.next_seq.set(seq + 1);
                let us = clock.now_ns().saturating_sub(published_ns) / 1000;
                let _ = shared.window.borrow_mut().delivery.record(us.max(1));
            })
            .await;
        if !matches!(read, Ok(true)) {
            state.ended.set(true);
            return;
        }
    }
}

fn bump(cell: &Cell<u64>) {
    cell.set(cell.get() + 1);
}
