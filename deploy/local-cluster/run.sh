#!/usr/bin/env bash
# A three-node ssegate cluster on 127.0.0.1, for trying cluster mode by hand:
# one redis-server, three ssegate nodes sharing it, and nginx round-robin in
# front with deploy/nginx/ssegate.conf's SSE settings. Every process runs as
# you, in the background, and no system service is touched: state,
# configuration and logs all live in one directory ($LOCAL_CLUSTER_DIR).
# See README.md beside this file.
#
#   deploy/local-cluster/run.sh start        # start everything, wait until it answers
#   deploy/local-cluster/run.sh status       # what runs, which node holds how many streams
#   deploy/local-cluster/run.sh kill 2       # kill -9 node 2 (a crash)
#   deploy/local-cluster/run.sh start-node 2 # start node 2 again
#   deploy/local-cluster/run.sh stop-redis   # SIGTERM to Redis (it saves its file)
#   deploy/local-cluster/run.sh start-redis  # start it again on the same files
#   deploy/local-cluster/run.sh stop         # stop everything (the logs stay)
#
# Settings (environment; none is an SSEGATE_* name, which the nodes would
# read as their own settings):
#   LOCAL_CLUSTER_DIR  state and logs   (${TMPDIR:-/tmp}/ssegate-local-cluster-$UID)
#   REDIS_PORT         redis-server     (16379)
#   NODE_PORTS         the three nodes  ("18081 18082 18083"; any number of ports)
#   NGINX_PORT         nginx, the entry (18080)
#   LOCAL_CLUSTER_BIN  the ssegate binary (the newer of target/release and
#                      target/debug in this repository, else ssegate on PATH)
#   REDIS_SERVER, NGINX the programs    (redis-server, nginx on PATH or in /usr/sbin)
# Tested by tests/deploy.rs (local_cluster_*), on free ports.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

dir="${LOCAL_CLUSTER_DIR:-${TMPDIR:-/tmp}/ssegate-local-cluster-$(id -u)}"
redis_port="${REDIS_PORT:-16379}"
read -r -a node_ports <<<"${NODE_PORTS:-18081 18082 18083}"
nginx_port="${NGINX_PORT:-18080}"
for port in "$redis_port" "${node_ports[@]}" "$nginx_port"; do
  [[ "$port" =~ ^[0-9]+$ ]] || { echo "run.sh: $port is no port number" >&2; exit 2; }
