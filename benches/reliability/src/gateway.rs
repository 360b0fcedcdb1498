//! The real ssegate binary under test: started with a scenario's flags on
//! 127.0.0.1 (an ephemeral port, or a given one for restarts), its address
//! read from its start-up log line, its memory and descriptors read from
//! `/proc`, signalled, and always killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use tokio::time::Instant;

/// How to start the binary: where it is, and on which core (if pinned).
#[derive(Debug, Clone)]
pub struct Launcher {
    pub bin: PathBuf,
    pub core: Option<usize>,
    /// Scheduling priority of the gateway (0: inherited).
    pub nice: i32,
}

pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub pid: u32,
    /// When the process was spawned.
    pub spawned_at: Instant,
    log: Arc<Mutex<Vec<String>>>,
    exit: Option<ExitStatus>,
}

/// How long the binary may take to log that it listens.
const START_PATIENCE: Duration = Duration::from_secs(15);

impl Launcher {
    /// Starts the binary on `127.0.0.1:port` (0: any free port) with `args`
    /// (`--key value` flags) and waits for its "listening" line.
    pub async fn start(&self, port: u16, args: &[&str]) -> Result<Gateway, String> {
        self.start_limited(port, args, None).await
    }

    /// `start`, with the open-file limit (soft and hard) set to
    /// `open_files` when given: the gateway cannot raise it.
    pub async fn start_limited(
        &self,
        port: u16,
        args: &[&str],
        open_files: Option<u64>,
    ) -> Result<Gateway, String> {
        let mut command = match self.core {
            Some(core) => {
                let mut command = Command::new("taskset");
                command.args(["-c", &core.to_string()]).arg(&self.bin);
                command
            }
            None => Command::new(&self.bin),
        };
        // Outside the repository, so that config/ssegate.toml is not read:
        // embedded defaults plus this scenario's flags, nothing else.
        command.current_dir(std::env::temp_dir());
        if self.nice != 0 {
            let nice = self.nice;
            // SAFETY: setpriority is async-signal-safe, and touches only
            // the child about to exec; a refusal leaves it as it was.
            unsafe {
                command.pre_exec(move || {
                    libc::setpriority(libc::PRIO_PROCESS, 0, nice);
                    Ok(())
                });
            }
        }
        if let Some(open_files) = open_files {
            // SAFETY: setrlimit is async-signal-safe, and touches only the
            // child about to exec.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: open_files,
                        rlim_max: open_files,
                    };
                    match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                        0 => Ok(()),
                        _ => Err(std::io::Error::last_os_error()),
                    }
                });
            }
        }
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SSEGATE_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| format!("cannot start {}: {err}", self.bin.display()))?;
        let spawned_at = Instant::now();
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let writer = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listen_addr(&line) {
                    let _ = addr_tx.send(addr);
                }
                if let Ok(mut log) = writer.lock() {
                    log.push(line);
                }
            }
        });
        let pid = child.id();
        let mut gateway = Gateway {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            pid,
            spawned_at,
            log,
            exit: None,
        };
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Ok(addr) = addr_rx.try_recv() {
                gateway.addr = addr;
                return Ok(gateway);
            }
            if let Ok(Some(status)) = gateway.child.try_wait() {
                return Err(format!(
                    "ssegate exited at start ({status}): {}",
                    gateway.log_tail(5)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!("ssegate did not start: {}", gateway.log_tail(5)));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Gateway {
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped.
        unsafe { libc::kill(self.pid as libc::pid_t, signal) };
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit {
                return Some(status);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// SIGKILL, and reap it.
    pub async fn kill9(&mut self) -> Result<(), String> {
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(10))
            .await
            .map(|_| ())
            .ok_or_else(|| "the process survived SIGKILL".to_string())
    }

    /// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`); 0 if gone.
    pub fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
                    .and_then(|rest| rest.trim().trim_end_matches(" kB").parse().ok())
            })
            .unwrap_or(0)
    }

    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// Open file descriptors (entries of `/proc/<pid>/fd`).
    pub fn n_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }

    /// Lines of its log that contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .map(|log| log.iter().filter(|line| line.contains(needle)).count())
            .unwrap_or(0)
    }

    /// The first log line that contains `needle`.
    pub fn log_find(&self, needle: &str) -> Option<String> {
        let log = self.log.lock().ok()?;
        log.iter().find(|line| line.contains(needle)).cloned()
    }

    /// CPU time used so far (user + system), from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Duration {
        let ticks = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|stat| {
                // After the command name, which may hold spaces: field 3 on.
                let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                let user: u64 = fields.get(11)?.parse().ok()?;
                let system: u64 = fields.get(12)?.parse().ok()?;
                Some(user + system)
            })
            .unwrap_or(0);
        // SAFETY: sysconf has no memory-safety preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis(ticks * 1000 / per_second)
    }

    /// Sets its open-file limit (soft and hard) while it runs.
    pub fn set_open_files(&self, open_files: u64) -> Result<(), String> {
        let limit = libc::rlimit {
            rlim_cur: open_files,
            rlim_max: open_files,
        };
        // SAFETY: prlimit on our own child's pid; `limit` outlives the
        // call, and the old limit is not asked for.
        let done = unsafe {
            libc::prlimit(
                self.pid as libc::pid_t,
                libc::RLIMIT_NOFILE,
                &limit,
                std::ptr::null_mut(),
            )
        };
        match done {
            0 => Ok(()),
            _ => Err(format!("prlimit: {}", std::io::Error::last_os_error())),
        }
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.log
            .lock()
            .map(|log| log[log.len().saturating_sub(n)..].join(" / "))
            .unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.exit.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address in the start-up line (`... listen=127.0.0.1:PORT ...`).
fn listen_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("ssegate listening") {
        return None;
    }
    let rest = &line[line.find("listen=")? + "listen=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}
