//! The shell snippets of `README.md` and `docs/http-api.md`, read from the
//! files at test time and run with bash against a real gateway, so that
//! every command in them works as written; the code excerpts they show are
//! checked against the files they name, and their links against the
//! repository.
//!
//! # The convention
//!
//! - Fenced blocks marked `sh`, `bash` or `console` are run, in order, from
//!   the repository's root, with the binary under test first on `PATH` as
//!   `ssegate` (it stands for what `cargo install --path .` installs). A
//!   `sh`/`bash` block is commands only; in a `console` block a command
//!   starts with `$ `, and the lines up to the next `$ ` are its expected
//!   standard output. A command goes on over the next line when it ends
//!   with `\`, `|`, `&&` or `||`.
//! - A block right after the line `<!-- readme-test: skip: <why> -->` is
//!   not run (it needs Docker, a cluster, root, a certificate, a tool CI
//!   does not install, or another test runs it); the reason is required.
//! - Each section (heading) gets a gateway of its own on a free port,
//!   started before its first command, so ids and counts in its outputs
//!   are those of a fresh gateway. A command that starts the gateway
//!   (`ssegate` without `--help`, `--version`, `--check-config` or
//!   `--print-config`, or `cargo run … [-- args]`) is that gateway: it is
//!   started with its own arguments and environment, its `--listen` (or an
//!   added one) set to `127.0.0.1:<free port>`, and must exit 0 when the
//!   test stops it with SIGTERM at the end of the section (the drain).
//! - `cargo install` and `cargo build` are not run (the binary under test
//!   is what they build), nor `cargo test` (the suite this test is part
//!   of).
//! - Long-running commands: the gateway, subscribers (`curl -N`) and any
//!   command whose comment says `Ctrl-C` run in the background; the next
//!   command waits until one has printed something (a subscriber is then
//!   subscribed), and the section's end stops them. What such a command is
//!   shown to print must match the beginning of what it printed by then
//!   (the gateway's log is its standard error).
//! - Rewriting, in commands and expected output alike: `127.0.0.1:8080`
//!   and `localhost:8080` become the gateway's address, and the example
//!   epoch `3f9c0a1b2c3d4e5f` (the first half of every id the documents
//!   show) becomes the running gateway's, so a command such as
//!   `curl -N -H 'Last-Event-ID: 3f9c0a1b2c3d4e5f-…'` resumes on it. A
//!   command still naming port 8080 after that fails the test, since it
//!   would reach something outside it.
//! - Expected output is compared line by line after trailing spaces:
//!   `[..]` in a line matches any text, a line `...` any number of lines,
//!   and an RFC 3339 timestamp (`2026-12-03T16:49:48.328562Z`) any other.
//!
//! Commands need bash and the tools they name (curl, node, python3); a
//! missing one makes the test say SKIPPED and pass, or fail under
//! `REQUIRE_TEST_TOOLS=1` (as `.ci/run` sets it).

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::cluster::free_port;
use common::deploy::{repo, temp_dir};

/// The documents whose snippets are run and whose links are checked.
const DOCUMENTS: [&str; 2] = ["README.md", "docs/http-api.md"];

/// The epoch of every id the documents show.
const EXAMPLE_EPOCH: &str = "3f9c0a1b2c3d4e5f";

/// The address the documents' commands reach the gateway at.
const EXAMPLE_ADDRESSES: [&str; 2] = ["127.0.0.1:8080", "localhost:8080"];

/// How long a command may take, and a background one to print.
const PATIENCE: Duration = Duration::from_secs(60);
const SETTLE: Duration = Duration::from_secs(15);

/// One fenced block of a document.
struct Block {
    file: &'static str,
    /// Line of its opening fence, from 1.
    line: usize,
    /// The heading it is under.
    section: String,
    lang: String,
    /// `skip: <why>` from a `<!-- readme-test: … -->` line right before it.
    directive: Option<String>,
    lines: Vec<String>,
}

