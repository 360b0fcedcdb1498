//! Running the commands: processes in process groups of their own, a
//! section's gateway, its background commands, and the section that owns
//! them.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::cluster::free_port;
use crate::common::deploy::{repo, temp_dir};
use crate::snippets::{Kind, Step, kind, matches};

/// The epoch of every id the documents show.
pub const EXAMPLE_EPOCH: &str = "3f9c0a1b2c3d4e5f";

/// The address the documents' commands reach the gateway at.
pub const EXAMPLE_ADDRESSES: [&str; 2] = ["127.0.0.1:8080", "localhost:8080"];

/// How long a command may take, and a background one to print.
const PATIENCE: Duration = Duration::from_secs(60);
const SETTLE: Duration = Duration::from_secs(15);

/// The files and directories one run shares across sections.
pub struct Env {
    pub bin: PathBuf,
    pub scratch: PathBuf,
    pub n_files: std::cell::Cell<usize>,
}

impl Env {
    pub fn new() -> Env {
        let scratch = temp_dir("readme");
        let bin = scratch.join("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        let link = bin.join("ssegate");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ssegate"), &link).expect("symlink");
        let n_files = std::cell::Cell::new(0);
        Env {
            bin,
            scratch,
            n_files,
        }
    }

    /// `PATH` with the binary under test first.
    pub fn path(&self) -> String {
        let path = std::env::var("PATH").unwrap_or_default();
        format!("{}:{path}", self.bin.display())
    }

    /// A new file for a process's output.
    pub fn file(&self, what: &str) -> (PathBuf, File) {
        self.n_files.set(self.n_files.get() + 1);
        let path = self.scratch.join(format!("{}-{what}", self.n_files.get()));
        let file = File::create(&path).expect("output file");
        (path, file)
    }

    /// bash running `code` from the repository's root, in a process group
    /// of its own, its output in files.
    pub fn spawn(&self, code: &str) -> Process {
        let (stdout, out) = self.file("stdout");
        let (stderr, err) = self.file("stderr");
        let child = Command::new("bash")
            .args(["-o", "pipefail", "-c", code])
            .current_dir(repo())
            .env("PATH", self.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .expect("bash");
        Process {
            child,
            stdout,
            stderr,
            status: None,
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// A running command; stopped (its whole process group) when dropped.
pub struct Process {
    pub child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub status: Option<ExitStatus>,
}

impl Process {
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    pub fn output(&self) -> (String, String) {
        let read = |path: &Path| {
            String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
        };
        (read(&self.stdout), read(&self.stderr))
    }

    pub fn signal(&self, signal: &str) {
        // bash's own kill: no procps needed.
        let group = format!("kill {signal} -- -{}", self.child.id());
        let _ = Command::new("bash")
            .args(["-c", &group])
            .stderr(Stdio::null())
            .status();
    }

    /// Waits up to `patience` for it to exit by itself.
    pub fn wait(&mut self, patience: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM, then SIGKILL if it does not exit within `patience`.
    pub fn stop(&mut self, patience: Duration) -> Option<ExitStatus> {
        if self.exited().is_none() {
            self.signal("-TERM");
        }
        let status = self.wait(patience);
        if status.is_none() {
            self.signal("-KILL");
            let _ = self.child.wait();
        }
        status
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.signal("-KILL");
            let _ = self.child.wait();
        }
    }
}

/// A section's gateway, started from a document's command or by default.
pub struct Gateway {
    pub process: Process,
    pub port: u16,
    pub epoch: String,
    pub step: Option<(String, Vec<String>)>,
}

/// `line`'s `--listen` (or an added one) set to `127.0.0.1:port`.
pub fn listen_on(line: &str, port: u16) -> String {
    let listen = regex::Regex::new(r"--listen[ =]\S+").expect("regex");
    let ours = format!("--listen 127.0.0.1:{port}");
    match listen.is_match(line) {
        true => listen.replace(line, ours.as_str()).into_owned(),
        false => format!("{line} {ours}"),
    }
}

/// An HTTP/1.1 GET to the gateway; the response as text, read until
/// `until` appears in it or the connection ends.
pub fn get(port: u16, path: &str, until: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(SETTLE)).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: readme\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&response).contains(until) {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&response).into_owned())
}

