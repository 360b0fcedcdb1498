//! Helpers of the checks on `deploy/` (`tests/deploy.rs`,
//! `tests/local_cluster.rs`): where its files are, and running tools that
//! may be missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn deploy(file: &str) -> PathBuf {
    repo().join("deploy").join(file)
}

pub fn read(file: &str) -> String {
    std::fs::read_to_string(deploy(file)).unwrap_or_else(|err| panic!("deploy/{file}: {err}"))
}

/// Whether `program` runs; if not, says SKIPPED (or fails when required).
pub fn have(program: &str, version_arg: &str) -> bool {
    let found = Command::new(program)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        super::prerequisite_missing("deploy check", &format!("{program} is not installed"));
    }
    found
}

/// Runs a checker; fails with everything it printed unless it succeeds.
pub fn check(command: &mut Command) -> (String, String) {
    let output = command.output().expect("run checker");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    (stdout, stderr)
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssegate-deploy-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
