#!/usr/bin/env bash
# The whole ssegate-vs-nchan comparison in one command:
#   benches/compare.sh                      # every workload, both servers
#   benches/compare.sh --scale 0.1          # a quick smoke run
#   benches/compare.sh --workloads idle     # one workload
#   benches/compare.sh --baseline /tmp/ssegate-before --servers ssegate,baseline
#                                           # this build against an older one
#   benches/compare.sh --workloads cluster,cluster-storm --servers ssegate
#                                           # cluster mode: nodes on one Redis
# Installs what is missing (nginx with nchan, oha; redis-server and
# redis-benchmark when a cluster workload is named), builds ssegate and the load
# generator in release mode, runs each workload against ssegate and then nchan
# (server on core 0, load generator on core 1), stops every process it started,
# prints the table on stdout and writes benches/results/latest.json.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if ! command -v nginx >/dev/null || [ ! -f /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx-light libnginx-mod-nchan
fi
case " $* " in
  *cluster*)
    if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools
    fi
    # The cluster workloads start a redis-server of their own (port 6390,
    # no persistence); the system service, if the package started one, is
    # left alone and never measured.
    ;;
esac
oha="$(command -v oha || echo "$HOME/.cargo/bin/oha")"
[ -x "$oha" ] || cargo install oha --locked
cargo build --release -p ssegate -p ssegate-bench
exec target/release/ssegate-bench --oha "$oha" "$@"
