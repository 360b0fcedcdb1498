//! The comparison table: each figure for each server, the ratio
//! ssegate / nchan, and the target it is held to; with a baseline (a second
//! ssegate binary, the build before a change) measured, also its figure and
//! the ratio ssegate / baseline, after / before. Cluster mode has a table
//! of its own: a single node, one node with Redis, three nodes on one Redis
//! and Redis alone side by side, for each ssegate binary measured.

use std::fmt::Write;

use serde_json::json;

use crate::cluster::{ClusterResults, ClusterStorm, Layout, LayoutRounds, PublishCpu, RawXadd};
use crate::publish_load::{self, PublishLoad, PublishUnderLoad};
use crate::workloads::{Idle, Saturation, Step, Storm};

#[derive(Debug, Default)]
pub struct ServerResults {
    pub broadcast: Option<Saturation>,
    pub many_topics: Option<Saturation>,
    /// One step per round: the fixed-rate figures are medians over rounds.
    pub fixed_broadcast: Vec<Step>,
    pub fixed_many_topics: Vec<Step>,
    pub idle: Option<Idle>,
    pub publish: Option<PublishLoad>,
    pub storm: Option<Storm>,
    pub publish_loaded: Option<PublishUnderLoad>,
    pub cluster: Option<ClusterResults>,
    pub cluster_storm: Option<ClusterStorm>,
}

