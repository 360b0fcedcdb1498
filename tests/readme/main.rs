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
//!
//! `snippets.rs` reads the documents (blocks, commands, what each one is,
//! expected output); `run.rs` runs them (processes, a section's gateway and
//! background commands). Waits have deadlines; nothing asserts speed.

#[path = "../common/mod.rs"]
mod common;
mod run;
mod snippets;

use std::process::{Command, Stdio};

use common::deploy::repo;
use run::{Env, Section, listen_on};
use snippets::{Kind, Step, blocks, kind, line_matches, matches, programs, read_document, steps};

/// The documents whose snippets are run and whose links are checked.
const DOCUMENTS: [&str; 2] = ["README.md", "docs/http-api.md"];

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
