//! One row of the battery's table: what a scenario held, what it injected,
//! what it found, and whether every part of its criterion held.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `R1`, `R2`, ... as in research/reliability.md §6.
    pub id: String,
    pub scenario: String,
    /// The load the gateway carried meanwhile, in figures.
    pub load: String,
    pub faults: String,
    pub bad_inputs: String,
    /// Events a client was owed and did not get, and events it got twice.
    pub lost: u64,
    pub duplicated: u64,
    /// Each part of the pass criterion, with what was measured.
    pub criteria: Vec<Criterion>,
    pub pass: bool,
    pub seconds: f64,
    /// Measured figures beyond the criterion, and what went wrong.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Criterion {
    pub text: String,
    pub holds: bool,
    /// A latency or CPU figure: what a shared machine disturbs most
    /// (`--speed-criteria advisory` reports it without failing the run).
    pub speed: bool,
}

impl Row {
    pub fn new(id: &str, scenario: &str) -> Row {
        Row {
            id: id.into(),
            scenario: scenario.into(),
            load: "-".into(),
            faults: "-".into(),
            bad_inputs: "-".into(),
            lost: 0,
            duplicated: 0,
            criteria: Vec::new(),
            pass: false,
            seconds: 0.0,
            notes: Vec::new(),
        }
    }

    /// A row for a scenario that could not run at all (the gateway did not
    /// start, say): a failure, with the reason.
    pub fn broken(id: &str, scenario: &str, reason: String) -> Row {
        let mut row = Row::new(id, scenario);
        row.check(false, format!("scenario ran to the end: {reason}"));
        row
    }

    /// Records one part of the criterion, worded with what was measured; a
    /// part that does not hold fails the row.
    pub fn check(&mut self, holds: bool, text: impl Into<String>) {
        self.push(holds, text.into(), false);
    }

    /// `check`, for a latency or CPU figure.
    pub fn check_speed(&mut self, holds: bool, text: impl Into<String>) {
        self.push(holds, text.into(), true);
    }

    fn push(&mut self, holds: bool, text: String, speed: bool) {
        if !holds {
            eprintln!("    FAILED: {text}");
        }
        self.criteria.push(Criterion { text, holds, speed });
    }

    /// Whether every part that is not a speed figure held.
    pub fn pass_but_speed(&self) -> bool {
        !self.criteria.is_empty() && self.criteria.iter().all(|c| c.holds || c.speed)
    }

    pub fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        eprintln!("    {text}");
        self.notes.push(text);
    }

    /// Passes only if it checked something and everything it checked held.
    pub fn finish(mut self, seconds: f64) -> Row {
        self.pass = !self.criteria.is_empty() && self.criteria.iter().all(|c| c.holds);
        self.seconds = seconds;
        self
    }

    fn criterion_cell(&self) -> String {
        self.criteria
            .iter()
            .map(|c| match c.holds {
                true => c.text.clone(),
                false => format!("**not met:** {}", c.text),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The rows as a Markdown table (for the terminal and for benches/README.md).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | load held | faults injected | bad inputs tried | events lost / duplicated | criterion (measured) | result |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let cells = [
            format!("{} {}", row.id, row.scenario),
            row.load.clone(),
            row.faults.clone(),
            row.bad_inputs.clone(),
            format!("{} / {}", row.lost, row.duplicated),
            row.criterion_cell(),
            if row.pass { "PASS" } else { "FAIL" }.to_string(),
        ];
        let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}