impl Gateway {
    pub fn start(env: &Env, line: &str, step: Option<(String, Vec<String>)>, at: &str) -> Gateway {
        let port = free_port();
        let line = listen_on(line, port);
        let mut process = env.spawn(&line);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let healthy = get(port, "/healthz", "\r\n\r\nok");
            if healthy.is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                break;
            }
            if process.exited().is_some() || Instant::now() > deadline {
                let (out, err) = process.output();
                panic!("{at}: the gateway `{line}` did not start:\n{out}\n{err}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The position block of a new stream carries this run's epoch.
        let response = get(port, "/subscribe/readme-test", "-0000000000000000")
            .unwrap_or_else(|| panic!("{at}: no stream from the gateway"));
        let epoch = response
            .split("id: ")
            .nth(1)
            .and_then(|id| id.split('-').next())
            .unwrap_or_else(|| panic!("{at}: no position block in {response:?}"))
            .to_owned();
        Gateway {
            process,
            port,
            epoch,
            step,
        }
    }

    /// `text` with the documents' address and epoch made this gateway's.
    pub fn localize(&self, text: &str) -> String {
        let mut text = text.replace(EXAMPLE_EPOCH, &self.epoch);
        for address in EXAMPLE_ADDRESSES {
            text = text.replace(address, &format!("127.0.0.1:{}", self.port));
        }
        text
    }

    /// Stops it as an operator would (SIGTERM: the drain), checks that it
    /// exited 0 and logged what its command is shown to print.
    pub fn finish(mut self) {
        let what = format!("the gateway on port {}", self.port);
        let status = self.process.stop(SETTLE + Duration::from_secs(15));
        let (_, log) = self.process.output();
        assert!(
            status.is_some_and(|s| s.success()),
            "{what} did not drain and exit 0 on SIGTERM ({status:?}):\n{log}"
        );
        if let Some((at, expected)) = &self.step {
            let expected: Vec<String> = expected.iter().map(|l| self.localize(l)).collect();
            assert!(
                matches(&expected, &log, true),
                "{at}: the gateway's log does not begin as shown.\nshown:\n{}\nlogged:\n{log}",
                expected.join("\n")
            );
        }
    }
}

/// A background command of a section, with what it is shown to print.
pub struct Background {
    pub at: String,
    pub code: String,
    pub process: Process,
    pub expected: Option<Vec<String>>,
}

impl Background {
    /// Once it has printed what it is shown to print (or `SETTLE` has
    /// passed), stops it and checks that.
    pub fn finish(mut self) {
        let deadline = Instant::now() + SETTLE;
        let expected = self.expected.take().filter(|lines| !lines.is_empty());
        let printed = |process: &Process| process.output().0;
        if let Some(expected) = &expected {
            while !matches(expected, &printed(&self.process), true) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let exited = self.process.exited();
        self.process.stop(SETTLE);
        let (out, err) = self.process.output();
        let at = &self.at;
        let code = &self.code;
        if let Some(status) = exited {
            assert!(
                status.success(),
                "{at}: `{code}` failed ({status}):\n{out}\n{err}"
            );
        }
        if let Some(expected) = &expected {
            assert!(
                matches(expected, &out, true),
                "{at}: `{code}` does not print what is shown.\nshown:\n{}\nprinted:\n{out}\n{err}",
                expected.join("\n")
            );
        }
    }
}

/// The commands of one section and what they started.
pub struct Section<'a> {
    pub env: &'a Env,
    pub gateway: Option<Gateway>,
    pub background: Vec<Background>,
    pub n_run: usize,
}

impl<'a> Section<'a> {
    pub fn new(env: &'a Env) -> Section<'a> {
        Section {
            env,
            gateway: None,
            background: Vec::new(),
            n_run: 0,
        }
    }

    pub fn gateway(&mut self, at: &str) -> &Gateway {
        if self.gateway.is_none() {
            self.gateway = Some(Gateway::start(self.env, "exec ssegate", None, at));
        }
        self.gateway.as_ref().expect("gateway")
    }

    /// The command as it is run here: with the gateway's address and epoch.
    pub fn localized(&mut self, step: &Step) -> String {
        let code = self.gateway(&step.at).localize(&step.code);
        assert!(
            !code.contains(":8080"),
            "{}: `{code}` would reach port 8080, outside the test: \
             write the gateway's address as 127.0.0.1:8080",
            step.at
        );
        code
    }

    pub fn run(&mut self, step: &Step) {
        match kind(step) {
            Kind::Prebuilt | Kind::Suite => return,
            Kind::Gateway(line) => {
                self.finish();
                let shown = step.expected.clone().map(|lines| (step.at.clone(), lines));
                self.gateway = Some(Gateway::start(self.env, &line, shown, &step.at));
            }
            Kind::Background => self.background(step),
            Kind::Foreground => self.foreground(step),
        }
        self.n_run += 1;
    }

    pub fn background(&mut self, step: &Step) {
        let code = self.localized(step);
        let mut process = self.env.spawn(&code);
        // Until it printed something: a subscriber is subscribed by then.
        let deadline = Instant::now() + SETTLE;
        while process.output().0.is_empty() && process.exited().is_none() {
            assert!(
                Instant::now() < deadline,
                "{}: `{code}` printed nothing",
                step.at
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let gateway = self.gateway.as_ref().expect("gateway");
        let expected = step
            .expected
            .as_ref()
            .map(|lines| lines.iter().map(|line| gateway.localize(line)).collect());
        self.background.push(Background {
            at: step.at.clone(),
            code,
            process,
            expected,
        });
    }

    pub fn foreground(&mut self, step: &Step) {
        let code = self.localized(step);
        let mut process = self.env.spawn(&code);
        let status = process.wait(PATIENCE);
        let (out, err) = process.output();
        let at = &step.at;
        let status = status.unwrap_or_else(|| {
            panic!("{at}: `{code}` still runs after {PATIENCE:?}:\n{out}\n{err}")
        });
        assert!(
            status.success(),
            "{at}: `{code}` failed ({status}):\n{out}\n{err}"
        );
        if let Some(expected) = &step.expected {
            let gateway = self.gateway.as_ref().expect("gateway");
            let expected: Vec<String> = expected.iter().map(|l| gateway.localize(l)).collect();
            assert!(
                matches(&expected, &out, false),
                "{at}: `{code}` does not print what is shown.\nshown:\n{}\nprinted:\n{out}\n{err}",
                expected.join("\n")
            );
        }
    }

    /// Stops what the section started, checking what it printed.
    pub fn finish(&mut self) {
        for background in self.background.drain(..) {
            background.finish();
        }
        if let Some(gateway) = self.gateway.take() {
            gateway.finish();
        }
    }
}
