//! The guest's initramfs: busybox, the few modules needed to reach the root filesystem over
//! virtio-9p, and `/init`, as an uncompressed cpio archive in the kernel's "newc" format.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::guest;
use crate::{Error, cmd};

/// Modules `/init` loads, with their dependencies: the virtio PCI transport, 9p over virtio
/// and overlayfs. (The NIC and the rest load later from the root filesystem.)
const EARLY_MODULES: [&str; 4] = ["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// Builds the initramfs for kernel `release` and returns its bytes.
pub(crate) fn build(release: &str) -> Result<Vec<u8>, Error> {
    let busybox = Path::new("/bin/busybox");
    let mut archive = Cpio::default();
    for dir in [
        "bin", "dev", "mods", "proc", "sys", "lower", "upper", "newroot",
    ] {
        archive.dir(dir);
    }
    // The kernel opens /dev/console for init before init mounts devtmpfs.
    archive.char_device("dev/console", 5, 1);
    archive.file("bin/busybox", 0o755, &read(busybox, "busybox-static")?);
    let mut order = String::new();
    for module in module_files(release)? {
        let name = module
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::Rxe(format!("odd module path {}", module.display())))?
            .to_owned();
        archive.file(
            &format!("mods/{name}"),
            0o644,
            &read(&module, "linux-image-amd64")?,
        );
        order.push_str(&name);
        order.push('\n');
    }
    archive.file("modules", 0o644, order.as_bytes());
    archive.file("init", 0o755, guest::init_script().as_bytes());
    Ok(archive.finish())
}

fn read(path: &Path, package: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Io {
        context: format!(
            "reading {} for the Soft-RoCE guest's initramfs (apt-get install {package})",
            path.display()
        ),
        source: e,
    })
}

/// The module files of [`EARLY_MODULES`] and their dependencies, each once, in load order,
/// as `modprobe --show-depends` lists them.
fn module_files(release: &str) -> Result<Vec<PathBuf>, Error> {
    let mut files: Vec<PathBuf> = Vec::new();
    for module in EARLY_MODULES {
        let out = cmd::run(
            Command::new("modprobe").args(["-S", release, "--show-depends", module]),
            &format!("listing module {module} of kernel {release} and its dependencies (kmod)"),
            None,
        )?;
        for line in out.lines() {
            // "insmod /lib/modules/.../x.ko [options]", or "builtin x" for a built-in one.
            if let Some(path) = line
                .strip_prefix("insmod ")
                .and_then(|r| r.split(' ').next())
            {
                let path = PathBuf::from(path);
                if !files.contains(&path) {
                    files.push(path);
                }
            }
        }
    }
    Ok(files)
}

/// A cpio archive in the "newc" format (`070701` headers), the one the kernel unpacks.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, 0, &[]);
    }

    fn file(&mut self, name: &str, permissions: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | permissions, 0, data);
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, (major << 8) | minor, &[]);
    }

    /// One entry; `rdev` packs a device's major and minor number as `major << 8 | minor`.
    fn entry(&mut self, name: &str, mode: u32, rdev: u32, data: &[u8]) {
        self.inode += 1;
        let fields = [
            self.inode,
            mode,
            0, // uid
            0, // gid
            1, // links
            0, // mtime
            data.len() as u32,
            0, // device major
            0, // device minor
            rdev >> 8,
            rdev & 0xff,
            name.len() as u32 + 1,
            0, // checksum (unused by newc)
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 0, &[]);
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::Cpio;

    #[test]
    fn cpio_entries_follow_the_newc_layout() {
        let mut cpio = Cpio::default();
        cpio.file("init", 0o755, b"#!/bin/sh\n");
        cpio.char_device("dev/console", 5, 1);
        let bytes = cpio.finish();
        // Header (110 bytes), "init\0" padded to 4, then the data padded to 4.
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(&bytes[6..14], b"00000001"); // inode
        assert_eq!(&bytes[14..22], b"000081ed"); // regular file, 0755
        assert_eq!(&bytes[54..62], b"0000000a"); // size
        assert_eq!(&bytes[94..102], b"00000005"); // name length with its NUL
        assert_eq!(&bytes[110..115], b"init\0");
        assert_eq!(&bytes[116..126], b"#!/bin/sh\n");
        let console = &bytes[128..];
        assert_eq!(&console[14..22], b"00002180"); // character device, 0600
        assert_eq!(&console[78..94], b"0000000500000001"); // rdev 5:1
        assert!(bytes.len().is_multiple_of(4));
        let trailer = bytes.windows(10).position(|w| w == b"TRAILER!!!");
        assert!(trailer.is_some());
    }
}