#[derive(Debug, Default)]
pub struct Results {
    pub servers: Vec<(&'static str, ServerResults)>,
}

/// How a ratio ssegate / nchan is judged.
#[derive(Debug, Clone, Copy)]
enum Target {
    AtLeast(f64),
    AtMost(f64),
    Info,
}

struct Row {
    figure: &'static str,
    unit: &'static str,
    target: Target,
    value: fn(&ServerResults) -> Option<f64>,
}

/// The median of `figure` over `steps` (the upper one of an even count).
fn median(steps: &[Step], figure: fn(&Step) -> f64) -> Option<f64> {
    let mut values: Vec<f64> = steps.iter().map(figure).collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

fn best(saturation: &Option<Saturation>) -> Option<&Step> {
    saturation.as_ref().and_then(|s| s.best.as_ref())
}

const ROWS: &[Row] = &[
    Row {
        figure: "broadcast saturation deliveries/s",
        unit: "/s",
        target: Target::AtLeast(2.0),
        value: |r| best(&r.broadcast).map(|s| s.achieved_per_s),
    },
    Row {
        figure: "  at saturation: p50 latency",
        unit: "ms",
        target: Target::Info,
        value: |r| best(&r.broadcast).map(|s| s.p50_ms),
    },
    Row {
        figure: "  at saturation: p99 latency",
        unit: "ms",
        target: Target::Info,
        value: |r| best(&r.broadcast).map(|s| s.p99_ms),
    },
    Row {
        figure: "  at saturation: server CPU s / 1M deliveries",
        unit: "s",
        target: Target::Info,
        value: |r| {
            best(&r.broadcast)
                .map(|s| (s.server.cpu().as_secs_f64()) * 1e6 / s.deliveries.max(1) as f64)
        },
    },
    Row {
        figure: "many-topics saturation deliveries/s",
        unit: "/s",
        target: Target::AtLeast(1.5),
        value: |r| best(&r.many_topics).map(|s| s.achieved_per_s),
    },
    Row {
        figure: "  at saturation: p50 latency",
        unit: "ms",
        target: Target::Info,
        value: |r| best(&r.many_topics).map(|s| s.p50_ms),
    },
    Row {
        figure: "  at saturation: p99 latency",
        unit: "ms",
        target: Target::Info,
        value: |r| best(&r.many_topics).map(|s| s.p99_ms),
    },
    Row {
        figure: "  at saturation: server CPU s / 1M deliveries",
        unit: "s",
        target: Target::Info,
        value: |r| {
            best(&r.many_topics)
                .map(|s| (s.server.cpu().as_secs_f64()) * 1e6 / s.deliveries.max(1) as f64)
        },
    },
    Row {
        figure: "broadcast 2 ev/s: p50 latency",
        unit: "ms",
        target: Target::Info,
        value: |r| median(&r.fixed_broadcast, |s| s.p50_ms),
    },
    Row {
        figure: "broadcast 2 ev/s: p99 latency",
        unit: "ms",
        target: Target::AtMost(0.8),
        value: |r| median(&r.fixed_broadcast, |s| s.p99_ms),
    },
    Row {
        figure: "broadcast 2 ev/s: max latency",
        unit: "ms",
        target: Target::Info,
        value: |r| median(&r.fixed_broadcast, |s| s.max_ms),
    },
    Row {
        figure: "broadcast 2 ev/s: user CPU per delivery",
        unit: "us",
        target: Target::AtMost(0.5),
        value: |r| median(&r.fixed_broadcast, |s| s.cpu_us_per_delivery().0),
    },
    Row {
        figure: "broadcast 2 ev/s: total CPU per delivery",
        unit: "us",
        target: Target::AtMost(0.85),
        value: |r| {
            median(&r.fixed_broadcast, |s| {
                s.cpu_us_per_delivery().0 + s.cpu_us_per_delivery().1
            })
        },
    },
    Row {
        figure: "many topics 1000 ev/s: p50 latency",
        unit: "ms",
        target: Target::Info,
        value: |r| median(&r.fixed_many_topics, |s| s.p50_ms),
    },
    Row {
        figure: "many topics 1000 ev/s: p99 latency",
        unit: "ms",
        target: Target::Info,
        value: |r| median(&r.fixed_many_topics, |s| s.p99_ms),
    },
    Row {
        figure: "many topics 1000 ev/s: max latency",
        unit: "ms",
        target: Target::Info,
        value: |r| median(&r.fixed_many_topics, |s| s.max_ms),
    },
    Row {
        figure: "many topics 1000 ev/s: user CPU per delivery",
        unit: "us",
        target: Target::AtMost(0.5),
        value: |r| median(&r.fixed_many_topics, |s| s.cpu_us_per_delivery().0),
    },
    Row {
        figure: "many topics 1000 ev/s: total CPU per delivery",
        unit: "us",
        target: Target::AtMost(0.85),
        value: |r| {
            median(&r.fixed_many_topics, |s| {
                s.cpu_us_per_delivery().0 + s.cpu_us_per_delivery().1
            })
        },
    },
    Row {
        figure: "idle RSS per subscriber",
        unit: "B",
        target: Target::AtMost(0.5),
        value: |r| r.idle.as_ref().map(|i| i.rss_per_subscriber_bytes),
    },
    Row {
        figure: "idle CPU (heartbeats only)",
        unit: "%",
        target: Target::Info,
        value: |r| r.idle.as_ref().map(|i| i.idle_cpu_share * 100.0),
    },
    Row {
        figure: "publish requests/s (oha, 50 conns)",
        unit: "/s",
        target: Target::AtLeast(1.0),
        value: |r| r.publish.as_ref().map(|p| p.requests_per_s),
    },
    Row {
        figure: "publish p99 latency",
        unit: "ms",
        target: Target::AtMost(1.0),
        value: |r| r.publish.as_ref().map(|p| p.p99_ms),
    },
    Row {
        figure: "reconnect storm: time until all caught up",
        unit: "s",
        target: Target::AtMost(0.5),
        value: |r| r.storm.as_ref().map(|s| s.seconds),
    },
    Row {
        figure: "reconnect storm: events lost",
        unit: "",
        target: Target::Info,
        value: |r| r.storm.as_ref().map(|s| s.lost as f64),
    },
];

impl Results {
    pub fn server(&mut self, name: &'static str) -> &mut ServerResults {
        if let Some(index) = self.servers.iter().position(|(n, _)| *n == name) {
            return &mut self.servers[index].1;
        }
        self.servers.push((name, ServerResults::default()));
        &mut self.servers.last_mut().expect("just pushed").1
    }

    fn get(&self, name: &str) -> Option<&ServerResults> {
        self.servers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| r)
    }

    /// A Markdown table of every figure measured. With a baseline measured,
    /// its figure and ssegate / baseline follow the existing columns; without
    /// one, the table reads exactly as it did before baselines existed, so
    /// older tables and the README's stay comparable line by line.
    pub fn table(&self) -> String {
        let with_baseline = self.get("baseline").is_some();
        let mut rows = String::new();
        for row in ROWS {
            self.write_row(&mut rows, row, with_baseline);
        }
        // A run of the cluster workloads alone has no row here: no header
        // either, its table follows.
        let mut out = String::new();
        if !rows.is_empty()
            || self
                .servers
                .iter()
                .all(|(_, r)| r.cluster.is_none() && r.cluster_storm.is_none())
        {
            write_header(&mut out, with_baseline);
            out.push_str(&rows);
        }
        let loaded: Vec<_> = self
            .servers
            .iter()
            .filter_map(|(name, r)| r.publish_loaded.as_ref().map(|p| (name, p)))
            .collect();
        if !loaded.is_empty() {
            let _ = writeln!(
                out,
                "\nPublish under load (`oha -m POST`, 50 connections, 10 s, medians of 3 rounds), alone and while idle \
                 subscribers hold streams on other topics; the ratio is with / without \
                 (1.00: the open streams cost publishers nothing):\n\n\
                 | server | subscribers | requests/s alone | with | ratio | p99 alone | with | ratio |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|"
            );
            for (name, p) in loaded {
                let _ = writeln!(
                    out,
                    "| {name} | {} | {:.0} | {:.0} | {:.2} | {:.2} ms | {:.2} ms | {:.2} |",
                    p.n_subscribers,
                    p.alone.requests_per_s,
                    p.loaded.requests_per_s,
                    p.loaded.requests_per_s / p.alone.requests_per_s.max(f64::MIN_POSITIVE),
                    p.alone.p99_ms,
                    p.loaded.p99_ms,
                    p.loaded.p99_ms / p.alone.p99_ms.max(f64::MIN_POSITIVE),
                );
            }
        }
        for (name, results) in &self.servers {
            cluster_table(&mut out, name, results);
        }
        for (name, results) in &self.servers {
            for (label, saturation) in [
                ("broadcast", &results.broadcast),
                ("many topics", &results.many_topics),
            ] {
                if saturation.as_ref().is_some_and(Saturation::loader_bound) {
                    let _ = writeln!(
                        out,
                        "\nNote: {name} {label}: the load generator's core was busy at the failing step; the limit may be the loader's."
                    );
                }
            }
        }
        out
    }

    /// One figure's line, or none when no server measured it. The target is
    /// judged on ssegate / nchan only: the targets are the comparison with
    /// nchan, while after / before is there to be read, not judged.
    fn write_row(&self, out: &mut String, row: &Row, with_baseline: bool) {
        let value = |name| self.get(name).and_then(|r| (row.value)(r));
        let (ssegate, nchan, baseline) = (value("ssegate"), value("nchan"), value("baseline"));
        if ssegate.is_none() && nchan.is_none() && baseline.is_none() {
            return;
        }
        let vs_nchan = ratio(ssegate, nchan);
        let (target, met) = judge(row.target, vs_nchan);
        let _ = write!(
            out,
            "| {} | {} | {} | {} | {target} | {met} |",
            row.figure,
            fmt(ssegate, row.unit),
            fmt(nchan, row.unit),
            fmt_ratio(vs_nchan),
        );
        if with_baseline {
            let _ = write!(
                out,
                " {} | {} |",
                fmt(baseline, row.unit),
                fmt_ratio(ratio(ssegate, baseline)),
            );
        }
        out.push('\n');
    }

    /// The raw figures of every server measured, keyed by its name
    /// (`ssegate`, `nchan`, `baseline`).
    pub fn to_json(&self) -> String {
        let step = |s: &Step| {
            json!({
                "rate": s.rate, "offered_per_s": s.offered_per_s, "achieved_per_s": s.achieved_per_s,
                "deliveries": s.deliveries, "expected": s.expected, "errors": s.errors,
                "p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "max_ms": s.max_ms,
                "server_user_s": s.server.user.as_secs_f64(), "server_system_s": s.server.system.as_secs_f64(),
                "loader_cpu_share": s.loader_cpu_share, "pass": s.pass,
            })
        };
        let saturation = |s: &Option<Saturation>| {
            s.as_ref().map(|s| json!({ "best": s.best.as_ref().map(step), "steps": s.steps.iter().map(step).collect::<Vec<_>>() }))
        };
        let servers: serde_json::Map<String, serde_json::Value> = self
            .servers
            .iter()
            .map(|(name, r)| {
                (name.to_string(), json!({
                    "broadcast": saturation(&r.broadcast),
                    "many_topics": saturation(&r.many_topics),
                    "fixed_broadcast": r.fixed_broadcast.iter().map(step).collect::<Vec<_>>(),
                    "fixed_many_topics": r.fixed_many_topics.iter().map(step).collect::<Vec<_>>(),
                    "idle": r.idle.as_ref().map(|i| json!({"n": i.n_subscribers, "rss_per_subscriber_bytes": i.rss_per_subscriber_bytes, "cpu_share": i.idle_cpu_share})),
                    "publish": r.publish.as_ref().map(|p| json!({"requests_per_s": p.requests_per_s, "p99_ms": p.p99_ms, "success_rate": p.success_rate})),
                    "storm": r.storm.as_ref().map(|s| json!({"n": s.n_subscribers, "caught_up": s.caught_up, "seconds": s.seconds, "lost": s.lost})),
                    "publish_loaded": r.publish_loaded.as_ref().map(|p| json!({
                        "n_subscribers": p.n_subscribers,
                        "alone": {"requests_per_s": p.alone.requests_per_s, "p99_ms": p.alone.p99_ms},
                        "loaded": {"requests_per_s": p.loaded.requests_per_s, "p99_ms": p.loaded.p99_ms},
                    })),
                    "cluster": r.cluster.as_ref().map(|c| {
                        let layout = |l: &LayoutRounds| json!({
                            "fanout": l.fanout.iter().map(step).collect::<Vec<_>>(),
                            "publish": l.publish.iter().map(|p| json!({"requests_per_s": p.requests_per_s, "p99_ms": p.p99_ms, "success_rate": p.success_rate})).collect::<Vec<_>>(),
                            "publish_cpu_us": l.publish_cpu.iter().map(|c| json!({"nodes": c.nodes_us, "redis": c.redis_us})).collect::<Vec<_>>(),
                        });
                        json!({
                            "n_subscribers": c.n_subscribers, "n_topics": c.n_topics,
                            "publisher_connections": c.publisher_connections, "rate": c.rate, "seconds": c.seconds,
                            "single": layout(&c.single), "one_node": layout(&c.one_node), "three_nodes": layout(&c.three_nodes),
                            "raw_xadd": c.raw.iter().map(|x| json!({"requests_per_s": x.requests_per_s, "p50_ms": x.p50_ms, "p99_ms": x.p99_ms, "redis_cpu_us": x.redis_us})).collect::<Vec<_>>(),
                        })
                    }),
                    "cluster_storm": r.cluster_storm.as_ref().map(|c| {
                        let storm = |s: &Storm| json!({
                            "n": s.n_subscribers, "caught_up": s.caught_up, "seconds": s.seconds, "lost": s.lost, "refused": s.refused, "retried": s.retried,
                            "per_node": s.per_node.iter().map(|n| json!({
                                "addr": n.addr.to_string(), "n": n.n_subscribers, "caught_up": n.caught_up,
                                "seconds": n.seconds, "first_seconds": n.first_seconds, "median_seconds": n.median_seconds,
                                "lost": n.lost, "refused": n.refused, "retried": n.retried,
                            })).collect::<Vec<_>>(),
                        });
                        json!({
                            "single": storm(&c.single), "three_nodes": storm(&c.three_nodes), "late_nodes": c.late_nodes,
                            "three_nodes_cpu_s": c.cpu_seconds.iter().map(|(process, seconds)| (process.clone(), json!(seconds))).collect::<serde_json::Map<String, serde_json::Value>>(),
                        })
                    }),
                }))
            })
            .collect();
        serde_json::to_string_pretty(&serde_json::Value::Object(servers)).unwrap_or_default()
    }
}

/// The cluster-mode table of one ssegate binary, if it ran `cluster` or
/// `cluster-storm`: a single node, one node with Redis, three nodes on one
/// Redis and Redis alone side by side; `compared` is the figure its target
/// judges (how each is computed: benches/README.md, "Cluster mode").
fn cluster_table(out: &mut String, name: &str, results: &ServerResults) {
    let (fanout, storm) = (results.cluster.as_ref(), results.cluster_storm.as_ref());
    if fanout.is_none() && storm.is_none() {
        return;
    }
    let _ = writeln!(
        out,
        "\nCluster mode, {name} (every node and redis-server on one core):"
    );
    if let Some(c) = fanout {
        let _ = writeln!(
            out,
            "fan-out: {} subscribers on {} topics, {:.0} events/s from {} publisher connections, subscribers and publishers \
             spread evenly over the nodes, {:.0} s per layout, medians of {} rounds; publish: `oha -m POST`, 50 connections, \
             10 s, to node 1; Redis alone: `redis-benchmark -c 50` running `XADD bench:raw MAXLEN ~ 100000 * f <100 bytes>`.",
            c.n_subscribers,
            c.n_topics,
            c.rate,
            c.publisher_connections,
            c.seconds,
            c.single.fanout.len().max(c.three_nodes.fanout.len()),
        );
    }
    if let Some(c) = storm {
        let _ = writeln!(
            out,
            "resume storm: 200 events published on node 1, then {} subscribers resume after event 99, spread over the nodes; \
             node{} {} started after the publishes (their rings begin at the log's end: they replay from Redis).",
            c.three_nodes.n_subscribers,
            if c.late_nodes.len() == 1 { "" } else { "s" },
            c.late_nodes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" and "),
        );
    }
    let _ = writeln!(
        out,
        "\n| figure | single node | 1 node + Redis | 3 nodes + Redis | Redis alone | compared | target | met |\n\
         |---|---:|---:|---:|---:|---:|---|---|"
    );
    let mut row = |figure: &str,
                   values: [Option<f64>; 4],
                   unit: &str,
                   compared: String,
                   target: &str,
                   met: Option<bool>| {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "NO",
            None if target.is_empty() => "",
            None => "?",
        };
        // Counts (no unit) as whole numbers.
        let cell = |value: Option<f64>| match value {
            Some(v) if unit.is_empty() => format!("{v:.0}"),
            _ => fmt(value, unit),
        };
        let _ = writeln!(
            out,
            "| {figure} | {} | {} | {} | {} | {compared} | {target} | {met} |",
            cell(values[0]),
            cell(values[1]),
            cell(values[2]),
            cell(values[3]),
        );
    };
    if let Some(c) = fanout {
        let per_layout = |figure: fn(&Step) -> f64| {
            Layout::ALL.map(|layout| median(&c.layout(layout).fanout, figure))
        };
        let with_raw = |[a, b, c]: [Option<f64>; 3], raw: Option<f64>| [a, b, c, raw];
        let difference =
            |values: [Option<f64>; 3]| values[2].zip(values[0]).map(|(three, one)| three - one);
        let fmt_difference = |d: Option<f64>| d.map_or("-".into(), |d| format!("{d:+.2} ms"));
        row(
            "fan-out deliveries/s",
            with_raw(per_layout(|s| s.achieved_per_s), None),
            "/s",
            String::new(),
            "",
            None,
        );
        let p50 = per_layout(|s| s.p50_ms);
        let added = difference(p50);
        row(
            "fan-out p50 latency (publish to receive)",
            with_raw(p50, None),
            "ms",
            fmt_difference(added),
            "3 nodes - single < +1 ms",
            added.map(|d| d < 1.0),
        );
        let p99 = per_layout(|s| s.p99_ms);
        row(
            "fan-out p99 latency",
            with_raw(p99, None),
            "ms",
            fmt_difference(difference(p99)),
            "",
            None,
        );
        row(
            "fan-out max latency",
            with_raw(per_layout(|s| s.max_ms), None),
            "ms",
            String::new(),
            "",
            None,
        );
        row(
            "fan-out CPU per delivery (nodes + Redis)",
            with_raw(
                per_layout(|s| {
                    let (user, system) = s.cpu_us_per_delivery();
                    user + system
                }),
                None,
            ),
            "us",
            String::new(),
            "",
            None,
        );
        let lost = Layout::ALL.map(|layout| {
            let steps = &c.layout(layout).fanout;
            (!steps.is_empty()).then(|| steps.iter().map(step_lost).sum::<u64>() as f64)
        });
        let cluster_lost = lost[1].unwrap_or(0.0) + lost[2].unwrap_or(0.0);
        row(
            "fan-out events lost or out of order (all rounds)",
            with_raw(lost, None),
            "",
            format!("{cluster_lost:.0}"),
            "cluster layouts = 0",
            Some(cluster_lost == 0.0),
        );
        let publish = Layout::ALL.map(|layout| {
            let runs = &c.layout(layout).publish;
            (!runs.is_empty()).then(|| publish_load::median(runs.clone()))
        });
        let raw = median_raw(&c.raw);
        let rps = publish
            .each_ref()
            .map(|p| p.as_ref().map(|p| p.requests_per_s));
        let script_vs_raw = ratio(rps[1], raw.as_ref().map(|r| r.requests_per_s));
        row(
            "publish requests/s (oha, 50 conns, to node 1)",
            with_raw(rps, raw.as_ref().map(|r| r.requests_per_s)),
            "/s",
            fmt_ratio(script_vs_raw),
            "1 node + Redis / Redis alone >= 0.5",
            script_vs_raw.map(|r| r >= 0.5),
        );
        row(
            "publish p99 latency",
            with_raw(
                publish.each_ref().map(|p| p.as_ref().map(|p| p.p99_ms)),
                raw.as_ref().map(|r| r.p99_ms),
            ),
            "ms",
            String::new(),
            "",
            None,
        );
    }
    if let Some(c) = fanout {
        let cpu = |figure: fn(&PublishCpu) -> f64| {
            Layout::ALL.map(|layout| {
                let mut values: Vec<f64> =
                    c.layout(layout).publish_cpu.iter().map(figure).collect();
                values.sort_by(f64::total_cmp);
                values.get(values.len() / 2).copied()
            })
        };
        let [a, b, d] = cpu(|c| c.nodes_us);
        row(
            "  CPU per publish: nodes (request and tails)",
            [a, b, d, None],
            "us",
            String::new(),
            "",
            None,
        );
        let [a, b, d] = cpu(|c| c.redis_us);
        row(
            "  CPU per publish: Redis",
            [
                a.filter(|_| false),
                b,
                d,
                median_raw(&c.raw).map(|r| r.redis_us),
            ],
            "us",
            String::new(),
            "",
            None,
        );
    }
    if let Some(c) = storm {
        let (single, three) = (&c.single, &c.three_nodes);
        row(
            "resume storm: time until all caught up",
            [Some(single.seconds), None, Some(three.seconds), None],
            "s",
            String::new(),
            "",
            None,
        );
        for (i, node) in three.per_node.iter().enumerate() {
            let how = if c.late_nodes.contains(&(i + 1)) {
                "started after the publishes: replays from Redis"
            } else if i == 0 {
                "published there: its ring"
            } else {
                "up during the publishes: its ring"
            };
            row(
                &format!(
                    "  node {} ({} subscribers; {how})",
                    i + 1,
                    node.n_subscribers
                ),
                [None, None, Some(node.seconds), None],
                "s",
                String::new(),
                "",
                None,
            );
        }
        row(
            "resume storm: events lost",
            [
                Some(single.lost as f64),
                None,
                Some(three.lost as f64),
                None,
            ],
            "",
            format!("{}", three.lost),
            "3 nodes = 0",
            Some(three.lost == 0),
        );
        row(
            "resume storm: subscribes refused (not 200)",
            [
                Some(single.refused as f64),
                None,
                Some(three.refused as f64),
                None,
            ],
            "",
            String::new(),
            "",
            None,
        );
        row(
            "resume storm: told to come back (`retry:`), came back",
            [
                Some(single.retried as f64),
                None,
                Some(three.retried as f64),
                None,
            ],
            "",
            String::new(),
            "",
            None,
        );
    }
}

