//! A socket's queues as the kernel sees them (`/proc/net/tcp`): how much a
//! process has not yet read from a connection, which tells exactly how much
//! of what a client sent the gateway has taken.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::time::Instant;

/// `(tx_queue, rx_queue)` of the established IPv4 socket whose local port
/// is `local` and remote port `remote` (127.0.0.1 on both ends); `None`
/// once it is closing or gone.
pub fn tcp_queues(local: u16, remote: u16) -> Option<(u64, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let want_local = format!("0100007F:{local:04X}");
    let want_remote = format!("0100007F:{remote:04X}");
    table.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, local, remote) = (fields.next()?, fields.next()?, fields.next()?);
        if local != want_local || remote != want_remote {
            return None;
        }
        // 01: ESTABLISHED.
        let (state, queues) = (fields.next()?, fields.next()?);
        if state != "01" {
            return None;
        }
        let (tx, rx) = queues.split_once(':')?;
        Some((
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    })
}

/// Memory the kernel holds for all TCP sockets (`/proc/net/sockstat`,
/// `TCP: ... mem <pages>`), in KiB.
pub fn tcp_memory_kib() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = stat.lines().find(|line| line.starts_with("TCP:"))?;
    let mut fields = line.split_whitespace();
    fields.find(|&f| f == "mem")?;
    Some(fields.next()?.parse::<u64>().ok()? * page_kib())
}

/// The hard limit of `tcp_mem` (its third figure), in KiB.
pub fn tcp_memory_limit_kib() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem").ok()?;
    Some(limits.split_whitespace().nth(2)?.parse::<u64>().ok()? * page_kib())
}

fn page_kib() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) / 1024) as u64
}

/// Writes `pieces` one at a time, each only once the gateway has read
/// everything before it (its socket's receive queue is empty), until
/// `done()`, until the gateway stops reading for a second, or until it
/// closes the connection. Returns the bytes it read and the bytes written.
pub async fn lockstep(
    writer: &mut OwnedWriteHalf,
    (server_port, client_port): (u16, u16),
    pieces: &[&[u8]],
    done: impl Fn() -> bool,
) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for piece in pieces {
        if done() || writer.write_all(piece).await.is_err() {
            break;
        }
        written += piece.len() as u64;
        let deadline = Instant::now() + Duration::from_secs(1);
        let unread = loop {
            match tcp_queues(server_port, client_port) {
                Some((_, 0)) => break Some(0),
                Some((_, unread)) if Instant::now() >= deadline => break Some(unread),
                Some(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                // Closed: what this piece held is not counted as read.
                None => break None,
            }
        };
        match unread {
            Some(0) => read = written,
            Some(unread) => {
                read = written - unread;
                break;
            }
            None => break,
        }
    }
    (read, written)
}
