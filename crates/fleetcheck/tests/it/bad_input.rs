//! Bad input, as a table: each input is refused up front with one sentence on stderr and its
//! documented exit code, never a panic, and leaves nothing behind (no run directory, so no
//! namespace or cgroup: nothing is built before the input is checked).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::netns::runs_of;
use crate::{require_root, temp_dir, write_config};

/// What one row of the table gives the binary besides its arguments.
enum Input {
    None,
    /// A configuration file, passed with `--config`.
    Config(String),
    /// A replay file: a valid ping case changed by the function, passed as the last argument.
    Replay(fn(&mut Value)),
    /// The same for a kv case.
    KvReplay(fn(&mut Value)),
}

struct Row {
    args: &'static [&'static str],
    input: Input,
    code: i32,
    message: &'static str,
}

fn row(args: &'static [&'static str], input: Input, code: i32, message: &'static str) -> Row {
    Row {
        args,
        input,
        code,
        message,
    }
}

fn config(text: &str) -> Input {
    Input::Config(text.to_string())
}

/// A ping case the fake backend would replay: one machine, boot, ping.
fn ping_case() -> Value {
    json!({
        "format": "fleetcheck-replay/1",
        "scenario": "ping",
        "seed": 1,
        "context": { "backend": "fake" },
        "reason": "planted",
        "case": {
            "seed": 1,
            "initial": {
                "subnet": { "addr": "172.16.2.0", "prefix": 24 },
                "machines": [machine("abcdefgh", "172.16.2.10")],
                "cuts": [],
            },
            "commands": [{ "name": "Boot", "args": { "machine": "abcdefgh" } }],
        },
    })
}

fn machine(id: &str, ip: &str) -> Value {
    json!({
        "id": id, "uuid": "7d12ae6b-4355-4d6d-ab54-4ee0028210b4", "ip": ip,
        "memory_mb": 96, "kernel": "3.14", "running": false, "paused": false,
    })
}

/// A kv case on the in-memory store: three nodes, no commands.
fn kv_case() -> Value {
    let node = |id: &str, ip: &str| json!({ "id": id, "ip": ip, "running": true, "paused": false });
    json!({
        "format": "fleetcheck-replay/1",
        "scenario": "kv",
        "seed": 1,
        "context": { "backend": "fake", "system": "memory" },
        "reason": "planted",
        "case": {
            "seed": 1,
            "initial": {
                "subnet": { "addr": "172.16.3.0", "prefix": 24 },
                "nodes": [
                    node("aaaaaaaa", "172.16.3.2"),
                    node("bbbbbbbb", "172.16.3.3"),
                    node("cccccccc", "172.16.3.4"),
                ],
                "partitioned": false,
                "links_faulty": false,
            },
            "commands": [],
        },
    })
}

fn machines(v: &mut Value) -> &mut Vec<Value> {
    v["case"]["initial"]["machines"]
        .as_array_mut()
        .expect("machines")
}

