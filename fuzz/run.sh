#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30) and fails if any of
# them finds a crash (a panic, a failed assertion, an input over 1 s, or
# over 2 GB of memory). Usage: fuzz/run.sh [SECONDS]
#
# Each target starts from a temporary copy of its checked-in seeds
# (fuzz/seeds/<target>/), so the inputs it finds never dirty the work tree.
# A crashing input is kept in fuzz/artifacts/<target>/ (ignored by git);
# reproduce it with `cargo +nightly fuzz run <target> <file>`, minimize it
# with `cargo +nightly fuzz tmin <target> <file>`. Each run's log is in
# fuzz/artifacts/logs/<target>.log.
#
# Needs the nightly toolchain (libFuzzer and the sanitizer need it) and
# cargo-fuzz, which it installs if missing.
set -euo pipefail
seconds="${1:-30}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: fuzz/run.sh [seconds]" >&2; exit 64 ;;
esac
cd "$(dirname "$0")/.."

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/ssegate-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT
logs="fuzz/artifacts/logs"
mkdir -p "$logs"

# The fuzz crate resolves from the main lockfile, so it fuzzes the very
# versions `cargo test` runs (fuzz/Cargo.lock is not kept: it would go stale,
# and dirty the tree, whenever a dependency changes).
cp Cargo.lock fuzz/Cargo.lock

echo "==> building the fuzz targets (nightly, address sanitizer)"
cargo +nightly fuzz build

mapfile -t targets < <(cargo +nightly fuzz list)
failed=()
for target in "${targets[@]}"; do
  corpus="$work/$target"
  mkdir -p "$corpus"
  if [ -d "fuzz/seeds/$target" ]; then
    cp -R "fuzz/seeds/$target/." "$corpus/"
  fi
  echo "==> fuzz $target for ${seconds}s ($(find "$corpus" -type f | wc -l) seeds)"
  if cargo +nightly fuzz run "$target" "$corpus" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=1 \
    >"$logs/$target.log" 2>&1; then
    # libFuzzer's last status line: runs, coverage, corpus size.
    grep -E '^#[0-9]+' "$logs/$target.log" | tail -n 1 || true
  else
    failed+=("$target")
    tail -n 60 "$logs/$target.log"
    echo "!!! $target failed; log: $logs/$target.log, input: fuzz/artifacts/$target/" >&2
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: ${#failed[@]} of ${#targets[@]} targets failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
