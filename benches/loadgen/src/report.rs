//! The comparison table: each figure for each server, the ratio
//! ssegate / nchan, and the target it is held to; with a baseline (a second
//! ssegate binary, the build before a change) measured, also its figure and
//! the ratio ssegate / baseline, after / before.

use std::fmt::Write;

use serde_json::json;

use crate::publish_load::{PublishLoad, PublishUnderLoad};
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
        let mut out = String::new();
        write_header(&mut out, with_baseline);
        for row in ROWS {
            self.write_row(&mut out, row, with_baseline);
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
                }))
            })
            .collect();
        serde_json::to_string_pretty(&serde_json::Value::Object(servers)).unwrap_or_default()
    }
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
}