fn table() -> Vec<Row> {
    use Input::{KvReplay, None, Replay};
    let long_setup = format!("[machine]\nsetup = [\"{}\"]\n", "x".repeat(1 << 20));
    vec![
        // Options.
        row(&["run", "pong"], None, 2, "unknown scenario `pong`"),
        row(
            &["run", "ping", "--backend", "vm"],
            None,
            2,
            "invalid value 'vm' for '--backend <NAME>'",
        ),
        row(
            &["run", "kv", "--system", "zk"],
            None,
            2,
            "unknown system `zk`",
        ),
        row(
            &["run", "ping", "--system", "etcd"],
            None,
            2,
            "no --system choice",
        ),
        row(
            &["run", "ping", "--tests", "0"],
            None,
            2,
            "--tests must be at least 1",
        ),
        row(
            &["run", "ping", "--tests", "1e8"],
            None,
            2,
            "invalid value '1e8'",
        ),
        row(
            &["run", "ping", "--tests", "5000000000"],
            None,
            2,
            "invalid value",
        ),
        row(
            &["run", "ping", "--min-size", "5", "--max-size", "2"],
            None,
            2,
            "is greater than --max-size",
        ),
        row(
            &["run", "ping", "--max-size", "10001"],
            None,
            2,
            "more than 10000",
        ),
        row(
            &["run", "ping", "--workers", "0"],
            None,
            2,
            "--workers must be at least 1",
        ),
        row(
            &["run", "ping", "--shrink-require", "0"],
            None,
            2,
            "--shrink-require (0)",
        ),
        row(
            &["run", "ping", "--max-discard-ratio", "NaN"],
            None,
            2,
            "--max-discard-ratio",
        ),
        // Outputs that cannot be written, found before the run.
        row(
            &["run", "ping", "--junit", "."],
            None,
            2,
            ". is a directory, not a place for the JUnit file",
        ),
        row(
            &["run", "ping", "--replay-file", "."],
            None,
            2,
            "not a place for the replay file",
        ),
        // Configuration files.
        row(&["run", "ping"], config("not toml"), 2, "line 1"),
        row(
            &["run", "ping"],
            config("[network]\nmachine = 3"),
            2,
            "unknown field",
        ),
        row(
            &["run", "ping"],
            config("[network]\nmachines = 300"),
            2,
            "only 253 usable addresses",
        ),
        row(
            &["run", "ping"],
            config("[network]\nmachines = { min = 3, max = 2 }"),
            2,
            "greater than",
        ),
        row(
            &["run", "ping"],
            config("[network]\nmachines = 1024\nsubnet = \"10.0.0.0/16\""),
            2,
            "at most 1023 machines",
        ),
        row(
            &["run", "ping"],
            config("[network]\nmachines = 1000000000\nsubnet = \"0.0.0.0/2\""),
            2,
            "at most 1023 machines",
        ),
        row(
            &["run", "ping"],
            config("[network]\nsubnet = \"10.0.0.0/33\""),
            2,
            "is not a subnet",
        ),
        row(
            &["run", "ping"],
            config("[machine]\nmemory_mb = 4"),
            2,
            "at least 32 MiB",
        ),
        row(
            &["run", "ping"],
            config("[machine]\nkernels = []"),
            2,
            "at least one kernel",
        ),
        row(
            &["run", "ping"],
            config("[machine]\nfilesystem = \"zfs\""),
            2,
            "unknown variant `zfs`",
        ),
        row(
            &["run", "ping"],
            config("[machine]\nsetup = [\"true\\u0000\"]"),
            2,
            "machine.setup[0] contains a NUL byte",
        ),
        row(
            &["run", "ping"],
            Input::Config(long_setup),
            2,
            "machine.setup[0] is 1048576 bytes long",
        ),
        row(
            &["run", "ping"],
            config("[roles.a]\ncount = { min = 3, max = 1 }"),
            2,
            "roles.a.count.min (3)",
        ),
        row(
            &["run", "ping"],
            config("[ping]\ntimeout_ms = 0"),
            2,
            "between 1 and",
        ),
        row(
            &["run", "ping"],
            config("[services.fw]\nversions = [{ version = \"1\", path = \"/no/fw\" }]"),
            2,
            "which is not a file",
        ),
        row(
            &["run", "kv"],
            config("[kv]\nnodes = [3, 1]"),
            2,
            "kv.nodes = [3, 1] is an empty range",
        ),
        row(
            &["run", "kv"],
            config("[kv]\nnodes = [0, 0]"),
            2,
            "kv.nodes = [0, 0] must start at 1",
        ),
        row(
            &["run", "kv"],
            config("[kv]\nnodes = [3, 300]"),
            2,
            "only 253 usable addresses",
        ),
        row(
            &["run", "kv"],
            config("[kv]\nkeys = 0"),
            2,
            "kv.keys must be at least 1",
        ),
        row(
            &["run", "kv"],
            config("[kv]\nworkers = 0"),
            2,
            "kv.workers is 0",
        ),
        row(
            &["run", "kv"],
            config("[kv]\nops_per_worker = 0"),
            2,
            "kv.ops_per_worker is 0",
        ),
        row(
            &["run", "kv"],
            config("[kv]\nop_timeout_ms = 0"),
            2,
            "kv.op_timeout_ms is 0",
        ),
        row(
            &["run", "kv"],
            config("[kv]\nmemory_mb = 1"),
            2,
            "kv.memory_mb is 1 MiB",
        ),
        row(
            &["run", "kv"],
            config("[kv]\nfaults = [\"upgrades\"]"),
            2,
            "kv.faults names `upgrades`",
        ),
        row(
            &["run", "kv", "--system", "etcd"],
            config("[kv]\nfaults = [\"netem\"]"),
            2,
            "kv.faults names `netem`, which the netns backend cannot do",
        ),
        row(
            &["run", "ping"],
            config("[ping]\nfaults = [\"loss\"]"),
            2,
            "ping.faults names `loss`, which is not one of pause, partition, block",
        ),
        // Replay files that break the model's own rules.
        row(
            &["replay"],
            Replay(|v| machines(v)[0]["ip"] = json!("10.0.0.5")),
            2,
            "address 10.0.0.5, which is not a host address of 172.16.2.0/24",
        ),
        row(
            &["replay"],
            Replay(|v| machines(v)[0]["ip"] = json!("172.16.2.255")),
            2,
            "not a host address",
        ),
        row(
            &["replay"],
            Replay(|v| machines(v).push(machine("abcdefgh", "172.16.2.11"))),
            2,
            "machine id `abcdefgh` twice",
        ),
        row(
            &["replay"],
            Replay(|v| machines(v).push(machine("other", "172.16.2.10"))),
            2,
            "gives address 172.16.2.10 to two machines",
        ),
        row(
            &["replay"],
            Replay(|v| machines(v)[0]["id"] = json!("a/b")),
            2,
            "machine id \"a/b\", which is not",
        ),
        row(
            &["replay"],
            Replay(|v| machines(v)[0]["memory_mb"] = json!(1)),
            2,
            "1 MiB of memory",
        ),
        row(
            &["replay"],
            Replay(|v| machines(v)[0]["running"] = json!(true)),
            2,
            "starts with its machines off",
        ),
        row(
            &["replay"],
            Replay(|v| machines(v).clear()),
            2,
            "has no machine",
        ),
        row(
            &["replay"],
            Replay(|v| v["case"]["commands"][0]["args"]["machine"] = json!("nobody")),
            2,
            "precondition does not hold",
        ),
        row(
            &["replay"],
            Replay(|v| v["context"]["config"] = json!({ "kv": { "nodes": [3, 1] } })),
            2,
            ".json: kv.nodes = [3, 1] is an empty range",
        ),
        row(
            &["replay"],
            Replay(|v| v["scenario"] = json!("pong")),
            2,
            "unknown scenario `pong`",
        ),
        row(
            &["replay"],
            Replay(|v| v["format"] = json!("other")),
            2,
            "other",
        ),
        row(
            &["replay"],
            KvReplay(|v| v["case"]["initial"]["nodes"][1]["id"] = json!("aaaaaaaa")),
            2,
            "node id `aaaaaaaa` twice",
        ),
        row(
            &["replay"],
            KvReplay(|v| v["case"]["initial"]["nodes"][0]["running"] = json!(false)),
            2,
            "starts with its cluster up",
        ),
        row(
            &["replay"],
            KvReplay(|v| v["case"]["initial"]["partitioned"] = json!(true)),
            2,
            "faults in force",
        ),
        row(
            &["replay"],
            KvReplay(|v| v["context"]["system"] = json!("zk")),
            2,
            "unknown system `zk`",
        ),
        row(
            &["replay", "/no/such/replay.json"],
            None,
            2,
            "cannot read /no/such/replay.json",
        ),
        row(
            &["replay", "--junit", "."],
            Replay(|_| ()),
            2,
            "is a directory",
        ),
    ]
}

