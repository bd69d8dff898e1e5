//! Kernels a VM can boot: an image plus the modules of the same release.
//!
//! Two places are searched, the private directory first:
//! - `$FLEETCHECK_KERNELS` or [`PRIVATE_DIR`]: `<release>/vmlinuz` and
//!   `<release>/lib/modules/<release>/` (with `modules.dep`), filled by `scripts/fetch-kernels`,
//!   which unpacks Debian's `linux-image-*` packages there without installing them;
//! - the host's own: `/boot/vmlinuz-<release>` with `/lib/modules/<release>/modules.dep`.
//!
//! A release is what `uname -r` prints inside the VM; `MachineSpec::kernel` names one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default private kernel directory.
pub const PRIVATE_DIR: &str = "/var/lib/fleetcheck/kernels";

/// How to get more kernels, for error messages and `fleetcheck doctor`.
pub const HOW_TO_INSTALL: &str =
    "scripts/fetch-kernels unpacks Debian's linux-image-6.1 and 6.12 packages into /var/lib/fleetcheck/kernels";

/// One bootable kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// `uname -r` of it, e.g. `6.1.0-47-amd64`.
    pub release: String,
    /// The bzImage.
    pub image: PathBuf,
    /// Its `lib/modules/<release>` directory.
    pub modules: PathBuf,
}

impl Kernel {
    /// Whether the kernel has module `name` (`-` and `_` alike), built in or as a file.
    pub fn has_module(&self, name: &str) -> bool {
        super::initramfs::module_order(self, &[name]).is_ok()
    }
}

/// The private kernel directory in use.
pub fn private_dir() -> PathBuf {
    std::env::var_os("FLEETCHECK_KERNELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(PRIVATE_DIR))
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Every installed kernel, ordered by release (oldest version first, so the first is the one
/// shrinking prefers). A release in both places is taken from the private directory.
pub fn installed() -> Vec<Kernel> {
    let mut found: BTreeMap<(Vec<u64>, String), Kernel> = BTreeMap::new();
    let mut add = |k: Kernel| {
        if k.image.is_file() && k.modules.join("modules.dep").is_file() {
            found
                .entry((version_key(&k.release), k.release.clone()))
                .or_insert(k);
        }
    };
    let private = private_dir();
    for release in entries(&private) {
        if release.starts_with('.') || release.ends_with(".tmp") {
            continue;
        }
        let dir = private.join(&release);
        add(Kernel {
            image: dir.join("vmlinuz"),
            modules: dir.join("lib/modules").join(&release),
            release,
        });
    }
    for name in entries(Path::new("/boot")) {
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            add(Kernel {
                release: release.to_string(),
                image: Path::new("/boot").join(&name),
                modules: Path::new("/lib/modules").join(release),
            });
        }
    }
    found.into_values().collect()
}

/// The installed kernel of release `release`.
pub fn find(release: &str) -> Option<Kernel> {
    installed().into_iter().find(|k| k.release == release)
}

/// Numbers of a release for ordering: `6.12.117+deb12-amd64` → `[6, 12, 117, 12, 64]`.
fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The uncompressed ELF `vmlinux` inside `kernel`'s bzImage, extracted once into
/// `<cache>/vmlinux/`. QEMU boots it through its PVH entry point, which skips the
/// decompression a bzImage does at every boot: about 2.5 s of a cold boot under TCG.
/// `None` (boot the bzImage) when the payload cannot be extracted.
pub fn uncompressed(kernel: &Kernel, cache: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&kernel.image).ok()?;
    let dir = cache.join("vmlinux");
    let path = dir.join(format!(
        "{}-{}-{}.elf",
        kernel.release,
        meta.len(),
        meta.mtime()
    ));
    if path.is_file() {
        return Some(path);
    }
    let image = std::fs::read(&kernel.image).ok()?;
    let elf = extract_vmlinux(&image)?;
    std::fs::create_dir_all(&dir).ok()?;
    let tmp = dir.join(format!(".{}.tmp", crate::host::sys::random_hex(4)));
    std::fs::write(&tmp, &elf).ok()?;
    std::fs::rename(&tmp, &path).ok()?;
    Some(path)
}

/// The payload of a bzImage (boot protocol 2.08+: `payload_offset` and `payload_length` in
/// the setup header), decompressed with the matching tool.
fn extract_vmlinux(image: &[u8]) -> Option<Vec<u8>> {
    let u32_at = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let setup_sects = match *image.get(0x1f1)? {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
    let payload = image.get(start..start + u32_at(0x24c)?)?;
    let args: &[&str] = match payload {
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => &["xz", "-dc", "--single-stream"],
        [0x28, 0xb5, 0x2f, 0xfd, ..] => &["zstd", "-dc"],
        [0x1f, 0x8b, ..] => &["gzip", "-dc"],
        _ => return None,
    };
    // The kernel's build appends the uncompressed size; zstd rejects it as trailing data.
    for input in [payload, &payload[..payload.len().saturating_sub(4)]] {
        if let Some(out) = pipe_through(args, input) {
            if out.starts_with(b"\x7fELF") {
                return Some(out);
            }
        }
    }
    None
}

fn pipe_through(args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().ok()?;
    let _ = writer.join();
    out.status.success().then_some(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_order_by_version() {
        let mut r = vec!["6.12.117+deb12-amd64", "6.1.0-56-amd64", "6.1.0-47-amd64"];
        r.sort_by_key(|r| version_key(r));
        assert_eq!(
            r,
            ["6.1.0-47-amd64", "6.1.0-56-amd64", "6.12.117+deb12-amd64"]
        );
    }
}