done
((${#node_ports[@]} > 0)) || { echo "run.sh: NODE_PORTS names no port" >&2; exit 2; }
# How long start and stop wait for anything, in tenths of a second.
patience=200
# The file that marks a directory as this script's.
marker=.ssegate-local-cluster

say() { printf '%s\n' "$*"; }
die() {
  printf 'run.sh: %s\n' "$*" >&2
  exit 1
}

find_program() { # NAME [ENV VALUE]: the program's path, or nothing
  local name="$1" given="${2:-}"
  if [ -n "$given" ]; then
    command -v "$given" || true
  else
    command -v "$name" || { [ -x "/usr/sbin/$name" ] && echo "/usr/sbin/$name"; } || true
  fi
}

ssegate_binary() {
  if [ -n "${LOCAL_CLUSTER_BIN:-}" ]; then
    [ -x "$LOCAL_CLUSTER_BIN" ] || die "LOCAL_CLUSTER_BIN=$LOCAL_CLUSTER_BIN is not an executable"
    echo "$LOCAL_CLUSTER_BIN"
    return
  fi
  local release="$repo/target/release/ssegate" debug="$repo/target/debug/ssegate"
  if [ -x "$release" ] && { [ ! -x "$debug" ] || [ "$release" -nt "$debug" ]; }; then
    echo "$release"
  elif [ -x "$debug" ]; then
    echo "$debug"
  elif command -v ssegate >/dev/null; then
    command -v ssegate
  else
    die "no ssegate binary: run 'cargo build --release' (or set LOCAL_CLUSTER_BIN)"
  fi
}

# Whether the process in PIDFILE runs and is PROGRAM (a pid file left by a
# crash may name a pid that was reused since, or a zombie no one reaped yet).
running() { # PIDFILE PROGRAM
  local pid
  # (nginx and Redis remove their pid files as they exit.)
  pid="$(cat "$1" 2>/dev/null)" || return 1
  pid_running "$pid" "$2"
}

pid_running() { # PID PROGRAM
  local pid="$1" program="$2" state
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  if [ -d /proc/self ]; then
    local stat cmdline
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    state="${stat%% *}"
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ] || return 1
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$cmdline" == *"$program"* ]]
  else
    kill -0 "$pid" 2>/dev/null
  fi
}

# Waits (bounded) until process PID is gone.
wait_gone() { # PID PROGRAM
  local i
  for ((i = 0; i < patience; i++)); do
    pid_running "$1" "$2" || return 0
    sleep 0.1
  done
  return 1
}

# Sends SIGNAL (unless it is "none": it was sent already), waits; SIGKILL
# if the process outlives the wait.
stop_process() { # NAME PIDFILE PROGRAM SIGNAL
  local name="$1" pidfile="$2" program="$3" signal="$4" pid
  running "$pidfile" "$program" || {
    rm -f "$pidfile"
    return 0
  }
  pid="$(cat "$pidfile")"
  [ "$signal" = none ] || kill "-$signal" "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" "$program"; then
    say "$name did not stop on SIG$signal in time; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" "$program" || say "$name (pid $pid) is still there"
  fi
  rm -f "$pidfile"
}

# Whether a Redis answers PING on PORT (bash's /dev/tcp: no redis-cli needed).
redis_ping() { # PORT
  # shellcheck disable=SC2016 # expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && printf "PING\r\n" >&3 &&
    read -r reply <&3 && [[ "$reply" == "+PONG"* ]]' "$1" 2>/dev/null
}

# Whether anything accepts connections on PORT.
port_taken() { # PORT
  # shellcheck disable=SC2016 # expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null
}

# Whether any process of the cluster in $dir runs.
anything_running() {
  local pidfile
  running "$dir/redis.pid" redis-server && return 0
  running "$dir/nginx.pid" nginx && return 0
  for pidfile in "$dir"/node*.pid; do
    [ -e "$pidfile" ] && running "$pidfile" ssegate && return 0
  done
  return 1
}

http_status() { # URL: the status code, or 000
  curl -s -o /dev/null --max-time 2 -w '%{http_code}' "$1" 2>/dev/null || true
}

# Waits (bounded) until URL answers 200 while PIDFILE's process runs.
wait_ready() { # NAME URL PIDFILE PROGRAM LOG
  local name="$1" url="$2" pidfile="$3" program="$4" log="$5" i
  for ((i = 0; i < patience; i++)); do
    [ "$(http_status "$url")" = 200 ] && return 0
    if ! running "$pidfile" "$program"; then
      say "$name exited; the end of $log:" >&2
      tail -n 20 "$log" >&2 || true
      return 1
    fi
    sleep 0.1
  done
  say "$name did not answer $url in time; the end of $log:" >&2
  tail -n 20 "$log" >&2 || true
  return 1
}

start_redis() {
  local redis i
  redis="$(find_program redis-server "${REDIS_SERVER:-}")"
  [ -n "$redis" ] || die "redis-server not found (apt-get install redis-server, or set REDIS_SERVER)"
  running "$dir/redis.pid" redis-server && die "redis already runs"
  # As production wants it: persistent (a restart keeps the replay
  # buffers), never evicting (noeviction keeps gaps provable).
  "$redis" --port "$redis_port" --bind 127.0.0.1 --dir "$dir/redis" \
    --appendonly yes --appendfsync everysec --save "" \
    --maxmemory 256mb --maxmemory-policy noeviction \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
    </dev/null >>"$dir/redis-start.log" 2>&1
  for ((i = 0; i < patience; i++)); do
    running "$dir/redis.pid" redis-server && redis_ping "$redis_port" && break
    sleep 0.1
  done
  if ((i == patience)); then
    say "redis did not answer in time; the end of its logs:" >&2
    tail -n 20 "$dir/redis-start.log" "$dir/redis.log" >&2 || true
    return 1
  fi
  say "redis: redis://127.0.0.1:$redis_port/0 (pid $(cat "$dir/redis.pid"), log $dir/redis.log)"
}

node_pidfile() { echo "$dir/node$1.pid"; }
node_log() { echo "$dir/node$1.log"; }

start_node() { # N (1-based)
  local n="$1" port bin
  port="${node_ports[$((n - 1))]:-}"
  [ -n "$port" ] || die "no node $n (NODE_PORTS has ${#node_ports[@]})"
  running "$(node_pidfile "$n")" ssegate && die "node $n already runs"
  bin="$(ssegate_binary)"
  # The flags win over any SSEGATE_* variable in your environment: the
  # nodes never reach another Redis than this one by accident.
  RUST_LOG="${RUST_LOG:-info}" nohup "$bin" --config "$dir/ssegate.toml" \
    --listen "127.0.0.1:$port" \
    --cluster-redis-url "redis://127.0.0.1:$redis_port/0" \
    </dev/null >>"$(node_log "$n")" 2>&1 &
  echo $! >"$(node_pidfile "$n")"
  if ! wait_ready "node $n" "http://127.0.0.1:$port/readyz" "$(node_pidfile "$n")" ssegate "$(node_log "$n")"; then
    stop_process "node $n" "$(node_pidfile "$n")" ssegate KILL
    return 1
  fi
  say "node $n: http://127.0.0.1:$port (pid $(cat "$(node_pidfile "$n")"), log $(node_log "$n"))"
}

# nginx.conf: deploy/nginx/ssegate.conf with its upstream replaced by the
# nodes and its listen by NGINX_PORT (every SSE setting kept as it is), plus
# an X-Ssegate-Node header on subscriptions naming the node that serves
# the stream.
write_nginx_conf() {
  local snippet="$repo/deploy/nginx/ssegate.conf" servers="" port
  [ -r "$snippet" ] || die "$snippet is missing"
  for port in "${node_ports[@]}"; do
    # A node that refuses is skipped for 5 s; requests go to the others.
    servers+="    server 127.0.0.1:$port max_fails=1 fail_timeout=5s;\n"
  done
  awk -v servers="$servers" -v listen="    listen 127.0.0.1:$nginx_port;" '
    NR == 1 { print "# Written by deploy/local-cluster/run.sh from deploy/nginx/ssegate.conf.\n" }
    /^[[:space:]]*server 127\.0\.0\.1:8080;/ { printf "%s", servers; n_upstream++; next }
    /^[[:space:]]*listen 80;/ { print listen; n_listen++; next }
    /^[[:space:]]*proxy_buffering off;/ {
      print
      print "        add_header X-Ssegate-Node $upstream_addr always;"
      n_header++
      next
    }
    { print }
    END {
      if (n_upstream != 1 || n_listen != 1 || n_header != 1) {
        print "deploy/nginx/ssegate.conf changed: run.sh expects one `server 127.0.0.1:8080;`, one `listen 80;` and one `proxy_buffering off;`" > "/dev/stderr"
        exit 1
      }
    }' "$snippet" >"$dir/ssegate-nginx.conf"
  cat >"$dir/nginx.conf" <<EOF
# Written by deploy/local-cluster/run.sh.
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log $dir/nginx-access.log;
  client_body_temp_path $dir/nginx-tmp/body;
  proxy_temp_path $dir/nginx-tmp/proxy;
  fastcgi_temp_path $dir/nginx-tmp/fastcgi;
  uwsgi_temp_path $dir/nginx-tmp/uwsgi;
  scgi_temp_path $dir/nginx-tmp/scgi;
  include $dir/ssegate-nginx.conf;
}
EOF
}

stop_after_failed_start() {
  local code=$?
  if [ "$code" != 0 ]; then
    say "start failed; stopping what started" >&2
    stop >&2 || true
  fi
}

start() {
  local nginx n i port
  nginx="$(find_program nginx "${NGINX:-}")"
  [ -n "$(find_program redis-server "${REDIS_SERVER:-}")" ] ||
    die "redis-server not found (apt-get install redis-server, or set REDIS_SERVER)"
  [ -n "$nginx" ] || die "nginx not found (apt-get install nginx-light, or set NGINX)"
  command -v curl >/dev/null || die "curl not found (apt-get install curl)"
  ssegate_binary >/dev/null
  if [ -d "$dir" ]; then
    [ -O "$dir" ] || die "$dir belongs to someone else"
    # Only ever clear a directory this script made.
    [ -e "$dir/$marker" ] || [ -z "$(ls -A "$dir")" ] ||
      die "$dir is not empty and was not made by run.sh: set LOCAL_CLUSTER_DIR to a new directory"
    anything_running && die "a cluster already runs in $dir: run.sh stop first"
  fi
  for port in "$redis_port" "${node_ports[@]}" "$nginx_port"; do
    port_taken "$port" && die "port $port is taken (set REDIS_PORT, NODE_PORTS, NGINX_PORT)"
  done
  if [ -d "$dir" ]; then
    # The last run's files: Redis's data too, so the cluster starts empty.
    rm -rf "${dir:?}/redis" "${dir:?}/nginx-tmp"
    rm -f "$dir"/*.log "$dir"/*.pid "$dir"/*.conf "$dir"/ssegate.toml
  else
    # Searchable by nginx's workers, which run as another user (nobody)
    # when nginx is started as root.
    mkdir -p "$(dirname "$dir")"
    mkdir -m 0755 "$dir"
  fi
  touch "$dir/$marker"
  mkdir -m 0700 "$dir/redis"
  mkdir -m 0755 "$dir/nginx-tmp"
  # On a failed start, stop what did start.
  trap stop_after_failed_start EXIT

  start_redis

  # What every node shares; listen and the Redis URL are flags (start_node).
  cat >"$dir/ssegate.toml" <<EOF
# Written by deploy/local-cluster/run.sh: every node reads it.
# Every node must have the same buffer_events and buffer_ttl.
buffer_events = 1024
buffer_ttl = "300s"
heartbeat_interval = "15s"
# Browsers reconnect quickly, to whichever node nginx picks.
retry = "1s"
shutdown_timeout = "5s"

[cluster]
prefix = "ssegate"
EOF
  for ((n = 1; n <= ${#node_ports[@]}; n++)); do
    start_node "$n"
  done

  write_nginx_conf
  "$nginx" -t -q -p "$dir" -e "$dir/nginx-error.log" -c "$dir/nginx.conf" \
    </dev/null >>"$dir/nginx-start.log" 2>&1 || {
    tail -n 20 "$dir/nginx-start.log" >&2
    exit 1
  }
  "$nginx" -p "$dir" -e "$dir/nginx-error.log" -c "$dir/nginx.conf" \
    </dev/null >>"$dir/nginx-start.log" 2>&1 || {
    tail -n 20 "$dir/nginx-start.log" "$dir/nginx-error.log" >&2
    exit 1
  }
  for ((i = 0; i < patience; i++)); do
    [ -s "$dir/nginx.pid" ] && break
    sleep 0.1
  done
  wait_ready nginx "http://127.0.0.1:$nginx_port/healthz" "$dir/nginx.pid" nginx "$dir/nginx-error.log"
  trap - EXIT
  say "nginx: http://127.0.0.1:$nginx_port (round-robin over ${#node_ports[@]} nodes; pid $(cat "$dir/nginx.pid"), logs $dir/nginx-*.log)"
  say "directory: $dir"
}

stop() {
  [ -d "$dir" ] || {
    say "nothing to stop in $dir"
    return 0
  }
  local pidfile n
  # nginx first (TERM: at once, open streams included), so that no request
  # reaches a stopping node; then every node at once (SIGTERM: they end
  # their streams and drain); Redis last (SIGTERM: it flushes its file).
  stop_process nginx "$dir/nginx.pid" nginx TERM
  for pidfile in "$dir"/node*.pid; do
    [ -e "$pidfile" ] || continue
    if running "$pidfile" ssegate; then
      kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
    fi
  done
  for pidfile in "$dir"/node*.pid; do
    [ -e "$pidfile" ] || continue
    n="${pidfile##*/node}"
    stop_process "node ${n%.pid}" "$pidfile" ssegate none
  done
  stop_process redis "$dir/redis.pid" redis-server TERM
  say "stopped; logs in $dir"
}

