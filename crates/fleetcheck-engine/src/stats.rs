//! Statistics: labels attached to generated cases, counted and printed as a table
//! (QuickCheck's `collect`/`classify`, Hypothesis' `event`).

use std::collections::BTreeMap;
use std::fmt::{self, Display, Write as _};

use serde::Serialize;

/// The labels of one case: `(group, value)` pairs such as `("machines", "3")`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Labels {
    pairs: Vec<(String, String)>,
}

impl Labels {
    /// Adds one observation of `value` in `group`. A group may get several values per case
    /// (e.g. one per command).
    pub fn add(&mut self, group: impl Into<String>, value: impl Display) {
        self.pairs.push((group.into(), value.to_string()));
    }

    /// The pairs added so far.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

/// Counts of labels over all cases of a run, by group then value.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Stats {
    groups: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Stats {
    /// Adds the labels of one case.
    pub fn record(&mut self, labels: &Labels) {
        for (group, value) in &labels.pairs {
            *self
                .groups
                .entry(group.clone())
                .or_default()
                .entry(value.clone())
                .or_default() += 1;
        }
    }

    /// Adds all counts of `other`.
    pub fn merge(&mut self, other: &Stats) {
        for (group, values) in &other.groups {
            let mine = self.groups.entry(group.clone()).or_default();
            for (value, n) in values {
                *mine.entry(value.clone()).or_default() += n;
            }
        }
    }

    /// The counts of one group.
    pub fn group(&self, group: &str) -> Option<&BTreeMap<String, u64>> {
        self.groups.get(group)
    }

    /// All groups.
    pub fn groups(&self) -> &BTreeMap<String, BTreeMap<String, u64>> {
        &self.groups
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The table for people: one block per group, values by count (then by value), with shares.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for (group, values) in &self.groups {
            let total: u64 = values.values().sum();
            let mut rows: Vec<(&String, &u64)> = values.iter().collect();
            // Numeric values (sizes, counts, ranges like "96-127") read best in order;
            // names read best by frequency.
            if rows.iter().all(|(v, _)| leading_number(v).is_some()) {
                rows.sort_by(|a, b| natural_cmp(a.0, b.0));
            } else {
                rows.sort_by(|a, b| b.1.cmp(a.1).then_with(|| natural_cmp(a.0, b.0)));
            }
            let width = rows.iter().map(|(v, _)| v.len()).max().unwrap_or(0).max(5);
            let _ = writeln!(out, "{group} ({total}):");
            for (value, n) in rows {
                let share = 100.0 * *n as f64 / total as f64;
                let _ = writeln!(out, "  {value:<width$}  {n:>6}  {share:5.1}%");
            }
        }
        out
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.table())
    }
}

/// The number a value starts with ("96-127" gives 96).
fn leading_number(v: &str) -> Option<f64> {
    let end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    v[..end].parse().ok()
}

/// Orders "2" before "10" when both start with numbers.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    match (leading_number(a), leading_number(b)) {
        (Some(x), Some(y)) => x
            .partial_cmp(&y)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.cmp(b)),
        _ => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_table() {
        let mut stats = Stats::default();
        for n in [1, 2, 2, 3] {
            let mut l = Labels::default();
            l.add("machines", n);
            l.add("command", "Ping");
            l.add("command", "Boot");
            stats.record(&l);
        }
        assert_eq!(stats.group("machines").unwrap()["2"], 2);
        assert_eq!(stats.group("command").unwrap()["Ping"], 4);
        let table = stats.table();
        assert!(table.contains("machines (4):"), "{table}");
        assert!(table.contains("50.0%"), "{table}");
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["machines"]["1"], 1);
    }
}