/// The fenced blocks of `text`, with the heading each one is under.
fn blocks(file: &'static str, text: &str) -> Vec<Block> {
    let mut found = Vec::new();
    let mut section = String::from("(top)");
    let mut previous = "";
    let mut open: Option<(usize, Block)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some((indent, block)) = open.as_mut() {
            if trimmed.starts_with("```") && trimmed.trim_end().trim_matches('`').is_empty() {
                found.push(open.take().expect("open block").1);
            } else {
                let cut = line.len() - line.trim_start().len();
                block.lines.push(line[cut.min(*indent)..].to_owned());
            }
            continue;
        }
        if let Some(fence) = trimmed.strip_prefix("```") {
            let directive = previous
                .trim()
                .strip_prefix("<!-- readme-test:")
                .and_then(|rest| rest.strip_suffix("-->"))
                .map(|rest| rest.trim().to_owned());
            let block = Block {
                file,
                line: i + 1,
                section: section.clone(),
                lang: fence.split_whitespace().next().unwrap_or("").to_owned(),
                directive,
                lines: Vec::new(),
            };
            open = Some((line.len() - trimmed.len(), block));
        } else if line.starts_with('#') && line.trim_start_matches('#').starts_with(' ') {
            section = line.trim_start_matches('#').trim().to_owned();
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    assert!(open.is_none(), "{file}: a fenced block is never closed");
    found
}

fn read_document(file: &str) -> String {
    std::fs::read_to_string(repo().join(file)).unwrap_or_else(|err| panic!("{file}: {err}"))
}

/// One command of a block, with what it is shown to print.
struct Step {
    /// Where it is, as `file:line (section)`.
    at: String,
    /// As written, continuation lines included, comments removed.
    code: String,
    /// Its comments' text.
    comment: String,
    /// The output a `console` block shows for it.
    expected: Option<Vec<String>>,
}

/// `line` without its comment, and the comment: a `#` outside quotes at
/// the start of a word.
fn split_comment(line: &str) -> (&str, &str) {
    let (mut single, mut double, mut escaped) = (false, false, false);
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if !single => escaped = true,
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => {
                return (line[..i].trim_end(), &line[i + 1..]);
            }
            _ => {}
        }
        previous = c;
    }
    (line.trim_end(), "")
}

fn continues(code: &str) -> bool {
    ["\\", "|", "&&", "||"]
        .iter()
        .any(|end| code.trim_end().ends_with(end))
}

/// The commands of a runnable block.
fn steps(block: &Block) -> Vec<Step> {
    let console = block.lang == "console";
    let mut steps: Vec<Step> = Vec::new();
    let mut open = false;
    for (i, line) in block.lines.iter().enumerate() {
        let at = format!("{}:{} ({})", block.file, block.line + 1 + i, block.section);
        if open {
            let step = steps.last_mut().expect("an open command");
            let (code, comment) = split_comment(line);
            step.code = format!("{}\n{code}", step.code);
            step.comment.push_str(comment);
            open = continues(code);
            continue;
        }
        if !console && line.trim().is_empty() {
            continue;
        }
        let command = match console {
            true => line.strip_prefix("$ "),
            false => Some(line.as_str()),
        };
        let Some(command) = command else {
            let step = steps
                .last_mut()
                .unwrap_or_else(|| panic!("{at}: output before any `$ `"));
            step.expected
                .get_or_insert_with(Vec::new)
                .push(line.clone());
            continue;
        };
        let (code, comment) = split_comment(command);
        open = continues(code);
        if code.is_empty() {
            continue;
        }
        steps.push(Step {
            at,
            code: code.to_owned(),
            comment: comment.to_owned(),
            expected: console.then(Vec::new),
        });
    }
    steps
}

/// What the test does with a command.
#[derive(Debug, PartialEq)]
enum Kind {
    /// `cargo install`, `cargo build`: the binary under test is theirs.
    Prebuilt,
    /// `cargo test`: the suite this test is part of.
    Suite,
    /// Starts the gateway: this bash line does it.
    Gateway(String),
    Background,
    Foreground,
}

