//! Corrupting a stopped machine's data, as a disk that rots or a write torn by a crash would:
//! one bit flipped in, or the tail cut off, one of the files of its data directory, chosen
//! and placed by a number (`pick`) so that a case replays the same corruption.
//!
//! Files are taken in path order (every regular, non-empty file under the data directory, but
//! the logs fleetcheck writes at its top: `*.log`), the change is fsynced (through the disk
//! layer of `lose_unsynced`, where there is one), and what was done is said in one line, which
//! is also appended to `corrupt.log` at the top of the data directory (reports keep it).

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How a file is corrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Corruption {
    /// One bit of one byte flipped.
    BitFlip,
    /// The file cut short at some byte (a torn write of its tail).
    Truncate,
}

impl Corruption {
    /// Every kind.
    pub const ALL: [Corruption; 2] = [Corruption::BitFlip, Corruption::Truncate];

    /// Its name (`bit-flip`, `truncate`).
    pub fn name(self) -> &'static str {
        match self {
            Corruption::BitFlip => "bit-flip",
            Corruption::Truncate => "truncate",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Corruption> {
        Corruption::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The files corruption may hit under `dir`, in path order.
fn candidates(dir: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let top_log = d == dir && path.extension().is_some_and(|e| e == "log");
                let len = entry.metadata()?.len();
                if len > 0 && !top_log {
                    found.push((path, len));
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

/// SplitMix64's finaliser: spreads `pick` over every bit.
fn mix(pick: u64) -> u64 {
    let mut z = pick.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Corrupts one file under `dir` as `how` says, the file and the place chosen by `pick`:
/// what was done (`flipped bit 3 of byte 1234 of js/1.blk (4096 bytes)`), or `None` when
/// there is no file to corrupt.
pub fn corrupt_in(dir: &Path, how: Corruption, pick: u64) -> io::Result<Option<String>> {
    let files = candidates(dir)?;
    if files.is_empty() {
        return Ok(None);
    }
    let h = mix(pick);
    let (path, len) = &files[(h % files.len() as u64) as usize];
    let at = (h >> 20) % len;
    let name = path.strip_prefix(dir).unwrap_or(path).display().to_string();
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let done = match how {
        Corruption::BitFlip => {
            let bit = (h >> 8) % 8;
            let mut byte = [0u8];
            file.seek(SeekFrom::Start(at))?;
            file.read_exact(&mut byte)?;
            byte[0] ^= 1 << bit;
            file.seek(SeekFrom::Start(at))?;
            file.write_all(&byte)?;
            format!("flipped bit {bit} of byte {at} of {name} ({len} bytes)")
        }
        Corruption::Truncate => {
            file.set_len(at)?;
            format!("cut {name} from {len} to {at} bytes")
        }
    };
    file.sync_all()?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("corrupt.log"))?;
    writeln!(log, "{done}")?;
    Ok(Some(done))
}
