//! `fleetcheck export REPLAY --rust`: a counterexample as a standalone Rust `#[test]` that
//! replays exactly its minimal case through the libraries, for the user to commit as a
//! regression. The test fails while the bug is there and passes once it is fixed.

use std::fmt::Write as _;

use anyhow::{anyhow, Context};
use fleetcheck_engine::{Model, ReplayFile};

use crate::backends::BackendName;
use crate::cli::ExportArgs;
use crate::exit::{self, Fail};
use crate::run::{open_replay, OpenedReplay};
use crate::scenario::{ExportCode, Registered};

/// `fleetcheck export`.
pub fn export_command(args: &ExportArgs, registry: &[Box<dyn Registered>]) -> Result<u8, Fail> {
    if !args.rust {
        return Err(Fail::usage(anyhow!(
            "choose what to export: --rust (a Rust #[test])"
        )));
    }
    let (r, entry) = open_replay(&args.file, args.backend, registry)?;
    let source = entry.export(&r, args)?;
    match &args.output {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))
                    .map_err(Fail::usage)?;
            }
            std::fs::write(path, &source)
                .with_context(|| format!("cannot write {}", path.display()))
                .map_err(Fail::usage)?;
            eprintln!(
                "fleetcheck: wrote {} (a #[test]; dev-dependencies: fleetcheck-engine, \
                 fleetcheck-fabric, fleetcheck-scenarios, serde_json)",
                path.display()
            );
        }
        None => print!("{source}"),
    }
    Ok(exit::PASSED)
}

/// A name fit for a Rust function: lowercase letters, digits and underscores.
fn ident(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out.insert_str(0, "case_");
    }
    out
}

/// The smallest `#` count that makes `r#"..."#` hold `text`.
fn raw_string(text: &str) -> String {
    let mut hashes = 1;
    while text.contains(&format!("\"{}", "#".repeat(hashes))) {
        hashes += 1;
    }
    let h = "#".repeat(hashes);
    format!("r{h}\"{text}\"{h}")
}

pub(crate) fn rust_test<M: Model>(
    model: &M,
    file: &ReplayFile<M>,
    r: &OpenedReplay,
    args: &crate::cli::ExportArgs,
    code: &ExportCode,
    on_machines: bool,
) -> Result<String, Fail> {
    // The file with the backend the test will use, so that it replays exactly that.
    // The in-memory stores touch no machine: their test needs no root, whatever the file says.
    let backend_name = if !on_machines {
        BackendName::Fake
    } else {
        r.backend_name
    };
    let mut file_json: serde_json::Value =
        serde_json::from_str(&file.to_json()).expect("a replay file is JSON");
    if let Some(ctx) = file_json
        .get_mut("context")
        .and_then(serde_json::Value::as_object_mut)
    {
        ctx.insert("backend".into(), backend_name.as_str().into());
    }
    let case_json = serde_json::to_string_pretty(&file_json).expect("JSON serialises");
    let name = args.name.clone().map(|n| ident(&n)).unwrap_or_else(|| {
        ident(&format!(
            "{}{}_seed_{}_regression",
            file.scenario,
            r.system
                .as_deref()
                .map(|s| format!("_{s}"))
                .unwrap_or_default(),
            file.seed
        ))
    });
    let mut steps = String::new();
    let last = file.case.commands.len();
    for (i, c) in file.case.commands.iter().enumerate() {
        let _ = writeln!(
            steps,
            "//! {:>3}. {}{}",
            i + 1,
            model.describe_command(c),
            if i + 1 == last { "   <- fails" } else { "" }
        );
    }
    let reason: String = file
        .reason
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    let (imports, system) = (&code.imports, &code.build);
    let backend = export_backend(backend_name);
    Ok(format!(
        r#"//! Regression test exported by `fleetcheck export --rust` from {source}:
//! the minimal counterexample of the `{scenario}` scenario{system_name} (seed {seed}) on {backend_name}.
//! It replays exactly this case and fails while the bug is there:
//!
{steps}//!
//! It failed with: {reason}
//!
//! Dev-dependencies: fleetcheck-engine, fleetcheck-fabric, fleetcheck-scenarios, serde_json.

use std::sync::Arc;

use fleetcheck_engine::{{describe_trace, execute, ReplayFile, Verdict}};
use fleetcheck_fabric::Backend;
use fleetcheck_scenarios::config::ScenarioConfig;
{imports}

/// The case, exactly as fleetcheck found and shrank it (a replay file).
const CASE: &str = {case};

{backend}
#[test]
fn {name}() {{
    let context: serde_json::Value = serde_json::from_str(CASE).expect("the case is JSON");
    let config: ScenarioConfig = serde_json::from_value(context["context"]["config"].clone())
        .expect("its configuration parses");
{system}
    let trace = execute(&model, &system, &file.case);
    assert!(
        trace.verdict == Verdict::Passed,
        "the counterexample still fails:\n{{}}",
        describe_trace(&model, &file.case, &trace)
    );
}}
"#,
        source = args.file.display(),
        scenario = file.scenario,
        system_name = r
            .system
            .as_deref()
            .map(|s| format!(" with {s}"))
            .unwrap_or_default(),
        seed = file.seed,
        backend_name = backend_name,
        case = raw_string(&case_json),
    ))
}

/// The `backend()` function of an exported test: the backend the case was found on.
fn export_backend(name: BackendName) -> &'static str {
    match name {
        BackendName::Fake => {
            "/// The in-memory backend the case was found on.\n\
             fn backend() -> Arc<dyn Backend> {\n    \
             Arc::new(fleetcheck_fabric::fake::FakeBackend::new())\n}\n"
        }
        BackendName::Netns => {
            "/// Linux namespaces (needs root). The agent is `$FLEETCHECK_AGENT`, or a\n\
             /// `fleetcheck-agent` next to the test binary (`cargo build -p fleetcheck-fabric`).\n\
             fn backend() -> Arc<dyn Backend> {\n    \
             use fleetcheck_fabric::netns::{NetnsBackend, NetnsConfig};\n    \
             let config = NetnsConfig::located()\n        \
             .expect(\"set FLEETCHECK_AGENT to the fleetcheck-agent binary\");\n    \
             Arc::new(NetnsBackend::new(config).expect(\"the netns backend runs (as root)\"))\n}\n"
        }
        BackendName::Qemu => {
            "/// QEMU VMs, as the case was found on (needs root, qemu-system-x86 and the machines'\n\
             /// kernels). The agent is `$FLEETCHECK_AGENT`, or a `fleetcheck-agent` next to the\n\
             /// test binary (`cargo build -p fleetcheck-fabric`).\n\
             fn backend() -> Arc<dyn Backend> {\n    \
             use fleetcheck_fabric::qemu::{QemuBackend, QemuConfig};\n    \
             let config = QemuConfig::located()\n        \
             .expect(\"set FLEETCHECK_AGENT to the fleetcheck-agent binary\");\n    \
             Arc::new(QemuBackend::new(config).expect(\"the qemu backend runs (as root)\"))\n}\n"
        }
    }
}
