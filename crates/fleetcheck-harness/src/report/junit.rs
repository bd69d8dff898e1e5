//! JUnit XML, so CI systems show a fleetcheck run as tests: one test case per property (the
//! scenario, with its system), the counterexample in the failure message.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::exit::Fail;

/// How a property ended.
#[derive(Debug, Clone)]
pub enum Result {
    Passed,
    /// A counterexample: `message` is the reason, `text` the whole counterexample.
    Failed {
        message: String,
        text: String,
    },
    /// Not a verdict on the property: the infrastructure broke (`kind` `aborted`), the
    /// host was too loaded to judge (`too_loaded`), the run gave up (`gave_up`), or a failure
    /// did not reproduce (`flaky`).
    Error {
        kind: &'static str,
        message: String,
        text: String,
    },
}

/// One test case.
#[derive(Debug, Clone)]
pub struct TestCase {
    /// The property, e.g. `ping` or `kv/etcd`.
    pub name: String,
    /// Where it ran, e.g. `fleetcheck.netns`.
    pub classname: String,
    pub time: Duration,
    pub result: Result,
    /// Extra output (seed, replay command).
    pub stdout: String,
}

/// Escapes text for XML content; drops characters XML 1.0 cannot hold.
fn escape(text: &str) -> String {
    escape_as(text, false)
}

/// Escapes text for an attribute value, whose tabs and line breaks a parser would otherwise
/// turn into spaces.
fn attr(text: &str) -> String {
    escape_as(text, true)
}

fn escape_as(text: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\t' if attribute => out.push_str("&#9;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\r' if attribute => out.push_str("&#13;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// The XML document of one suite.
pub fn render(suite: &str, cases: &[TestCase]) -> String {
    let failures = cases
        .iter()
        .filter(|c| matches!(c.result, Result::Failed { .. }))
        .count();
    let errors = cases
        .iter()
        .filter(|c| matches!(c.result, Result::Error { .. }))
        .count();
    let time: f64 = cases.iter().map(|c| c.time.as_secs_f64()).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"fleetcheck\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\">",
        cases.len()
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\" time=\"{time:.3}\">",
        attr(suite),
        cases.len()
    );
    for c in cases {
        let _ = write!(
            x,
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
            attr(&c.name),
            attr(&c.classname),
            c.time.as_secs_f64()
        );
        let body = match &c.result {
            Result::Passed => String::new(),
            Result::Failed { message, text } => format!(
                "      <failure message=\"{}\" type=\"counterexample\">{}</failure>\n",
                attr(message),
                escape(text)
            ),
            Result::Error {
                kind,
                message,
                text,
            } => format!(
                "      <error message=\"{}\" type=\"{kind}\">{}</error>\n",
                attr(message),
                escape(text)
            ),
        };
        if body.is_empty() && c.stdout.is_empty() {
            x.push_str("/>\n");
            continue;
        }
        x.push_str(">\n");
        x.push_str(&body);
        if !c.stdout.is_empty() {
            let _ = writeln!(x, "      <system-out>{}</system-out>", escape(&c.stdout));
        }
        x.push_str("    </testcase>\n");
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// Writes the document to `path`.
pub fn write(path: &Path, suite: &str, cases: &[TestCase]) -> std::result::Result<(), Fail> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {}", dir.display()))
            .map_err(Fail::usage)?;
    }
    std::fs::write(path, render(suite, cases))
        .with_context(|| format!("cannot write the JUnit file {}", path.display()))
        .map_err(Fail::usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counterexample_text_survives_xml() {
        let text = "Ping(a -> b) -> no reply <\"&'>\u{1b}[0m\tend\nnext line";
        let xml = render(
            "s",
            &[TestCase {
                name: "kv/etcd".into(),
                classname: "fleetcheck.netns".into(),
                time: Duration::from_millis(1500),
                result: Result::Failed {
                    message: text.into(),
                    text: text.into(),
                },
                stdout: String::new(),
            }],
        );
        let doc = roxmltree::Document::parse(&xml).expect("well-formed");
        let failure = doc
            .descendants()
            .find(|n| n.has_tag_name("failure"))
            .expect("a failure");
        let kept = "Ping(a -> b) -> no reply <\"&'>[0m\tend\nnext line";
        assert_eq!(failure.attribute("message"), Some(kept));
        assert_eq!(failure.text(), Some(kept));
        let case = doc
            .descendants()
            .find(|n| n.has_tag_name("testcase"))
            .unwrap();
        assert_eq!(case.attribute("time"), Some("1.500"));
    }

    #[test]
    fn a_flaky_failure_is_an_error_not_a_failure() {
        let xml = render(
            "s",
            &[TestCase {
                name: "ping".into(),
                classname: "fleetcheck.netns".into(),
                time: Duration::from_millis(10),
                result: Result::Error {
                    kind: "flaky",
                    message: "flaky: reproduced 0/3, not a counterexample: b did not answer".into(),
                    text: "Failure that did not reproduce".into(),
                },
                stdout: String::new(),
            }],
        );
        let doc = roxmltree::Document::parse(&xml).expect("well-formed");
        let suite = doc
            .descendants()
            .find(|n| n.has_tag_name("testsuite"))
            .unwrap();
        assert_eq!(suite.attribute("failures"), Some("0"));
        assert_eq!(suite.attribute("errors"), Some("1"));
        let error = doc
            .descendants()
            .find(|n| n.has_tag_name("error"))
            .expect("an error");
        assert_eq!(error.attribute("type"), Some("flaky"));
        assert!(!doc.descendants().any(|n| n.has_tag_name("failure")));
    }
}