/// Events a fan-out step did not deliver exactly once and in order.
fn step_lost(step: &Step) -> u64 {
    step.errors + step.expected.abs_diff(step.deliveries)
}

/// The median of each figure of several raw `XADD` runs, on its own.
fn median_raw(runs: &[RawXadd]) -> Option<RawXadd> {
    let middle = |figure: fn(&RawXadd) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(figure).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied()
    };
    Some(RawXadd {
        requests_per_s: middle(|r| r.requests_per_s)?,
        p50_ms: middle(|r| r.p50_ms)?,
        p99_ms: middle(|r| r.p99_ms)?,
        redis_us: middle(|r| r.redis_us)?,
    })
}

/// The table's header; the baseline's two columns come last so that the
/// target and its verdict stay next to the ratio they judge.
fn write_header(out: &mut String, with_baseline: bool) {
    let (names, aligns) = if with_baseline {
        (" baseline | ssegate / baseline |", "---:|---:|")
    } else {
        ("", "")
    };
    let _ = writeln!(
        out,
        "| figure | ssegate | nchan | ssegate / nchan | target | met |{names}"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|---|{aligns}");
}

/// `a / b`, when both were measured and `b` is not zero.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b)
}

/// The target column and its verdict for a ratio ssegate / nchan (`?` when
/// the ratio is missing, empty for figures shown for information).
fn judge(target: Target, ratio: Option<f64>) -> (String, &'static str) {
    match (target, ratio) {
        (Target::AtLeast(t), Some(r)) => (format!(">= {t}"), if r >= t { "yes" } else { "NO" }),
        (Target::AtMost(t), Some(r)) => (format!("<= {t}"), if r <= t { "yes" } else { "NO" }),
        (Target::AtLeast(t), None) => (format!(">= {t}"), "?"),
        (Target::AtMost(t), None) => (format!("<= {t}"), "?"),
        (Target::Info, _) => (String::new(), ""),
    }
}

