//! A program inside a machine spoken to in lines ([`Network::spawn`]'s [`Spawned`]): what the
//! client programs of scenario files ([`crate::file::client`]) and the sql scenario's psql
//! sessions ([`crate::sql`]) share. Its output lines arrive on a channel filled by a thread,
//! so a read can wait with a deadline; dropping it ends the program at once.
//!
//! [`Network::spawn`]: fleetcheck_fabric::Network::spawn

use std::io::{self, BufRead, BufReader, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use fleetcheck_fabric::Spawned;

/// A running program, its input and its output lines.
pub struct Lines {
    program: Spawned,
    stdin: Box<dyn Write + Send>,
    lines: Receiver<String>,
}

impl std::fmt::Debug for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines")
            .field("program", &self.program)
            .finish_non_exhaustive()
    }
}

impl Lines {
    /// Speaks to `program`, just spawned.
    pub fn new(mut program: Spawned) -> Self {
        let stdin = program.take_stdin().expect("a program just spawned");
        let stdout = program.take_stdout().expect("a program just spawned");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            program,
            stdin,
            lines,
        }
    }

    /// Writes `text` to the program's input at once; `Err`: its input is closed (it ended).
    pub fn send(&mut self, text: &str) -> io::Result<()> {
        self.stdin
            .write_all(text.as_bytes())
            .and_then(|()| self.stdin.flush())
    }

    /// The program's next output line, waiting up to `within`; `Disconnected`: it ended.
    pub fn next(&self, within: Duration) -> Result<String, RecvTimeoutError> {
        self.lines.recv_timeout(within)
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        // Ended at once, not left to the machine's teardown.
        self.program.end();
    }
}
