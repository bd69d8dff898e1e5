//! Whether a program reads the wall clock through libc, where a preloaded library
//! (libfaketime) can move it: facts read from its ELF headers (the ELF-64 format, little
//! endian, as x86-64 Linux has it).
//!
//! A statically linked program (no `PT_INTERP`) loads no preloaded library; a Go program
//! (a `.go.buildinfo` section) reads the time through the vDSO itself, dynamically linked or
//! not. Both are out of reach.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

const PT_INTERP: u32 = 3;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("four bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("eight bytes"))
}

fn read_at(f: &mut File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(&mut buf)?;
    Ok(buf)
}

/// Why a preloaded library cannot move the clock program `path` reads (`statically linked`,
/// `a Go program`), or `None` if it can (or the file is no ELF-64 program: a script's
/// interpreter is what runs).
pub fn clock_out_of_reach(path: &Path) -> io::Result<Option<&'static str>> {
    let mut f = File::open(path)?;
    let mut header = [0u8; 64];
    if f.read(&mut header)? < 64 || &header[..4] != b"\x7fELF" || header[4] != 2 {
        return Ok(None);
    }
    let (phoff, phentsize, phnum) = (
        u64_at(&header, 0x20),
        usize::from(u16_at(&header, 0x36)),
        usize::from(u16_at(&header, 0x38)),
    );
    let (shoff, shentsize, shnum, shstrndx) = (
        u64_at(&header, 0x28),
        usize::from(u16_at(&header, 0x3a)),
        usize::from(u16_at(&header, 0x3c)),
        usize::from(u16_at(&header, 0x3e)),
    );
    if shnum > 0 && shstrndx < shnum && shentsize >= 0x28 {
        let sections = read_at(&mut f, shoff, shentsize * shnum)?;
        let entry = |i: usize| &sections[i * shentsize..(i + 1) * shentsize];
        let names_at = entry(shstrndx);
        let names = read_at(
            &mut f,
            u64_at(names_at, 0x18),
            u64_at(names_at, 0x20).min(1 << 20) as usize,
        )?;
        let is_go = (0..shnum).any(|i| {
            let start = u32_at(entry(i), 0) as usize;
            names
                .get(start..)
                .and_then(|rest| rest.split(|&b| b == 0).next())
                .is_some_and(|name| name == b".go.buildinfo")
        });
        if is_go {
            return Ok(Some(
                "a Go program, which reads the time through the vDSO, not libc",
            ));
        }
    }
    if phentsize >= 4 {
        let headers = read_at(&mut f, phoff, phentsize * phnum)?;
        let dynamic = (0..phnum).any(|i| u32_at(&headers, i * phentsize) == PT_INTERP);
        if !dynamic {
            return Ok(Some(
                "statically linked, so no library can be preloaded into it",
            ));
        }
    }
    Ok(None)
}