/// `NAME=value` words before a command.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
    })
}

/// The words of `code` with their offsets.
fn words(code: &str) -> Vec<(usize, &str)> {
    let mut found = Vec::new();
    let mut start = None;
    for (i, c) in code.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                found.push((s, &code[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        found.push((s, &code[s..]));
    }
    found
}

fn kind(step: &Step) -> Kind {
    let code = step.code.as_str();
    let all = words(code);
    let n_env = all.iter().take_while(|(_, w)| is_assignment(w)).count();
    let Some(&(program_at, _)) = all.get(n_env) else {
        return Kind::Foreground;
    };
    let env = &code[..program_at];
    let words: Vec<&str> = all[n_env..].iter().map(|(_, w)| *w).collect();
    let info = [
        "--help",
        "-h",
        "--version",
        "-V",
        "--check-config",
        "--print-config",
    ];
    match words.as_slice() {
        ["cargo", "install" | "build", ..] => Kind::Prebuilt,
        ["cargo", "test", ..] => Kind::Suite,
        ["cargo", "run", ..] => {
            let args = all[n_env..].iter().find(|(_, w)| *w == "--");
            let args = args.map_or("", |&(at, _)| code[at + 2..].trim());
            Kind::Gateway(format!("{env}exec ssegate {args}").trim_end().to_owned())
        }
        ["ssegate", args @ ..] if !args.iter().any(|a| info.contains(a)) => {
            Kind::Gateway(format!("{env}exec {}", &code[program_at..]))
        }
        ["curl", args @ ..] if args.iter().any(|a| is_no_buffer(a)) => Kind::Background,
        _ if step.comment.contains("Ctrl-C") => Kind::Background,
        _ => Kind::Foreground,
    }
}

/// curl's `-N` / `--no-buffer`, alone or among other short options.
fn is_no_buffer(arg: &str) -> bool {
    arg == "--no-buffer" || (arg.starts_with('-') && !arg.starts_with("--") && arg.contains('N'))
}

/// The programs a command runs, for the check that they are installed.
fn programs(code: &str) -> Vec<String> {
    code.split(['|', ';', '(', ')', '\n'])
        .flat_map(|part| part.split("&&"))
        .filter_map(|part| {
            part.split_whitespace()
                .find(|word| !is_assignment(word) && !word.starts_with('$'))
        })
        .filter(|word| !word.contains('/') && !word.starts_with(['\'', '"', '-', '\\']))
        .map(str::to_owned)
        .collect()
}

/// The files and directories one run shares across sections.
struct Env {
    bin: PathBuf,
    scratch: PathBuf,
    n_files: std::cell::Cell<usize>,
}

impl Env {
    fn new() -> Env {
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
    fn path(&self) -> String {
        let path = std::env::var("PATH").unwrap_or_default();
        format!("{}:{path}", self.bin.display())
    }

    /// A new file for a process's output.
    fn file(&self, what: &str) -> (PathBuf, File) {
        self.n_files.set(self.n_files.get() + 1);
        let path = self.scratch.join(format!("{}-{what}", self.n_files.get()));
        let file = File::create(&path).expect("output file");
        (path, file)
    }

    /// bash running `code` from the repository's root, in a process group
    /// of its own, its output in files.
    fn spawn(&self, code: &str) -> Process {
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
struct Process {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl Process {
    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    fn output(&self) -> (String, String) {
        let read = |path: &Path| {
            String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
        };
        (read(&self.stdout), read(&self.stderr))
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }

    /// Waits up to `patience` for it to exit by itself.
    fn wait(&mut self, patience: Duration) -> Option<ExitStatus> {
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
    fn stop(&mut self, patience: Duration) -> Option<ExitStatus> {
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

/// Compares `actual` with the `expected` lines (`[..]`, `...`,
/// timestamps); with `prefix`, `actual` may go on after them.
fn matches(expected: &[String], actual: &str, prefix: bool) -> bool {
    let normal = |lines: Vec<&str>| -> Vec<String> {
        let mut lines: Vec<String> = lines
            .into_iter()
            .map(|l| {
                timestamps()
                    .replace_all(l.trim_end(), "<time>")
                    .into_owned()
            })
            .collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    };
    let expected = normal(expected.iter().map(String::as_str).collect());
    let actual = normal(actual.lines().collect());
    lines_match(&expected, &actual, prefix)
}

fn timestamps() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z").expect("regex"))
}

fn lines_match(expected: &[String], actual: &[String], prefix: bool) -> bool {
    match expected.split_first() {
        None => prefix || actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..], prefix))
        }
        Some((first, rest)) => actual.split_first().is_some_and(|(line, more)| {
            line_matches(first, line) && lines_match(rest, more, prefix)
        }),
    }
}

fn line_matches(expected: &str, actual: &str) -> bool {
    let mut parts = expected.split("[..]");
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = actual.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A section's gateway, started from a document's command or by default.
struct Gateway {
    process: Process,
    port: u16,
    epoch: String,
    step: Option<(String, Vec<String>)>,
}

/// `line`'s `--listen` (or an added one) set to `127.0.0.1:port`.
fn listen_on(line: &str, port: u16) -> String {
    let listen = regex::Regex::new(r"--listen[ =]\S+").expect("regex");
    let ours = format!("--listen 127.0.0.1:{port}");
    match listen.is_match(line) {
        true => listen.replace(line, ours.as_str()).into_owned(),
        false => format!("{line} {ours}"),
    }
}

/// An HTTP/1.1 GET to the gateway; the response as text, read until
/// `until` appears in it or the connection ends.
fn get(port: u16, path: &str, until: &str) -> Option<String> {
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
    fn start(env: &Env, line: &str, step: Option<(String, Vec<String>)>, at: &str) -> Gateway {
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
    fn localize(&self, text: &str) -> String {
        let mut text = text.replace(EXAMPLE_EPOCH, &self.epoch);
        for address in EXAMPLE_ADDRESSES {
            text = text.replace(address, &format!("127.0.0.1:{}", self.port));
        }
        text
    }

    /// Stops it as an operator would (SIGTERM: the drain), checks that it
    /// exited 0 and logged what its command is shown to print.
    fn finish(mut self) {
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
struct Background {
    at: String,
    code: String,
    process: Process,
    expected: Option<Vec<String>>,
}

impl Background {
    /// Once it has printed what it is shown to print (or `SETTLE` has
    /// passed), stops it and checks that.
    fn finish(mut self) {
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
struct Section<'a> {
    env: &'a Env,
    gateway: Option<Gateway>,
    background: Vec<Background>,
    n_run: usize,
}

impl<'a> Section<'a> {
    fn new(env: &'a Env) -> Section<'a> {
        Section {
            env,
            gateway: None,
            background: Vec::new(),
            n_run: 0,
        }
    }

    fn gateway(&mut self, at: &str) -> &Gateway {
        if self.gateway.is_none() {
            self.gateway = Some(Gateway::start(self.env, "exec ssegate", None, at));
        }
        self.gateway.as_ref().expect("gateway")
    }

    /// The command as it is run here: with the gateway's address and epoch.
    fn localized(&mut self, step: &Step) -> String {
        let code = self.gateway(&step.at).localize(&step.code);
        assert!(
            !code.contains(":8080"),
            "{}: `{code}` would reach port 8080, outside the test: \
             write the gateway's address as 127.0.0.1:8080",
            step.at
        );
        code
    }

    fn run(&mut self, step: &Step) {
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

    fn background(&mut self, step: &Step) {
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

    fn foreground(&mut self, step: &Step) {
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
    fn finish(&mut self) {
        for background in self.background.drain(..) {
            background.finish();
        }
        if let Some(gateway) = self.gateway.take() {
            gateway.finish();
        }
    }
}

/// The runnable blocks of every document, grouped by section.
fn runnable_sections() -> Vec<(String, Vec<Step>)> {
    let mut sections: Vec<(String, Vec<Step>)> = Vec::new();
    for file in DOCUMENTS {
        for block in blocks(file, &read_document(file)) {
            if !matches!(block.lang.as_str(), "sh" | "bash" | "console") {
                continue;
            }
            let at = format!("{file}:{}", block.line);
            match block.directive.as_deref() {
                None => {}
                Some(directive) => {
                    let why = directive.strip_prefix("skip:").map(str::trim);
                    assert!(
                        why.is_some_and(|why| !why.is_empty()),
                        "{at}: unknown directive {directive:?}: `skip: <why>` is the one there is"
                    );
                    continue;
                }
            }
            let key = format!("{file}: {}", block.section);
            let steps = steps(&block);
            match sections.last_mut() {
                Some((section, all)) if *section == key => all.extend(steps),
                _ => sections.push((key, steps)),
            }
        }
    }
    sections
}

/// Whether every program the runnable commands name is installed.
fn have_tools(env: &Env, sections: &[(String, Vec<Step>)]) -> bool {
    let mut wanted: Vec<String> = sections
        .iter()
        .flat_map(|(_, steps)| steps)
        .filter(|step| !matches!(kind(step), Kind::Prebuilt | Kind::Suite | Kind::Gateway(_)))
        .flat_map(|step| programs(&step.code))
        .collect();
    wanted.sort();
    wanted.dedup();
    for program in wanted {
        let found = Command::new("bash")
            .args(["-c", &format!("command -v {program}")])
            .env("PATH", env.path())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !found {
            common::prerequisite_missing("README test", &format!("{program} is not installed"));
            return false;
        }
    }
    true
}

#[test]
fn every_shell_snippet_runs_as_written() {
    let sections = runnable_sections();
    let env = Env::new();
    if !have_tools(&env, &sections) {
        return;
    }
    let mut n_run = 0;
    for (_, steps) in &sections {
        let mut section = Section::new(&env);
        for step in steps {
            section.run(step);
        }
        section.finish();
        n_run += section.n_run;
    }
    // The convention found the snippets: the quick start, the walk-through,
    // the examples, the command line, the batch.
    assert!(
        n_run >= 15,
        "only {n_run} commands ran: is the convention still followed?"
    );
}

/// Lines of an excerpt that stand for what it leaves out.
fn is_elision(line: &str) -> bool {
    let line = line.trim();
    line == "..." || line.starts_with("// ...") || line.starts_with("# ...")
}

#[test]
fn excerpts_match_the_files_they_name() {
    let mut n_excerpts = 0;
    for file in DOCUMENTS {
        for block in blocks(file, &read_document(file)) {
            let Some((first, body)) = block.lines.split_first() else {
                continue;
            };
            let named = first
                .trim_start_matches(['/', '#', ' '])
                .split_whitespace()
                .next()
                .unwrap_or("");
            let path = repo().join(named);
            if named.is_empty() || !path.is_file() || !first.trim_start().starts_with(['/', '#']) {
                continue;
            }
            n_excerpts += 1;
            let source = std::fs::read_to_string(&path).expect("named file");
            let mut source = source.lines().map(str::trim);
            for line in body
                .iter()
                .filter(|l| !l.trim().is_empty() && !is_elision(l))
            {
                assert!(
                    source.any(|s| s == line.trim()),
                    "{file}:{}: the excerpt of {named} has {:?}, which {named} lacks \
                     (or has earlier)",
                    block.line,
                    line.trim()
                );
            }
        }
    }
    assert!(n_excerpts >= 1, "no excerpt found");
}

/// GitHub's anchor for a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// `text` without fenced blocks and code spans, where links are not links.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            let spans: Vec<&str> = line.split('`').collect();
            out.extend(spans.iter().step_by(2).copied());
            out.push('\n');
        }
    }
    out
}

/// The link targets of a document: `[text](target)` and `<scheme://…>`.
fn links(text: &str) -> Vec<String> {
    let inline = regex::Regex::new(r"\]\(([^)\s]+)\)").expect("regex");
    let auto = regex::Regex::new(r"<([a-z]+://[^>\s]+)>").expect("regex");
    let prose = prose(text);
    inline
        .captures_iter(&prose)
        .chain(auto.captures_iter(&prose))
        .map(|c| c[1].to_owned())
        .collect()
}

#[test]
fn links_stay_in_the_repository_and_resolve() {
    let root = repo().canonicalize().expect("repo");
    for file in DOCUMENTS {
        let text = read_document(file);
        for target in links(&text) {
            if let Some(rest) = target.split_once("://").map(|(_, rest)| rest) {
                // The reader's own gateway is the one address allowed.
                assert!(
                    rest.starts_with("127.0.0.1:") || rest.starts_with("localhost:"),
                    "{file} links {target}, outside the repository"
                );
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let base = repo().join(file);
            let dir = base.parent().expect("dir");
            let linked = match path {
                "" => base.clone(),
                path => dir.join(path),
            };
            let linked = linked
                .canonicalize()
                .unwrap_or_else(|err| panic!("{file} links {target}: {err}"));
            assert!(
                linked.starts_with(&root),
                "{file} links {target}, outside the repository"
            );
            if anchor.is_empty() {
                continue;
            }
            let headings: Vec<String> = std::fs::read_to_string(&linked)
                .expect("linked document")
                .lines()
                .filter(|l| l.starts_with('#'))
                .map(|l| slug(l.trim_start_matches('#')))
                .collect();
            assert!(
                headings.iter().any(|h| *h == anchor),
                "{file} links {target}: no such heading"
            );
        }
    }
}

#[test]
fn the_convention_reads_commands_and_outputs() {
    let text = "# T\n<!-- readme-test: skip: needs Docker -->\n```sh\ndocker run x\n```\n\
                ```console\n$ printf 'a\\n' |\n  cat # twice\nshown\n$ ssegate --help\n```\n";
    let found = blocks("x.md", text);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].directive.as_deref(), Some("skip: needs Docker"));
    let parsed = steps(&found[1]);
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[0].code, "printf 'a\\n' |\n  cat");
    assert_eq!(parsed[0].comment, " twice");
    assert_eq!(
        parsed[0].expected.as_deref(),
        Some(&["shown".to_owned()][..])
    );
    assert_eq!(kind(&parsed[1]), Kind::Foreground);
    let step = |code: &str, comment: &str| Step {
        at: String::new(),
        code: code.to_owned(),
        comment: comment.to_owned(),
        expected: None,
    };
    assert_eq!(
        kind(&step("cargo install --path . --locked", "")),
        Kind::Prebuilt
    );
    assert_eq!(kind(&step("curl -sN http://x", "")), Kind::Background);
    assert_eq!(kind(&step("./loop.sh", " until Ctrl-C")), Kind::Background);
    assert_eq!(
        kind(&step("A=1 ssegate --cors-allowed-origins '*'", "")),
        Kind::Gateway("A=1 exec ssegate --cors-allowed-origins '*'".into())
    );
    assert_eq!(
        listen_on("exec ssegate --listen 0.0.0.0:443 -c x", 9),
        "exec ssegate --listen 127.0.0.1:9 -c x"
    );
    assert!(line_matches("a [..] c", "a bb c"));
    assert!(!line_matches("a [..] c", "a bb d"));
    let shown: Vec<String> = ["x", "...", "2026-12-03T16:49:48.3Z z"]
        .map(String::from)
        .into();
    assert!(matches(
        &shown,
        "x\ny\ny\n2025-01-01T00:00:00.123456Z z\n",
        false
    ));
    assert!(matches(&shown[..1], "x\nmore\n", true));
    assert!(!matches(&shown[..1], "x\nmore\n", false));
    assert_eq!(
        programs("A=1 node x.mjs | python3 -c y && ./z"),
        ["node", "python3"]
    );
    assert_eq!(slug("`POST /publish/{topic}`"), "post-publishtopic");
}