/// Runs `cmd` and returns its pid, exit code, stdout and stderr.
fn write_replay(dir: &Path, n: usize, mut case: Value, change: fn(&mut Value)) -> PathBuf {
    change(&mut case);
    let path = dir.join(format!("replay-{n}.json"));
    std::fs::write(&path, case.to_string()).expect("replay file written");
    path
}

#[test]
fn bad_input_is_one_sentence_with_its_exit_code_and_builds_nothing() {
    let dir = temp_dir("bad-input-table");
    let mut failures = Vec::new();
    for (n, r) in table().into_iter().enumerate() {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleetcheck"));
        cmd.current_dir(&dir).args(r.args);
        match r.input {
            Input::None => {}
            Input::Config(text) => {
                cmd.arg("--config").arg(write_config(&dir, &text));
            }
            Input::Replay(change) => {
                cmd.arg(write_replay(&dir, n, ping_case(), change));
            }
            Input::KvReplay(change) => {
                cmd.arg(write_replay(&dir, n, kv_case(), change));
            }
        }
        let (pid, code, stdout, stderr) = crate::run_with_pid(cmd);
        let lines = stderr.trim_end().lines().count();
        let ok = code == r.code
            && code != 101
            && lines == 1
            && stderr.starts_with("fleetcheck: ")
            && stderr.contains(r.message)
            && !stderr.contains("panicked")
            && stdout.is_empty()
            && runs_of(pid).is_empty();
        if !ok {
            failures.push(format!(
                "{:?}: want exit {} and {:?}, got exit {code}, stderr {stderr:?}, stdout {stdout:?}, runs left {:?}",
                r.args,
                r.code,
                r.message,
                runs_of(pid)
            ));
        }
    }
    assert!(!dir.join("fleetcheck-reports").exists());
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Hides one program in a mount namespace of its own (`/dev/null` bound over it, which is not
/// an executable file), with the same tripwire as the missing-mkfs test: an empty tmpfs over
/// /sys/fs/cgroup, so a backend built by mistake fails with another message.
const WITHOUT_PROGRAM: &str = "\
set -eu
mount --bind /dev/null \"$1\"
mount -t tmpfs -o ro,mode=0755 fleetcheck-no-cgroups /sys/fs/cgroup
shift
exec \"$@\"
";

#[test]
fn a_missing_service_program_exits_3_naming_its_package_before_anything_is_built() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("missing-program");
    let cases = [
        ("etcd", "etcd", "etcd-server"),
        ("etcd", "etcdctl", "etcd-client"),
        ("redis", "redis-server", "redis-server"),
        ("redis", "redis-cli", "redis-tools"),
    ];
    for (system, program, package) in cases {
        let Some(path) = find_on_path(program) else {
            panic!("{program} is not installed (scripts/install-deps installs {package})");
        };
        for args in [
            &["run", "kv", "--system", system][..],
            &["doctor", "--backend", "fake"][..],
        ] {
            let mut cmd = Command::new("unshare");
            cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(WITHOUT_PROGRAM)
                .arg("sh")
                .arg(&path)
                .arg(env!("CARGO_BIN_EXE_fleetcheck"))
                .args(args)
                .current_dir(&dir);
            let (pid, code, stdout, stderr) = crate::run_with_pid(cmd);
            if args[0] == "doctor" {
                // A note, not a failure: only runs of that system need it.
                let want = format!("note    program of kv --system {system}: {program} ");
                assert_eq!(code, 0, "{stdout}{stderr}");
                assert!(
                    stdout.lines().any(|l| l.starts_with(&want)
                        && l.ends_with(&format!("missing: apt-get install {package}"))),
                    "{stdout}"
                );
                continue;
            }
            assert_eq!(code, 3, "{args:?} without {program}: {stdout}{stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
            assert!(
                stderr.contains(&format!("needs {program} "))
                    && stderr.contains(&format!("apt-get install {package}")),
                "{stderr}"
            );
            assert!(stdout.is_empty(), "{stdout}");
            assert_eq!(runs_of(pid), Vec::<String>::new());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
