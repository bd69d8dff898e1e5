//! The initramfs every VM boots: built by fleetcheck itself, cached by content key.
//!
//! Contents (an uncompressed `newc` cpio: the kernel unpacks it faster than it would
//! decompress one, which matters under TCG):
//! - `/init`: `exec /fc/agent <args> --guest`, i.e. the agent as PID 1 ([`crate::agent::guest`]);
//! - `/fc/agent`: the agent binary (stripped when `strip` exists), with its ELF interpreter and
//!   shared libraries at their host paths (found with `ldd`);
//! - `/fc/bin/busybox` and a link per applet (a shell and `ip` before the host's files are
//!   shared; busybox-static has no libraries);
//! - `/fc/lib/*.ko` and `/fc/modules`: the modules the guest needs (virtio-mmio, virtio-net,
//!   virtio-console, 9p over virtio), dependencies from `modules.dep` first, decompressed;
//! - `/dev/console`, so init has its standard streams on the serial console.
//!
//! The key hashes everything that goes in (paths, sizes, modification times, agent arguments,
//! kernel release) into `<cache>/initramfs/<key>.cpio`, written to a temporary name and renamed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::kernels::Kernel;
use crate::agent::guest::{BUSYBOX_DIR, MODULES};
use crate::host::AgentCommand;

/// Modules the guest needs, by name; those built into a kernel are skipped.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_net",
    "virtio_console",
    "9pnet_virtio",
    "9p",
];

/// Bumped whenever the layout changes, so old cache entries are not used.
const FORMAT: u32 = 1;

/// Why an initramfs could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("busybox not found (apt-get install busybox-static)")]
    NoBusybox,
    #[error("kernel {release} has no module {module} (looked in {modules})")]
    MissingModule {
        release: String,
        module: String,
        modules: PathBuf,
    },
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed: {message}")]
    Tool { command: String, message: String },
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> InitramfsError + '_ {
    move |source| InitramfsError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// What a file of the image is made from.
#[derive(Clone, Debug)]
enum Entry {
    Dir,
    /// Contents of a host file, decompressed with this tool if `Some`.
    File {
        source: PathBuf,
        mode: u32,
        unpack: Option<&'static str>,
        strip: bool,
    },
    Data {
        bytes: Vec<u8>,
        mode: u32,
    },
    Symlink(String),
    CharDev {
        major: u32,
        minor: u32,
    },
}

/// The planned image: path (without leading `/`) to entry.
#[derive(Default, Debug)]
struct Plan {
    entries: BTreeMap<String, Entry>,
    /// What the key is computed from.
    inputs: Vec<String>,
}

impl Plan {
    fn add(&mut self, path: &str, entry: Entry) {
        let path = path.trim_start_matches('/').to_string();
        let mut parent = Path::new(&path).parent();
        while let Some(p) = parent {
            if p.as_os_str().is_empty() {
                break;
            }
            self.entries
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Entry::Dir);
            parent = p.parent();
        }
        self.entries.insert(path, entry);
    }

    fn add_host_file(
        &mut self,
        at: &str,
        source: &Path,
        unpack: Option<&'static str>,
        strip: bool,
    ) -> Result<(), InitramfsError> {
        let meta = fs::metadata(source).map_err(read_err(source))?;
        self.inputs.push(format!(
            "{at} {} {} {}",
            source.display(),
            meta.len(),
            meta.mtime_nsec() + meta.mtime() * 1_000_000_000
        ));
        self.add(
            at,
            Entry::File {
                source: source.to_path_buf(),
                mode: meta.mode() & 0o7777,
                unpack,
                strip,
            },
        );
        Ok(())
    }

    fn key(&self) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        FORMAT.hash(&mut h);
        for input in &self.inputs {
            input.hash(&mut h);
        }
        for (path, entry) in &self.entries {
            path.hash(&mut h);
            match entry {
                Entry::Data { bytes, mode } => (bytes, mode).hash(&mut h),
                Entry::Symlink(t) => t.hash(&mut h),
                _ => {}
            }
        }
        format!("{:016x}", h.finish())
    }
}

