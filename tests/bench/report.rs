//! The results: rows of the table (vtpm next to swtpm, ratio vtpm/swtpm), the goals with
//! PASS/FAIL, profiles and notes; printed as text and written as JSON.

use serde_json::{Value, json};

use crate::daemon::Flavor;
use crate::stats::Samples;

/// Median (and p99 where tails matter) of one daemon's samples.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub median: f64,
    pub p99: Option<f64>,
    pub n: usize,
}

impl Summary {
    pub fn of(samples: &Samples, with_p99: bool) -> Summary {
        Summary {
            median: samples.median(),
            p99: with_p99.then(|| samples.p99()),
            n: samples.len(),
        }
    }

    /// A single measurement (a memory reading, a blob size).
    pub fn single(value: f64) -> Summary {
        Summary {
            median: value,
            p99: None,
            n: 1,
        }
    }

    fn json(&self) -> Value {
        json!({ "median": self.median, "p99": self.p99, "n": self.n })
    }
}

pub struct Row {
    pub section: &'static str,
    pub metric: String,
    pub unit: &'static str,
    pub vtpm: Option<Summary>,
    pub swtpm: Option<Summary>,
    /// Neither daemon: a physical reference such as the fdatasync floor.
    pub reference: Option<Summary>,
}

impl Row {
    /// vtpm next to swtpm, from per-flavor samples.
    pub fn compare(
        section: &'static str,
        metric: impl Into<String>,
        unit: &'static str,
        samples: &[Samples; 2],
        with_p99: bool,
    ) -> Row {
        Row {
            section,
            metric: metric.into(),
            unit,
            vtpm: Some(Summary::of(&samples[Flavor::Vtpm.index()], with_p99)),
            swtpm: Some(Summary::of(&samples[Flavor::Swtpm.index()], with_p99)),
            reference: None,
        }
    }

    /// vtpm next to swtpm, one value each.
    pub fn values(
        section: &'static str,
        metric: impl Into<String>,
        unit: &'static str,
        values: [f64; 2],
    ) -> Row {
        Row {
            section,
            metric: metric.into(),
            unit,
            vtpm: Some(Summary::single(values[Flavor::Vtpm.index()])),
            swtpm: Some(Summary::single(values[Flavor::Swtpm.index()])),
            reference: None,
        }
    }

    pub fn reference(
        section: &'static str,
        metric: impl Into<String>,
        unit: &'static str,
        samples: &Samples,
    ) -> Row {
        Row {
            section,
            metric: metric.into(),
            unit,
            vtpm: None,
            swtpm: None,
            reference: Some(Summary::of(samples, true)),
        }
    }

    /// vtpm's median over swtpm's (none when it is not a number, as for 0 / 0).
    pub fn ratio(&self) -> Option<f64> {
        Some(self.vtpm?.median / self.swtpm?.median).filter(|r| r.is_finite())
    }

    fn line(&self) -> String {
        let cell = |value: Option<f64>| value.map_or("-".to_string(), number);
        if let Some(reference) = &self.reference {
            return format!(
                "{:<60} {:<6} {:>10} {:>10}   (reference, not a daemon)",
                self.metric,
                self.unit,
                number(reference.median),
                cell(reference.p99)
            );
        }
        format!(
            "{:<60} {:<6} {:>10} {:>10} {:>10} {:>10} {:>8}",
            self.metric,
            self.unit,
            cell(self.vtpm.map(|s| s.median)),
            cell(self.vtpm.and_then(|s| s.p99)),
            cell(self.swtpm.map(|s| s.median)),
            cell(self.swtpm.and_then(|s| s.p99)),
            self.ratio().map_or("-".to_string(), |r| format!("{r:.2}"))
        )
    }

    fn json(&self) -> Value {
        json!({
            "section": self.section,
            "metric": self.metric,
            "unit": self.unit,
            "vtpm": self.vtpm.map(|s| s.json()),
            "swtpm": self.swtpm.map(|s| s.json()),
            "reference": self.reference.map(|s| s.json()),
            "ratio_vtpm_over_swtpm": self.ratio(),
        })
    }
}

/// A goal of the issue: `measured` (a ratio) must not exceed `limit`.
pub struct Goal {
    pub name: String,
    pub measured: f64,
    pub limit: f64,
    /// What the ratio is made of.
    pub detail: String,
}

impl Goal {
    pub fn passed(&self) -> bool {
        self.measured <= self.limit
    }

    fn line(&self) -> String {
        format!(
            "{:<4} {:<44} {:>6.2} (goal <= {:.2})  {}",
            if self.passed() { "PASS" } else { "FAIL" },
            self.name,
            self.measured,
            self.limit,
            self.detail
        )
    }
}

/// A profile: a title and preformatted lines.
pub struct Profile {
    pub title: String,
    pub lines: Vec<String>,
    pub data: Value,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub goals: Vec<Goal>,
    pub profiles: Vec<Profile>,
    pub notes: Vec<String>,
    last_section: Option<&'static str>,
}

const HEADER: &str = "metric                                                       unit     vtpm med   vtpm p99  swtpm med  swtpm p99  vtpm/swtpm";

impl Report {
    /// Adds a row and prints it at once (with its section heading when new).
    pub fn add(&mut self, row: Row) {
        if self.last_section != Some(row.section) {
            if self.last_section.is_none() {
                println!("{HEADER}");
            }
            println!("[{}]", row.section);
            self.last_section = Some(row.section);
        }
        println!("{}", row.line());
        self.rows.push(row);
    }

    pub fn goal(&mut self, goal: Goal) {
        self.goals.push(goal);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        println!("note: {note}");
        self.notes.push(note);
    }

    pub fn table(&self) -> String {
        let mut out = vec![HEADER.to_string()];
        let mut section = None;
        for row in &self.rows {
            if section != Some(row.section) {
                out.push(format!("[{}]", row.section));
                section = Some(row.section);
            }
            out.push(row.line());
        }
        out.join("\n")
    }

    pub fn goals_text(&self) -> String {
        self.goals
            .iter()
            .map(Goal::line)
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn profiles_text(&self) -> String {
        self.profiles
            .iter()
            .map(|p| format!("{}\n{}", p.title, p.lines.join("\n")))
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    pub fn json(&self, machine: Value) -> Value {
        json!({
            "machine": machine,
            "rows": self.rows.iter().map(Row::json).collect::<Vec<_>>(),
            "goals": self.goals.iter().map(|g| json!({
                "goal": g.name,
                "measured": g.measured,
                "limit": g.limit,
                "pass": g.passed(),
                "detail": g.detail,
            })).collect::<Vec<_>>(),
            "profiles": self.profiles.iter().map(|p| json!({
                "title": p.title,
                "data": p.data,
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}

/// A number with precision that suits its size.
pub fn number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 10_000.0 {
        format!("{value:.0}")
    } else if magnitude >= 100.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}
