//! Host side of one agent's channel: a reader thread demultiplexes answers to waiters by id,
//! and the output of spawned programs to their readers.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::protocol::{encode, AgentMsg, HostMsg, Request, Response};

/// Why a request got no answer.
#[derive(Debug)]
pub enum CallError {
    /// The channel closed (the agent died or was killed).
    Lost,
    /// No answer in time.
    Timeout,
    /// Writing the request failed.
    Send(io::Error),
}

#[derive(Default)]
struct Pending {
    waiters: HashMap<u64, Sender<Response>>,
    /// The output of the programs spawned, by the id of their spawn request.
    streams: HashMap<u64, Sender<Vec<u8>>>,
    closed: bool,
}

/// A live agent channel.
pub struct AgentConn {
    writer: Mutex<UnixStream>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicU64,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl AgentConn {
    /// Starts the reader thread; boot messages (`Ready`, `SetupFailed`) go to the returned
    /// receiver, which disconnects when the channel closes.
    pub fn start(stream: UnixStream, machine: &str) -> io::Result<(Arc<Self>, Receiver<AgentMsg>)> {
        let read_half = stream.try_clone()?;
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let (boot_tx, boot_rx) = mpsc::channel();
        let p = pending.clone();
        let reader = std::thread::Builder::new()
            .name(format!("agent-{machine}"))
            .spawn(move || read_loop(read_half, p, boot_tx))?;
        Ok((
            Arc::new(AgentConn {
                writer: Mutex::new(stream),
                pending,
                next_id: AtomicU64::new(1),
                reader: Mutex::new(Some(reader)),
            }),
            boot_rx,
        ))
    }

    /// Sends a message without waiting for anything.
    pub fn send(&self, msg: &HostMsg) -> io::Result<()> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.write_all(&encode(msg))
    }

    /// Sends a request and waits for its answer for at most `wait`.
    pub fn call(&self, request: Request, wait: Duration) -> Result<Response, CallError> {
        self.call_with(request, wait, None).map(|(_, r)| r)
    }

    /// [`AgentConn::call`], with the request's id; what the agent sends as `Output` under
    /// that id goes to `stream` until `Ended`.
    fn call_with(
        &self,
        request: Request,
        wait: Duration,
        stream: Option<Sender<Vec<u8>>>,
    ) -> Result<(u64, Response), CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.closed {
                return Err(CallError::Lost);
            }
            p.waiters.insert(id, tx);
            if let Some(stream) = stream {
                p.streams.insert(id, stream);
            }
        }
        let forget = || {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.waiters.remove(&id);
            p.streams.remove(&id);
        };
        if let Err(e) = self.send(&HostMsg::Request { id, request }) {
            forget();
            return Err(if e.kind() == io::ErrorKind::BrokenPipe {
                CallError::Lost
            } else {
                CallError::Send(e)
            });
        }
        match rx.recv_timeout(wait) {
            Ok(r) => Ok((id, r)),
            Err(RecvTimeoutError::Disconnected) => Err(CallError::Lost),
            Err(RecvTimeoutError::Timeout) => {
                forget();
                Err(CallError::Timeout)
            }
        }
    }

    /// Joins the reader thread; call after the agent died.
    pub fn join(&self) {
        let _ = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .shutdown(std::net::Shutdown::Both);
        if let Some(h) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
    }
}

fn read_loop(stream: UnixStream, pending: Arc<Mutex<Pending>>, boot_tx: Sender<AgentMsg>) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let Ok(msg) = serde_json::from_str::<AgentMsg>(&line) else {
            continue;
        };
        match msg {
            AgentMsg::Response { id, response } => {
                let waiter = pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .waiters
                    .remove(&id);
                if let Some(w) = waiter {
                    let _ = w.send(response);
                }
            }
            AgentMsg::Output { id, line } => {
                let p = pending.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(stream) = p.streams.get(&id) {
                    let _ = stream.send(line.into_bytes());
                }
            }
            AgentMsg::Ended { id } => {
                pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .streams
                    .remove(&id);
            }
            other => {
                let _ = boot_tx.send(other);
            }
        }
    }
    let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
    p.closed = true;
    p.waiters.clear();
    p.streams.clear();
}

/// Runs `req` through the agent of machine `id` (shared by the netns and qemu backends).
pub fn exec(
    conn: &AgentConn,
    id: &str,
    req: &crate::spec::ExecRequest,
) -> Result<crate::spec::ExecOutput, crate::error::ExecError> {
    use crate::error::ExecError;
    let machine = || id.to_string();
    let wait = req.timeout + crate::backend::ANSWER_MARGIN;
    let request = Request::Exec {
        argv: req.argv.clone(),
        timeout_ms: req.timeout.as_millis() as u64,
    };
    match conn.call(request, wait) {
        Ok(Response::Exec(out)) => Ok(out),
        Ok(Response::SpawnFailed { message }) => Err(ExecError::Spawn {
            machine: machine(),
            program: req.argv[0].clone(),
            message,
        }),
        Ok(other) => Err(ExecError::Spawn {
            machine: machine(),
            program: req.argv[0].clone(),
            message: format!("{other:?}"),
        }),
        Err(CallError::Lost) => Err(ExecError::AgentLost { machine: machine() }),
        Err(CallError::Timeout) => Err(ExecError::NoAnswer {
            machine: machine(),
            after: wait,
        }),
        Err(CallError::Send(source)) => Err(ExecError::Channel {
            machine: machine(),
            source,
        }),
    }
}