/// `busybox` on the usual paths.
pub fn find_busybox() -> Option<PathBuf> {
    ["/usr/bin/busybox", "/bin/busybox", "/usr/sbin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn tool(program: &str, args: &[&str]) -> Result<Vec<u8>, InitramfsError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| InitramfsError::Tool {
            command: format!("{program} {}", args.join(" ")),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(InitramfsError::Tool {
            command: format!("{program} {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// Shared libraries and interpreter of a dynamic executable (none for a static one).
fn libraries(program: &Path) -> Result<Vec<PathBuf>, InitramfsError> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|e| InitramfsError::Tool {
            command: format!("ldd {}", program.display()),
            message: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Module name of a modules.dep path: `kernel/fs/9p/9p.ko.xz` → `9p`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Module files to load for `wanted`, dependencies first (paths relative to the modules dir).
pub(super) fn module_order(
    kernel: &Kernel,
    wanted: &[&str],
) -> Result<Vec<String>, InitramfsError> {
    let dep_path = kernel.modules.join("modules.dep");
    let deps = fs::read_to_string(&dep_path).map_err(read_err(&dep_path))?;
    let builtin_path = kernel.modules.join("modules.builtin");
    let builtin: BTreeSet<String> = fs::read_to_string(&builtin_path)
        .unwrap_or_default()
        .lines()
        .map(module_name)
        .collect();
    let mut by_name: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in deps.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        let list = rest.split_whitespace().map(String::from).collect();
        by_name.insert(module_name(path), (path.to_string(), list));
    }
    let mut order: Vec<String> = Vec::new();
    for name in wanted {
        let name = name.replace('-', "_");
        if builtin.contains(&name) {
            continue;
        }
        let (path, list) = by_name
            .get(&name)
            .ok_or_else(|| InitramfsError::MissingModule {
                release: kernel.release.clone(),
                module: name.clone(),
                modules: kernel.modules.clone(),
            })?;
        // modules.dep lists every transitive dependency, the deepest last.
        for dep in list.iter().rev().chain(std::iter::once(path)) {
            if !order.contains(dep) {
                order.push(dep.clone());
            }
        }
    }
    Ok(order)
}

/// Plans the image for `kernel` and `agent`.
fn plan(kernel: &Kernel, agent: &AgentCommand) -> Result<Plan, InitramfsError> {
    let mut plan = Plan::default();
    plan.inputs.push(format!("kernel {}", kernel.release));
    plan.add("dev/console", Entry::CharDev { major: 5, minor: 1 });
    for dir in ["proc", "sys", "dev", "tmp", "run", "host", "root"] {
        plan.add(dir, Entry::Dir);
    }
    let busybox = find_busybox().ok_or(InitramfsError::NoBusybox)?;
    let bb_at = format!("{BUSYBOX_DIR}/busybox");
    plan.add_host_file(&bb_at, &busybox, None, false)?;
    for lib in libraries(&busybox)? {
        plan.add_host_file(&lib.to_string_lossy(), &lib, None, false)?;
    }
    let applets = tool(&busybox.to_string_lossy(), &["--list"])?;
    for applet in String::from_utf8_lossy(&applets).lines() {
        if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
            plan.add(
                &format!("{BUSYBOX_DIR}/{applet}"),
                Entry::Symlink("busybox".into()),
            );
        }
    }
    let strip = Path::new("/usr/bin/strip").is_file();
    plan.add_host_file("fc/agent", &agent.program, None, strip)?;
    for lib in libraries(&agent.program)? {
        plan.add_host_file(&lib.to_string_lossy(), &lib, None, false)?;
    }
    let mut args = String::new();
    for a in &agent.args {
        args.push_str(&format!("'{}' ", a.replace('\'', "'\\''")));
    }
    plan.add(
        "init",
        Entry::Data {
            bytes: format!("#!{BUSYBOX_DIR}/sh\nexec /fc/agent {args}--guest\n").into_bytes(),
            mode: 0o755,
        },
    );
    let mut list = String::new();
    for rel in module_order(kernel, GUEST_MODULES)? {
        let unpack = unpacker(&rel);
        let at = format!("fc/lib/{}.ko", module_name(&rel));
        plan.add_host_file(&at, &kernel.modules.join(&rel), unpack, false)?;
        list.push_str(&format!("/{at}\n"));
    }
    plan.add(
        MODULES,
        Entry::Data {
            bytes: list.into_bytes(),
            mode: 0o644,
        },
    );
    Ok(plan)
}

/// The tool that decompresses module file `rel`, if compressed.
fn unpacker(rel: &str) -> Option<&'static str> {
    if rel.ends_with(".xz") {
        Some("xz")
    } else if rel.ends_with(".zst") {
        Some("zstd")
    } else if rel.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    }
}

/// Modules a machine with a disk of its own loads after Init, besides its file system's: the
/// block driver and the checksum both ext4 and btrfs ask for (`softdep ... crypto-crc32c`).
pub const DISK_MODULES: &[&str] = &["virtio_blk", "crc32c_generic"];

/// Host paths of `wanted` modules of `kernel` (and their dependencies, those first),
/// decompressed into `<cache>/modules/<release>/` so that a guest loads them with
/// `finit_module` straight from the host share, without a decompressor of its own. Files are
/// made once (written aside and renamed) and kept; modules built into the kernel are left out.
pub fn unpacked_modules(
    cache: &Path,
    kernel: &Kernel,
    wanted: &[&str],
) -> Result<Vec<PathBuf>, InitramfsError> {
    let dir = cache.join("modules").join(&kernel.release);
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InitramfsError::Write { path, source }
    };
    fs::create_dir_all(&dir).map_err(write_err(&dir))?;
    let mut paths = Vec::new();
    for rel in module_order(kernel, wanted)? {
        let source = kernel.modules.join(&rel);
        let path = dir.join(format!("{}.ko", module_name(&rel)));
        let fresh = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
        if fresh(&path).is_none() || fresh(&path) < fresh(&source) {
            let bytes = contents(&Entry::File {
                source: source.clone(),
                mode: 0o644,
                unpack: unpacker(&rel),
                strip: false,
            })?;
            let tmp = dir.join(format!(
                ".{}.{}.tmp",
                module_name(&rel),
                crate::host::sys::random_hex(4)
            ));
            let written = fs::write(&tmp, bytes)
                .and_then(|()| fs::rename(&tmp, &path))
                .map_err(write_err(&path));
            if written.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            written?;
        }
        paths.push(path);
    }
    Ok(paths)
}

/// The cached initramfs for `kernel` and `agent` under `cache`, built if missing.
pub fn build(
    cache: &Path,
    kernel: &Kernel,
    agent: &AgentCommand,
) -> Result<PathBuf, InitramfsError> {
    let plan = plan(kernel, agent)?;
    let dir = cache.join("initramfs");
    let path = dir.join(format!("{}-{}.cpio", kernel.release, plan.key()));
    if path.is_file() {
        return Ok(path);
    }
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InitramfsError::Write { path, source }
    };
    fs::create_dir_all(&dir).map_err(write_err(&dir))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        plan.key(),
        crate::host::sys::random_hex(4)
    ));
    let result =
        write_cpio(&plan, &tmp).and_then(|()| fs::rename(&tmp, &path).map_err(write_err(&path)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    prune(&dir, KEEP);
    result.map(|()| path)
}

/// How many initramfs files the cache keeps (each rebuilt agent makes new ones).
const KEEP: usize = 12;

/// Removes all but the `keep` newest images in `dir`.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let stale = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| {
            // Temporary files of a process killed while building.
            let tmp = e.path().extension().is_some_and(|x| x == "tmp");
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < stale);
            !(tmp && old && fs::remove_file(e.path()).is_ok())
        })
        .filter(|e| e.path().extension().is_some_and(|x| x == "cpio"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort();
    files.reverse();
    for (_, path) in files.into_iter().skip(keep) {
        let _ = fs::remove_file(path);
    }
}

fn contents(entry: &Entry) -> Result<Vec<u8>, InitramfsError> {
    match entry {
        Entry::File {
            source,
            unpack: Some(tool_name),
            ..
        } => tool(tool_name, &["-dc", &source.to_string_lossy()]),
        Entry::File {
            source,
            strip: true,
            ..
        } => {
            let out = std::env::temp_dir().join(format!(
                "fleetcheck-strip-{}",
                crate::host::sys::random_hex(6)
            ));
            let stripped = tool(
                "strip",
                &["-o", &out.to_string_lossy(), &source.to_string_lossy()],
            )
            .and_then(|_| fs::read(&out).map_err(read_err(&out)));
            let _ = fs::remove_file(&out);
            stripped
        }
        Entry::File { source, .. } => fs::read(source).map_err(read_err(source)),
        Entry::Data { bytes, .. } => Ok(bytes.clone()),
        Entry::Symlink(target) => Ok(target.as_bytes().to_vec()),
        Entry::Dir | Entry::CharDev { .. } => Ok(Vec::new()),
    }
}

fn write_cpio(plan: &Plan, path: &Path) -> Result<(), InitramfsError> {
    let err = |source| InitramfsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::create(path).map_err(err)?;
    let mut out = io::BufWriter::new(file);
    for (ino, (name, entry)) in (1u32..).zip(plan.entries.iter()) {
        let data = contents(entry)?;
        let (mode, rdev) = match entry {
            Entry::Dir => (0o040755, (0, 0)),
            Entry::File { mode, .. } | Entry::Data { mode, .. } => (0o100000 | mode, (0, 0)),
            Entry::Symlink(_) => (0o120777, (0, 0)),
            Entry::CharDev { major, minor } => (0o020600, (*major, *minor)),
        };
        write_entry(&mut out, ino, mode, rdev, name, &data).map_err(err)?;
    }
    write_entry(&mut out, 0, 0, (0, 0), "TRAILER!!!", &[]).map_err(err)?;
    let file = out.into_inner().map_err(|e| err(e.into_error()))?;
    file.sync_all().map_err(err)
}

fn pad(out: &mut impl Write, len: usize) -> io::Result<()> {
    let n = (4 - len % 4) % 4;
    out.write_all(&[0u8; 3][..n])
}

fn write_entry(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    (rmajor, rminor): (u32, u32),
    name: &str,
    data: &[u8],
) -> io::Result<()> {
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{:08x}{:08x}{:08x}{rmajor:08x}{rminor:08x}{:08x}{:08x}",
        0,
        0,
        0,
        data.len(),
        0,
        0,
        name.len() + 1,
        0
    );
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad(out, header.len() + name.len() + 1)?;
    out.write_all(data)?;
    pad(out, data.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_drop_dirs_suffixes_and_dashes() {
        assert_eq!(module_name("kernel/fs/9p/9p.ko.xz"), "9p");
        assert_eq!(
            module_name("kernel/drivers/char/hw_random/virtio-rng.ko"),
            "virtio_rng"
        );
    }
}
