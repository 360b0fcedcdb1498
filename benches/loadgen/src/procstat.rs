//! Server CPU time and memory, read from `/proc/<pid>` (for nginx: the
//! master plus its workers).

use std::time::Duration;

/// CPU time and resident memory of a set of processes at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub user: Duration,
    pub system: Duration,
    pub rss_bytes: u64,
}

impl Usage {
    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }

    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
            rss_bytes: self.rss_bytes,
        }
    }
}

/// `pid` and every process whose parent is `pid` (nginx's workers).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if stat_fields(child).and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok()))
            == Some(pid)
        {
            pids.push(child);
        }
    }
    pids
}

/// Sums CPU time and RSS over `pids`.
pub fn usage(pids: &[u32]) -> Usage {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let mut total = Usage::default();
    for &pid in pids {
        let Some(fields) = stat_fields(pid) else {
            continue;
        };
        // Fields after the command: state(0) ppid(1) ... utime(11) stime(12) ... rss(21).
        let number = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        total.user += Duration::from_secs_f64(number(11) as f64 / ticks);
        total.system += Duration::from_secs_f64(number(12) as f64 / ticks);
        total.rss_bytes += number(21) * page;
    }
    total
}

/// The fields of `/proc/<pid>/stat` after the `(comm)` field.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    Some(after_comm.split_whitespace().map(String::from).collect())
}

/// This process's own CPU time, to tell when the load generator is the limit.
pub fn own_cpu() -> Duration {
    usage(&[std::process::id()]).cpu()
}
