//! `fleetcheck new NAME [--workload W]`: a scenario file that runs as it is, for a user to
//! edit: the skeleton (`skeleton.toml`) with the workload's operations and a stand-in store
//! for them, in files of the node's data directory.

use anyhow::anyhow;
use fleetcheck_scenarios::kv::Workload;

use crate::exit::Fail;

/// The skeleton: `NAME`, `WORKLOAD`, `WORKLOAD_ABOUT`, `WORKLOAD_KV` and `WORKLOAD_CLIENT`
/// are filled in.
const SKELETON: &str = include_str!("skeleton.toml");

/// What the skeleton says of `workload`: the comment beside its name, its `[kv]` keys, its
/// `[client]` section with the stand-in store's commands.
fn parts(workload: Workload) -> (&'static str, &'static str, &'static str) {
    match workload {
        Workload::Kv => (
            "put / get / delete / cas, checked for linearizability",
            "ops = [\"put\", \"get\"]            # the operations your client gives below\n",
            r#"# Each operation is a command run in the node it goes to. Exit status 0 answers; a get prints
# the value (nothing: absent). Variables: {key} {value} {expected} {new} {node} {node_ip}
# {timeout_ms} {token} {peers|…}
[client]
# Written to a file of its own, then renamed over the key's: a read never sees half a write.
put = 'echo {value} > "$FLEETCHECK_DATA/k{key}.$$" && mv "$FLEETCHECK_DATA/k{key}.$$" "$FLEETCHECK_DATA/k{key}"'
get = 'cat "$FLEETCHECK_DATA/k{key}" 2>/dev/null || true'
# delete = "…"
# cas = "…"                     # with swapped = "…" and not_swapped = "…"
# refused = ["connection refused"]
"#,
        ),
        Workload::Set => (
            "add / read of a set per key: no acknowledged add lost, nothing invented",
            "",
            r#"# Each operation is a command run in the node it goes to. Exit status 0 answers; a read
# prints the set's values, one a line. After the faults are healed, a final read of every key
# judges what was lost. Variables: {key} {value} {node} {node_ip} {timeout_ms} {token}
# {peers|…}
[client]
add = 'echo {value} >> "$FLEETCHECK_DATA/k{key}"'
read = 'cat "$FLEETCHECK_DATA/k{key}" 2>/dev/null || true'
# refused = ["connection refused"]
"#,
        ),
        Workload::Queue => (
            "enqueue / dequeue / drain of one queue: nothing acknowledged lost or delivered twice",
            "workers = 2\n",
            r#"# Each operation is a command run in the node it goes to. Exit status 0 answers; a dequeue
# prints the value taken (nothing: the queue was empty), a drain every value left, one a line
# (the final read, after the faults are healed). Each takes the queue's lock: two workers
# run at once. Variables: {value} {node} {node_ip} {timeout_ms} {token} {peers|…}
[client]
enqueue = '''flock "$FLEETCHECK_DATA/lock" sh -c 'echo {value} >> "$FLEETCHECK_DATA/q"' '''
dequeue = '''flock "$FLEETCHECK_DATA/lock" sh -c 'q="$FLEETCHECK_DATA/q"; [ -s "$q" ] || exit 0; head -n 1 "$q"; sed -i 1d "$q"' '''
drain = '''flock "$FLEETCHECK_DATA/lock" sh -c 'q="$FLEETCHECK_DATA/q"; [ ! -e "$q" ] || cat "$q"; : > "$q"' '''
absent = ""                     # what a dequeue of an empty queue prints
# Under [kv]: ordered = true if your queue promises first in, first out, "per-producer" if
# it keeps each client's order only
"#,
        ),
        Workload::Counter => (
            "incr / read of a counter per key: every read within what the increments allow",
            "workers = 2\n",
            r#"# Each operation is a command run in the node it goes to. Exit status 0 answers; a read
# prints the count (after the faults are healed, a final read of every key judges what was
# lost). An increment takes the key's lock: two workers run at once. Variables: {key}
# {value} (the amount) {node} {node_ip} {timeout_ms} {token} {peers|…}
[client]
incr = '''flock "$FLEETCHECK_DATA/lock.{key}" sh -c 'f="$FLEETCHECK_DATA/k{key}"; n=$(cat "$f" 2>/dev/null || echo 0); echo $((n + {value})) > "$f.$$" && mv "$f.$$" "$f"' '''
read = 'cat "$FLEETCHECK_DATA/k{key}" 2>/dev/null || echo 0'
"#,
        ),
    }
}

/// The scenario file `fleetcheck new NAME --workload W` writes.
pub fn skeleton(name: &str, workload: Workload) -> String {
    let (about, kv, client) = parts(workload);
    SKELETON
        .replace("WORKLOAD_ABOUT", about)
        .replace("WORKLOAD_KV", kv)
        .replace("WORKLOAD_CLIENT", client)
        .replace("WORKLOAD", workload.name())
        .replace("NAME", name)
}

/// `fleetcheck new NAME --workload W`: writes `NAME.toml`, a scenario file to edit, refusing
/// to overwrite one; returns its path.
pub fn write_skeleton(name: &str, workload: &str) -> Result<std::path::PathBuf, Fail> {
    let plain = !name.is_empty()
        && name.len() <= 40
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !plain {
        return Err(Fail::usage(anyhow!(
            "the scenario's name `{name}` must be 1 to 40 letters, digits and `-`"
        )));
    }
    let Some(workload) = Workload::from_name(workload) else {
        let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
        return Err(Fail::usage(anyhow!(
            "there is no workload `{workload}`: the workloads are {}",
            names.join(", ")
        )));
    };
    let path = std::path::PathBuf::from(format!("{name}.toml"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Fail::usage(anyhow!("cannot write {}: {e}", path.display())))?;
    std::io::Write::write_all(&mut file, skeleton(name, workload).as_bytes())
        .map_err(|e| Fail::host(anyhow!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_s_skeleton_is_filled_in_and_reads_as_a_scenario_file() {
        for workload in Workload::ALL {
            let text = skeleton("mine", workload);
            assert!(!text.contains("WORKLOAD"), "{text}");
            assert!(!text.contains("NAME"), "{text}");
            let config = fleetcheck_scenarios::config::ScenarioConfig::from_toml(&text)
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", workload.name()));
            assert_eq!(config.scenario.unwrap().workload, workload);
        }
    }
}
