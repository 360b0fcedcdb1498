//! Starting and stopping the servers under test, each pinned to its core.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procstat;

/// A server under test; stopped when dropped.
pub struct Server {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// The process that owns the listening socket (nginx: the master).
    pub pid: u32,
    child: Option<Child>,
    nchan_dir: Option<PathBuf>,
}

impl Server {
    /// Starts the ssegate binary on `core` with its embedded defaults,
    /// measured as `name`: `ssegate`, or `baseline` for a second binary of it
    /// (the build before a change), which starts exactly the same way.
    pub fn ssegate(
        name: &'static str,
        binary: &Path,
        port: u16,
        core: usize,
        extra_args: &[&str],
    ) -> Result<Server, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Started outside the repository, so that every binary (an older
        // baseline too) runs on its embedded defaults rather than on
        // whatever `config/ssegate.toml` holds today.
        let binary = binary
            .canonicalize()
            .map_err(|err| format!("cannot find {}: {err}", binary.display()))?;
        let child = Command::new("taskset")
            .args(["-c", &core.to_string()])
            .arg(&binary)
            .current_dir(std::env::temp_dir())
            .args(["--listen", &addr.to_string()])
            .args(extra_args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|err| format!("cannot start {}: {err}", binary.display()))?;
        let server = Server {
            name,
            addr,
            pid: child.id(),
            child: Some(child),
            nchan_dir: None,
        };
        wait_ready(addr, "/healthz")?;
        Ok(server)
    }

    /// Starts nginx with nchan from `dir` (its `run.sh` and `nginx.conf`) on
    /// `core`; nginx's workers inherit the affinity.
    pub fn nchan(dir: &Path, core: usize) -> Result<Server, String> {
        let run = dir.join("run.sh");
        let status = Command::new("taskset")
            .args(["-c", &core.to_string()])
            .arg(&run)
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .map_err(|err| format!("cannot run {}: {err}", run.display()))?;
        if !status.success() {
            return Err(format!("{} start failed", run.display()));
        }
        let pid_text = std::fs::read_to_string("/tmp/nchan-peer/nginx.pid")
            .map_err(|err| format!("nginx pid file: {err}"))?;
        let pid = pid_text
            .trim()
            .parse()
            .map_err(|_| "bad nginx pid".to_string())?;
        let addr = SocketAddr::from(([127, 0, 0, 1], 8091));
        let server = Server {
            name: "nchan",
            addr,
            pid,
            child: None,
            nchan_dir: Some(dir.to_path_buf()),
        };
        wait_ready(addr, "/nchan_status")?;
        Ok(server)
    }

    /// Every process of this server (nginx: master and workers).
    pub fn pids(&self) -> Vec<u32> {
        procstat::process_tree(self.pid)
    }

    pub fn usage(&self) -> procstat::Usage {
        procstat::usage(&self.pids())
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.nchan_dir.take() {
            let _ = Command::new(dir.join("run.sh"))
                .arg("stop")
                .stdout(Stdio::null())
                .status();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `GET path` answers 200.
fn wait_ready(addr: SocketAddr, path: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(addr) {
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
            let mut response = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut response).is_ok()
                && response.starts_with("HTTP/1.1 200")
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("server on {addr} did not become ready"))
}