status() {
  local up=0 total=0 n port pidfile state subscribers
  line() { printf '%-8s %-28s %s\n' "$@"; }
  total=$((total + 1))
  if running "$dir/redis.pid" redis-server; then
    up=$((up + 1))
    line redis "127.0.0.1:$redis_port" "running (pid $(cat "$dir/redis.pid"))"
  else
    line redis "127.0.0.1:$redis_port" stopped
  fi
  for ((n = 1; n <= ${#node_ports[@]}; n++)); do
    port="${node_ports[$((n - 1))]}"
    pidfile="$(node_pidfile "$n")"
    total=$((total + 1))
    if running "$pidfile" ssegate; then
      up=$((up + 1))
      state="running (pid $(cat "$pidfile")), /readyz $(http_status "http://127.0.0.1:$port/readyz")"
      subscribers="$(curl -s --max-time 2 "http://127.0.0.1:$port/metrics" 2>/dev/null |
        awk '$1 == "ssegate_subscribers" { print $2 }')" || true
      line "node $n" "127.0.0.1:$port" "$state, ${subscribers:-?} open streams"
    else
      line "node $n" "127.0.0.1:$port" stopped
    fi
  done
  total=$((total + 1))
  if running "$dir/nginx.pid" nginx; then
    up=$((up + 1))
    line nginx "127.0.0.1:$nginx_port" "running (pid $(cat "$dir/nginx.pid"))"
  else
    line nginx "127.0.0.1:$nginx_port" stopped
  fi
  say "directory: $dir"
  # As init scripts do: 0 all running, 3 nothing running, 1 in between.
  if ((up == total)); then
    return 0
  elif ((up == 0)); then
    return 3
  else
    return 1
  fi
}

kill_node() { # N
  local n="$1" pidfile pid
  pidfile="$(node_pidfile "$n")"
  running "$pidfile" ssegate || die "node $n does not run"
  pid="$(cat "$pidfile")"
  kill -KILL "$pid"
  wait_gone "$pid" ssegate || die "node $n outlived SIGKILL"
  say "node $n killed (was pid $pid)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  kill)
    [[ "${2:-}" =~ ^[0-9]+$ ]] || die "usage: run.sh kill N"
    kill_node "$2"
    ;;
  start-node)
    [[ "${2:-}" =~ ^[0-9]+$ ]] || die "usage: run.sh start-node N"
    [ -s "$dir/ssegate.toml" ] || die "no cluster in $dir: run.sh start first"
    start_node "$2"
    ;;
  stop-redis)
    [ -d "$dir/redis" ] || die "no cluster in $dir: run.sh start first"
    stop_process redis "$dir/redis.pid" redis-server TERM
    say "redis stopped"
    ;;
  start-redis)
    [ -d "$dir/redis" ] || die "no cluster in $dir: run.sh start first"
    start_redis
    ;;
  *)
    say "usage: $0 start|stop|status|kill N|start-node N|stop-redis|start-redis" >&2
    exit 2
    ;;
esac
