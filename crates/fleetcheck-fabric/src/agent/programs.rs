//! Programs an agent leaves running for the host ([`Request::Spawn`]): lines from the host to
//! their standard input, lines of their standard output to the host, their end.
//!
//! [`Request::Spawn`]: crate::protocol::Request::Spawn

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};

use super::reaper::Reaper;
use super::{log, send, Writer};
use crate::protocol::{AgentMsg, Response};

/// One running program.
struct Program {
    /// Its process group (its own pid).
    pgid: i32,
    /// Lines for its standard input; `None` once the host closed it.
    input: Option<Sender<String>>,
}

/// The programs running, by the id of the request that started them.
#[derive(Clone, Default)]
pub(super) struct Programs(Arc<Mutex<HashMap<u64, Program>>>);

impl Programs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Program>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `sh -c command` as program `id`: answered [`Response::Spawned`] once it runs,
    /// its output sent as [`AgentMsg::Output`] until [`AgentMsg::Ended`].
    pub(super) fn start(
        &self,
        reaper: &Reaper,
        writer: &Writer,
        id: u64,
        command: &str,
        stderr_log: &str,
    ) -> Response {
        let stderr = match OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr_log)
        {
            Ok(f) => f,
            Err(e) => {
                return Response::SpawnFailed {
                    message: format!("cannot open {stderr_log} for its errors: {e}"),
                }
            }
        };
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", command])
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0);
        let spawned = reaper.spawn(None, || {
            let child = cmd.spawn()?;
            Ok((child.id() as i32, child))
        });
        let (pid, mut child) = match spawned {
            Ok(started) => started,
            Err(e) => {
                return Response::SpawnFailed {
                    message: e.to_string(),
                }
            }
        };
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (input, lines) = mpsc::channel::<String>();
        // Its own writer: a program that does not read cannot stall the agent.
        std::thread::spawn(move || {
            for line in lines {
                if stdin
                    .write_all(line.as_bytes())
                    .and_then(|()| stdin.flush())
                    .is_err()
                {
                    break;
                }
            }
        });
        self.lock().insert(
            id,
            Program {
                pgid: pid,
                input: Some(input),
            },
        );
        let (programs, writer, reaper) = (self.clone(), writer.clone(), reaper.clone());
        std::thread::spawn(move || {
            let mut out = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match out.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).into_owned();
                        if send(&writer, &AgentMsg::Output { id, line }).is_err() {
                            break;
                        }
                    }
                }
            }
            programs.lock().remove(&id);
            // Its exit, once reaped, is nobody's business.
            let _ = reaper.try_take(pid);
            if let Err(e) = send(&writer, &AgentMsg::Ended { id }) {
                log(&format!("cannot report the end of program {id}: {e}"));
            }
        });
        Response::Spawned
    }

    /// A line for program `id`'s standard input (dropped if it is gone).
    pub(super) fn input(&self, id: u64, line: String) {
        if let Some(input) = self.lock().get(&id).and_then(|p| p.input.as_ref()) {
            let _ = input.send(line);
        }
    }

    /// Closes program `id`'s standard input once the lines sent before are written.
    pub(super) fn close_input(&self, id: u64) {
        if let Some(p) = self.lock().get_mut(&id) {
            p.input = None;
        }
    }

    /// Kills program `id`'s process group.
    pub(super) fn end(&self, id: u64) {
        if let Some(p) = self.lock().get(&id) {
            // SAFETY: kill(2) of a process group this agent created; it is listed while its
            // output is open, i.e. while some member of the group holds it.
            unsafe { libc::kill(-p.pgid, libc::SIGKILL) };
        }
    }
}
