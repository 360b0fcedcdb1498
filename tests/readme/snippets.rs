//! What the documents say: their fenced blocks, the commands in them and
//! how each is run (see the convention in `main.rs`), and the comparison of
//! expected output with what a command printed.

use crate::common::deploy::repo;

/// One fenced block of a document.
pub struct Block {
    pub file: &'static str,
    /// Line of its opening fence, from 1.
    pub line: usize,
    /// The heading it is under.
    pub section: String,
    pub lang: String,
    /// `skip: <why>` from a `<!-- readme-test: … -->` line right before it.
    pub directive: Option<String>,
    pub lines: Vec<String>,
}

/// The fenced blocks of `text`, with the heading each one is under.
pub fn blocks(file: &'static str, text: &str) -> Vec<Block> {
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

pub fn read_document(file: &str) -> String {
    std::fs::read_to_string(repo().join(file)).unwrap_or_else(|err| panic!("{file}: {err}"))
}

/// One command of a block, with what it is shown to print.
pub struct Step {
    /// Where it is, as `file:line (section)`.
    pub at: String,
    /// As written, continuation lines included, comments removed.
    pub code: String,
    /// Its comments' text.
    pub comment: String,
    /// The output a `console` block shows for it.
    pub expected: Option<Vec<String>>,
}

/// `line` without its comment, and the comment: a `#` outside quotes at
/// the start of a word.
pub fn split_comment(line: &str) -> (&str, &str) {
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

pub fn continues(code: &str) -> bool {
    ["\\", "|", "&&", "||"]
        .iter()
        .any(|end| code.trim_end().ends_with(end))
}

/// The commands of a runnable block.
pub fn steps(block: &Block) -> Vec<Step> {
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
pub enum Kind {
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
pub fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
    })
}

/// The words of `code` with their offsets.
pub fn words(code: &str) -> Vec<(usize, &str)> {
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

pub fn kind(step: &Step) -> Kind {
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
pub fn is_no_buffer(arg: &str) -> bool {
    arg == "--no-buffer" || (arg.starts_with('-') && !arg.starts_with("--") && arg.contains('N'))
}

/// The programs a command runs, for the check that they are installed.
pub fn programs(code: &str) -> Vec<String> {
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

/// Compares `actual` with the `expected` lines (`[..]`, `...`,
/// timestamps); with `prefix`, `actual` may go on after them.
pub fn matches(expected: &[String], actual: &str, prefix: bool) -> bool {
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

pub fn timestamps() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z").expect("regex"))
}

pub fn lines_match(expected: &[String], actual: &[String], prefix: bool) -> bool {
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

pub fn line_matches(expected: &str, actual: &str) -> bool {
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
