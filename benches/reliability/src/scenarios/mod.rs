//! The scenarios, one module each. A scenario starts its own gateway with
//! the configuration it needs, drives it, and returns its `Row`; adding a
//! row is one module and one line in `ALL`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ssegate_bench::stats::Clock;
use tokio::time::Instant;

use crate::gateway::Launcher;
use crate::row::Row;

pub mod churn;
pub mod connection_limits;
pub mod h2_abuse;
mod h2_attacks;
pub mod kill9;
pub mod malformed;
mod malformed_cases;
pub mod publish_bodies;
pub mod seam;
pub mod seam_check;
pub mod shutdown;
pub mod slow_readers;
pub mod slowloris;

/// What every scenario gets.
pub struct Ctx {
    pub launcher: Launcher,
    pub scale: Scale,
    pub clock: Clock,
    pub seed: u64,
    /// Scheduling priority of the gateways and the probe thread.
    pub nice: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// Numbers cut 10-50x and durations to seconds: CI.
    Small,
    /// The figures of the issue (research/reliability.md §6).
    Full,
}

impl Scale {
    pub fn pick<T>(self, small: T, full: T) -> T {
        match self {
            Scale::Small => small,
            Scale::Full => full,
        }
    }
}

pub type RowFuture<'a> = Pin<Box<dyn Future<Output = Result<Row, String>> + 'a>>;

pub struct Scenario {
    /// The name `--only` takes.
    pub key: &'static str,
    pub id: &'static str,
    pub title: &'static str,
    pub run: for<'a> fn(&'a Ctx) -> RowFuture<'a>,
}

pub const ALL: &[Scenario] = &[
    Scenario {
        key: "seam",
        id: "R1",
        title: "seam under fire",
        run: seam::run,
    },
    Scenario {
        key: "churn",
        id: "R2",
        title: "subscriber churn",
        run: churn::run,
    },
    Scenario {
        key: "slowloris",
        id: "R3/R4",
        title: "slowloris, silent and half-preface connections",
        run: slowloris::run,
    },
    Scenario {
        key: "slow-readers",
        id: "R5",
        title: "slow readers",
        run: slow_readers::run,
    },
    Scenario {
        key: "publish-bodies",
        id: "R6",
        title: "slow and oversized publish bodies",
        run: publish_bodies::run,
    },
    Scenario {
        key: "h2-abuse",
        id: "R7",
        title: "HTTP/2 abuse (h2c)",
        run: h2_abuse::run,
    },
    Scenario {
        key: "connection-limits",
        id: "R11",
        title: "connection limits and descriptor exhaustion",
        run: connection_limits::run,
    },
    Scenario {
        key: "kill9",
        id: "R9",
        title: "kill -9 during publishes",
        run: kill9::run,
    },
    Scenario {
        key: "shutdown",
        id: "R14",
        title: "graceful shutdown under load",
        run: shutdown::run,
    },
    Scenario {
        key: "malformed",
        id: "R13",
        title: "malformed-input sweep",
        run: malformed::run,
    },
];

/// Runs one scenario within its time limit; a scenario that errs or
/// overruns is a failed row saying why.
pub async fn run_one(ctx: &Ctx, scenario: &Scenario) -> Row {
    let started = Instant::now();
    let limit = ctx
        .scale
        .pick(Duration::from_secs(180), Duration::from_secs(1800));
    let row = match tokio::time::timeout(limit, (scenario.run)(ctx)).await {
        Ok(Ok(row)) => row,
        Ok(Err(err)) => Row::broken(scenario.id, scenario.title, err),
        Err(_) => Row::broken(
            scenario.id,
            scenario.title,
            format!("did not finish within {limit:?}"),
        ),
    };
    row.finish(started.elapsed().as_secs_f64())
}

/// Polls `check` every `every` until it holds or `timeout` passes; returns
/// how long it took, or `None`.
pub async fn wait_for<F, Fut>(timeout: Duration, every: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return Some(started.elapsed());
        }
        if started.elapsed() >= timeout {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// `n` with thousands separated, for the table.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
