//! Publishers: keep-alive HTTP/1.1 connections POSTing events on a schedule.
//!
//! Event `i` of a plan goes to topic `i % n_topics` with sequence number
//! `i / n_topics`, and is due at `start + i / rate`. Each topic is published
//! by exactly one connection, in order, so subscribers can check that every
//! topic's sequence arrives complete and in order. Connection `c` publishes
//! to `addrs[c % addrs.len()]`: on a cluster, every node gets publishers.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::stats::{Clock, Stats, payload};
use crate::wire::parse_head;

#[derive(Debug, Clone)]
pub struct Plan {
    /// Where the connections go, in turn (one server: one address).
    pub addrs: Rc<Vec<SocketAddr>>,
    /// Topic names; event `i` goes to `topics[i % len]`.
    pub topics: Rc<Vec<String>>,
    /// Events per second, over all topics.
    pub rate: f64,
    pub n_events: u64,
    /// The first event index (plans continue where an earlier one stopped).
    pub first: u64,
    pub payload_bytes: usize,
    pub n_connections: usize,
}

/// Runs `plan` to the end; returns when every publish was answered.
pub async fn run(plan: Plan, stats: Rc<Stats>, clock: Clock) {
    let start = Instant::now();
    let n_connections = plan.n_connections.min(plan.topics.len()).max(1);
    let tasks: Vec<_> = (0..n_connections)
        .map(|connection| {
            let plan = plan.clone();
            let stats = Rc::clone(&stats);
            tokio::task::spawn_local(publish_share(
                plan,
                connection,
                n_connections,
                start,
                stats,
                clock,
            ))
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

/// Publishes the events of the topics that belong to `connection`.
async fn publish_share(
    plan: Plan,
    connection: usize,
    n_connections: usize,
    start: Instant,
    stats: Rc<Stats>,
    clock: Clock,
) {
    let addr = plan.addrs[connection % plan.addrs.len()];
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        Stats::bump(&stats.refused);
        return;
    };
    let _ = stream.set_nodelay(true);
    let n_topics = plan.topics.len() as u64;
    let mut response = Vec::with_capacity(1024);
    let mut buf = vec![0u8; 4096];
    for i in plan.first..plan.first + plan.n_events {
        let topic_idx = (i % n_topics) as usize;
        if topic_idx % n_connections != connection {
            continue;
        }
        let due = start + Duration::from_secs_f64((i - plan.first) as f64 / plan.rate);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let body = payload(i / n_topics, clock.now_ns(), plan.payload_bytes);
        let mut request = format!(
            "POST /publish/{} HTTP/1.1\r\nHost: bench\r\nContent-Length: {}\r\n\r\n",
            plan.topics[topic_idx],
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        if stream.write_all(&request).await.is_err()
            || !read_response(&mut stream, &mut response, &mut buf).await
        {
            Stats::bump(&stats.refused);
            return;
        }
    }
}

/// Reads one response with a `Content-Length` body; true for a 2xx.
async fn read_response(stream: &mut TcpStream, response: &mut Vec<u8>, buf: &mut [u8]) -> bool {
    response.clear();
    loop {
        if let Some(head) = parse_head(response) {
            let total = head.len + head.content_length.unwrap_or(0);
            if response.len() >= total {
                return (200..300).contains(&head.status);
            }
        }
        match stream.read(buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
    }
}