fn fmt_ratio(ratio: Option<f64>) -> String {
    ratio.map_or("-".into(), |r| format!("{r:.2}"))
}

fn fmt(value: Option<f64>, unit: &str) -> String {
    match value {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0} {unit}"),
        Some(v) => format!("{v:.2} {unit}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(rss_per_subscriber_bytes: f64) -> ServerResults {
        ServerResults {
            idle: Some(Idle {
                n_subscribers: 1000,
                rss_per_subscriber_bytes,
                idle_cpu_share: 0.0,
            }),
            ..ServerResults::default()
        }
    }

    fn results(servers: Vec<(&'static str, f64)>) -> Results {
        Results {
            servers: servers
                .into_iter()
                .map(|(name, rss)| (name, idle(rss)))
                .collect(),
        }
    }

    fn line<'a>(table: &'a str, start: &str) -> &'a str {
        table
            .lines()
            .find(|line| line.starts_with(start))
            .unwrap_or_default()
    }

    #[test]
    fn without_a_baseline_the_table_is_as_before() {
        let table = results(vec![("ssegate", 4821.0), ("nchan", 10274.0)]).table();
        let mut lines = table.lines();
        assert_eq!(
            lines.next(),
            Some("| figure | ssegate | nchan | ssegate / nchan | target | met |")
        );
        assert_eq!(lines.next(), Some("|---|---:|---:|---:|---|---|"));
        assert_eq!(
            line(&table, "| idle RSS"),
            "| idle RSS per subscriber | 4821 B | 10274 B | 0.47 | <= 0.5 | yes |"
        );
    }

    #[test]
    fn a_baseline_adds_its_figure_and_after_over_before() {
        let table = results(vec![("ssegate", 4821.0), ("baseline", 5000.0)]).table();
        let mut lines = table.lines();
        assert_eq!(
            lines.next(),
            Some(
                "| figure | ssegate | nchan | ssegate / nchan | target | met | baseline | ssegate / baseline |"
            )
        );
        assert_eq!(lines.next(), Some("|---|---:|---:|---:|---|---|---:|---:|"));
        assert_eq!(
            line(&table, "| idle RSS"),
            "| idle RSS per subscriber | 4821 B | - | - | <= 0.5 | ? | 5000 B | 0.96 |"
        );
        // Idle CPU is zero for the baseline here: no ratio, as for nchan.
        assert_eq!(
            line(&table, "| idle CPU"),
            "| idle CPU (heartbeats only) | 0.00 % | - | - |  |  | 0.00 % | - |"
        );
    }

    #[test]
    fn the_target_stays_on_ssegate_over_nchan() {
        let table = results(vec![
            ("ssegate", 4821.0),
            ("baseline", 1000.0),
            ("nchan", 10274.0),
        ])
        .table();
        assert_eq!(
            line(&table, "| idle RSS"),
            "| idle RSS per subscriber | 4821 B | 10274 B | 0.47 | <= 0.5 | yes | 1000 B | 4.82 |"
        );
    }

    #[test]
    fn json_includes_the_baseline() {
        let json = results(vec![("ssegate", 4821.0), ("baseline", 5000.0)]).to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(
            value["baseline"]["idle"]["rss_per_subscriber_bytes"].as_f64(),
            Some(5000.0)
        );
        assert_eq!(
            value["ssegate"]["idle"]["rss_per_subscriber_bytes"].as_f64(),
            Some(4821.0)
        );
    }

    fn step(p50_ms: f64, deliveries: u64) -> Step {
        Step {
            rate: 1000.0,
            offered_per_s: 100_000.0,
            deliveries,
            expected: 1_000_000,
            achieved_per_s: deliveries as f64 / 10.0,
            p50_ms,
            p99_ms: 2.0 * p50_ms,
            max_ms: 10.0 * p50_ms,
            errors: 0,
            server: crate::procstat::Usage::default(),
            loader_cpu_share: 0.5,
            pass: deliveries == 1_000_000,
        }
    }

    fn publish(requests_per_s: f64) -> PublishLoad {
        PublishLoad {
            requests_per_s,
            p99_ms: 1.0,
            success_rate: 1.0,
        }
    }

    fn layout(p50_ms: f64, deliveries: u64, requests_per_s: f64) -> LayoutRounds {
        LayoutRounds {
            fanout: vec![step(p50_ms, deliveries)],
            publish: vec![publish(requests_per_s)],
            publish_cpu: vec![PublishCpu {
                nodes_us: 40.0,
                redis_us: 50.0,
            }],
        }
    }

    #[test]
    fn the_cluster_table_judges_what_redis_adds() {
        let cluster = ClusterResults {
            n_subscribers: 10_000,
            n_topics: 100,
            publisher_connections: 12,
            rate: 1000.0,
            seconds: 10.0,
            single: layout(0.10, 1_000_000, 100_000.0),
            one_node: layout(0.40, 1_000_000, 20_000.0),
            // One event short on one subscriber: lost.
            three_nodes: layout(0.90, 999_999, 15_000.0),
            raw: vec![RawXadd {
                requests_per_s: 50_000.0,
                p50_ms: 0.5,
                p99_ms: 1.0,
                redis_us: 15.0,
            }],
        };
        let results = Results {
            servers: vec![(
                "ssegate",
                ServerResults {
                    cluster: Some(cluster),
                    ..ServerResults::default()
                },
            )],
        };
        let table = results.table();
        // Only cluster figures: no empty comparison table before them.
        assert!(!table.contains("| figure | ssegate | nchan |"));
        assert_eq!(
            line(&table, "| fan-out p50"),
            "| fan-out p50 latency (publish to receive) | 0.10 ms | 0.40 ms | 0.90 ms | - | +0.80 ms | 3 nodes - single < +1 ms | yes |"
        );
        assert_eq!(
            line(&table, "| fan-out events lost"),
            "| fan-out events lost or out of order (all rounds) | 0 | 0 | 1 | - | 1 | cluster layouts = 0 | NO |"
        );
        assert_eq!(
            line(&table, "| publish requests/s"),
            "| publish requests/s (oha, 50 conns, to node 1) | 100000 /s | 20000 /s | 15000 /s | 50000 /s | 0.40 | 1 node + Redis / Redis alone >= 0.5 | NO |"
        );
        let json: serde_json::Value = serde_json::from_str(&results.to_json()).unwrap_or_default();
        assert_eq!(
            json["ssegate"]["cluster"]["raw_xadd"][0]["requests_per_s"].as_f64(),
            Some(50_000.0)
        );
    }
}
