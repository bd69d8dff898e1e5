//! A long-lived program inside a machine ([`crate::Network::spawn`]): its standard input and
//! output, and its end, whichever way the backend reaches into the machine.

use std::io::{self, Read, Write};

/// A program started by [`crate::Network::spawn`]. Its standard output ends when the
/// program ends (or the machine goes down); dropping it ends the program.
pub struct Spawned {
    stdin: Option<Box<dyn Write + Send>>,
    stdout: Option<Box<dyn Read + Send>>,
    end: Option<Box<dyn FnOnce() + Send>>,
    what: String,
}

impl std::fmt::Debug for Spawned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawned")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl Spawned {
    /// A program reached through `stdin` and `stdout`, ended by `end`; `what` names it for
    /// debugging (a pid, a request id).
    pub fn new(
        stdin: Box<dyn Write + Send>,
        stdout: Box<dyn Read + Send>,
        end: Box<dyn FnOnce() + Send>,
        what: String,
    ) -> Self {
        Self {
            stdin: Some(stdin),
            stdout: Some(stdout),
            end: Some(end),
            what,
        }
    }

    /// Its standard input (once); dropping it closes the program's input.
    pub fn take_stdin(&mut self) -> Option<Box<dyn Write + Send>> {
        self.stdin.take()
    }

    /// Its standard output (once): at its end once the program ended.
    pub fn take_stdout(&mut self) -> Option<Box<dyn Read + Send>> {
        self.stdout.take()
    }

    /// Ends the program (and whatever it started in its process group) now; its output then
    /// ends. Idempotent.
    pub fn end(&mut self) {
        self.stdin = None;
        if let Some(end) = self.end.take() {
            end();
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.end();
    }
}

/// A reader over chunks that arrive on a channel: at its end when the sender is gone.
pub(crate) struct ChannelReader {
    chunks: std::sync::mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    pub(crate) fn new(chunks: std::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        Self {
            chunks,
            current: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.current.len() {
            match self.chunks.recv() {
                Ok(chunk) => {
                    self.current = chunk;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_reader_reads_every_chunk_then_ends() {
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(b"one\ntw".to_vec()).unwrap();
        tx.send(Vec::new()).unwrap();
        tx.send(b"o\n".to_vec()).unwrap();
        drop(tx);
        let mut all = String::new();
        ChannelReader::new(rx).read_to_string(&mut all).unwrap();
        assert_eq!(all, "one\ntwo\n");
    }
}