/// Starts `sh -c command` inside machine `id` through its agent (see [`Request::Spawn`]):
/// its standard input and output as lines over the channel, its errors appended to
/// `stderr_log` (a path inside the machine).
pub fn spawn(
    conn: &Arc<AgentConn>,
    id: &str,
    command: &str,
    stderr_log: &str,
) -> Result<crate::Spawned, crate::error::ExecError> {
    use crate::error::ExecError;
    let machine = || id.to_string();
    let failed = |message: String| ExecError::Spawn {
        machine: machine(),
        program: command.to_string(),
        message,
    };
    let (tx, rx) = mpsc::channel();
    let request = Request::Spawn {
        command: command.to_string(),
        stderr_log: stderr_log.to_string(),
    };
    let wait = crate::backend::ANSWER_MARGIN;
    let program = match conn.call_with(request, wait, Some(tx)) {
        Ok((program, Response::Spawned)) => program,
        Ok((program, not_spawned)) => {
            conn.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .streams
                .remove(&program);
            return Err(match not_spawned {
                Response::SpawnFailed { message } => failed(message),
                other => failed(format!("{other:?}")),
            });
        }
        Err(CallError::Lost) => return Err(ExecError::AgentLost { machine: machine() }),
        Err(CallError::Timeout) => {
            return Err(ExecError::NoAnswer {
                machine: machine(),
                after: wait,
            })
        }
        Err(CallError::Send(source)) => {
            return Err(ExecError::Channel {
                machine: machine(),
                source,
            })
        }
    };
    let stdin = ProgramInput {
        conn: Arc::downgrade(conn),
        program,
        partial: Vec::new(),
    };
    let ender = Arc::downgrade(conn);
    Ok(crate::Spawned::new(
        Box::new(stdin),
        Box::new(crate::spawned::ChannelReader::new(rx)),
        Box::new(move || {
            if let Some(conn) = ender.upgrade() {
                let _ = conn.send(&HostMsg::End { id: program });
            }
        }),
        format!("program {program} of {id}'s agent"),
    ))
}

/// The standard input of a program an agent spawned: whole lines go as [`HostMsg::Input`].
struct ProgramInput {
    conn: Weak<AgentConn>,
    program: u64,
    /// Bytes after the last newline, sent with the next one (or a flush).
    partial: Vec<u8>,
}

impl ProgramInput {
    fn send(&self, msg: &HostMsg) -> io::Result<()> {
        match self.conn.upgrade() {
            Some(conn) => conn.send(msg),
            None => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn send_line(&self, bytes: &[u8]) -> io::Result<()> {
        self.send(&HostMsg::Input {
            id: self.program,
            line: String::from_utf8_lossy(bytes).into_owned(),
        })
    }
}

impl Write for ProgramInput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.partial.extend_from_slice(buf);
        if let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') {
            let rest = self.partial.split_off(end + 1);
            let lines = std::mem::replace(&mut self.partial, rest);
            self.send_line(&lines)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.partial.is_empty() {
            let bytes = std::mem::take(&mut self.partial);
            self.send_line(&bytes)?;
        }
        Ok(())
    }
}

impl Drop for ProgramInput {
    fn drop(&mut self) {
        let _ = self.flush();
        let _ = self.send(&HostMsg::CloseInput { id: self.program });
    }
}

/// Pings `to` from the machine `from` of this agent (shared by the netns and qemu backends).
pub fn ping(
    conn: &AgentConn,
    from: &str,
    to: std::net::Ipv4Addr,
    timeout: Duration,
) -> Result<bool, crate::error::PingError> {
    use crate::error::PingError;
    let machine = || from.to_string();
    let wait = timeout + crate::backend::ANSWER_MARGIN;
    let started = std::time::Instant::now();
    let request = Request::Ping {
        dst: to,
        timeout_ms: timeout.as_millis() as u64,
    };
    match conn.call(request, wait) {
        Ok(Response::Ping(answered)) => Ok(answered),
        Ok(other) => Err(PingError::Agent {
            machine: machine(),
            message: format!("{other:?}"),
        }),
        // The machine went down while pinging: it got no reply.
        Err(CallError::Lost) if started.elapsed() <= wait => Ok(false),
        Err(CallError::Lost) => Err(PingError::AgentLost { machine: machine() }),
        Err(CallError::Timeout) => Err(PingError::NoAnswer {
            machine: machine(),
            after: wait,
        }),
        Err(CallError::Send(source)) => Err(PingError::Channel {
            machine: machine(),
            source,
        }),
    }
}
