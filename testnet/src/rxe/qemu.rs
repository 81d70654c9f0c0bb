//! Launching QEMU for the Soft-RoCE guest, and stopping it.
//!
//! QEMU runs in the peer's namespace (for the tap device), as a child of a "keeper" thread
//! that lives exactly as long as QEMU: QEMU gets `PR_SET_PDEATHSIG` = SIGKILL, which fires
//! when the thread that forked it ends, so QEMU cannot outlive the test process. Its
//! control channel connects to a Unix socket we listen on before launching it; waiting for
//! that connection also watches QEMU's pidfd, so a QEMU that fails at once is noticed at once.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Accel, guest};
use crate::{Error, Netns};

/// How long a QEMU started with KVM must survive to be kept (else TCG is tried): with
/// `-cpu host` on a host whose KVM cannot run it, QEMU may exit at once.
const KVM_PROBE: Duration = Duration::from_secs(3);

/// The guest NIC's MAC address (locally administered, QEMU's prefix).
const GUEST_MAC: &str = "52:54:00:12:00:02";

/// What the guest is booted with.
pub(crate) struct Launch<'a> {
    pub(crate) ns: &'a Netns,
    /// The peer's directory: initramfs, logs, control socket, `jobs/`.
    pub(crate) dir: &'a Path,
    pub(crate) kernel: &'a Path,
    pub(crate) memory_mib: u32,
    pub(crate) mtu: u32,
    pub(crate) tap: &'a str,
    /// The guest's address with its prefix length.
    pub(crate) guest: String,
}

/// A running QEMU.
pub(crate) struct Qemu {
    child: Child,
    keeper: Option<JoinHandle<()>>,
    accel: Accel,
}

impl Qemu {
    /// Launches QEMU with `accel` (trying KVM first for [`Accel::Auto`]) and returns it with
    /// its control channel, once QEMU has connected that.
    pub(crate) fn start(
        launch: &Launch<'_>,
        accel: Accel,
        timeout: Duration,
    ) -> Result<(Qemu, UnixStream), Error> {
        let kvm_usable = File::options()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
            && cpu_virtualises();
        let mut tried = String::new();
        if accel == Accel::Kvm || (accel == Accel::Auto && kvm_usable) {
            let listener = listen(launch.dir)?;
            let mut qemu = Qemu::spawn(launch, Accel::Kvm)?;
            if accel == Accel::Kvm {
                let stream = qemu.accept(&listener, timeout)?;
                return Ok((qemu, stream));
            }
            match qemu.exited_within(KVM_PROBE)? {
                None => {
                    let stream = qemu.accept(&listener, timeout)?;
                    return Ok((qemu, stream));
                }
                Some(status) => {
                    tried = format!(
                        "KVM failed ({status}: {}), ",
                        log_tail(launch.dir).replace('\n', " ")
                    );
                }
            }
        }
        // A fresh socket: the failed KVM attempt may have left a connection in the old one.
        let listener = listen(launch.dir)?;
        let mut qemu = Qemu::spawn(launch, Accel::Tcg)?;
        let stream = qemu.accept(&listener, timeout).map_err(|e| match e {
            Error::Rxe(msg) if !tried.is_empty() => Error::Rxe(format!("{tried}then {msg}")),
            e => e,
        })?;
        Ok((qemu, stream))
    }

    fn spawn(launch: &Launch<'_>, accel: Accel) -> Result<Qemu, Error> {
        let dir = launch.dir;
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join("qemu.log"))
            .map_err(|e| Error::Io {
                context: format!("creating {}", dir.join("qemu.log").display()),
                source: e,
            })?;
        let log2 = log.try_clone().map_err(|e| Error::Io {
            context: "duplicating the QEMU log's descriptor".into(),
            source: e,
        })?;
        let (accel_name, cpu) = match accel {
            Accel::Kvm => ("kvm", "host"),
            _ => ("tcg", "max"),
        };
        let path = |name: &str| dir.join(name).display().to_string();
        let mut cmd = launch.ns.command("qemu-system-x86_64");
        cmd.args(["-name", "xrdma-rxe-peer", "-accel", accel_name, "-cpu", cpu])
            .args(["-smp", "1", "-m", &launch.memory_mib.to_string()])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .arg("-no-reboot")
            .arg("-kernel")
            .arg(launch.kernel)
            .args(["-initrd", &path("initramfs.cpio")])
            .arg("-append")
            .arg(format!(
                "console=ttyS0 panic=-1 loglevel=4 net.ifnames=0 xrdma.ip={} xrdma.mtu={}",
                launch.guest, launch.mtu
            ))
            .args(["-serial", &format!("file:{}", path("console.log"))])
            .arg("-virtfs")
            .arg(
                "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,\
                 multidevs=remap",
            )
            .arg("-virtfs")
            .arg(format!(
                "local,path={},mount_tag=xrdmajobs,security_model=none,multidevs=remap",
                path("jobs")
            ))
            .arg("-netdev")
            .arg(format!(
                "tap,id=net0,ifname={},script=no,downscript=no,vnet_hdr=off",
                launch.tap
            ))
            .args([
                "-device",
                &format!("virtio-net-pci,netdev=net0,mac={GUEST_MAC}"),
            ])
            .args([
                "-chardev",
                &format!("socket,id=ctl,path={}", path("control.sock")),
            ])
            .args(["-device", "virtio-serial-pci,id=serial0"])
            .args([
                "-device",
                &format!(
                    "virtserialport,bus=serial0.0,chardev=ctl,name={}",
                    guest::CONTROL_PORT
                ),
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // SAFETY: the closure runs in the child between fork and exec and only makes the
        // async-signal-safe prctl system call.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (tx, rx) = mpsc::channel();
        let keeper = std::thread::Builder::new()
            .name("xr-rxe-qemu".into())
            .spawn(move || {
                let child = cmd.spawn();
                let pid = child.as_ref().map(|c| c.id()).ok();
                let _ = tx.send(child.map_err(|e| {
                    crate::cmd::spawn_error(&cmd, "starting QEMU for the Soft-RoCE peer", e)
                }));
                if let Some(pid) = pid {
                    wait_for_exit_without_reaping(pid);
                }
            })
            .map_err(|e| Error::Io {
                context: "starting the thread that launches QEMU".into(),
                source: e,
            })?;
        let child = match rx.recv() {
            Ok(Ok(child)) => child,
            Ok(Err(e)) => {
                let _ = keeper.join();
                return Err(e);
            }
            Err(_) => {
                let _ = keeper.join();
                return Err(Error::Rxe("the thread launching QEMU died".into()));
            }
        };
        Ok(Qemu {
            child,
            keeper: Some(keeper),
            accel,
        })
    }

    pub(crate) fn accel(&self) -> Accel {
        self.accel
    }

    /// Waits up to `timeout` for QEMU to exit; returns its status if it did.
    fn exited_within(&mut self, timeout: Duration) -> Result<Option<String>, Error> {
        let pidfd = self.pidfd()?;
        if poll_readable(&[pidfd.as_raw_fd()], timeout).is_some() {
            return Ok(Some(match self.child.wait() {
                Ok(status) => status.to_string(),
                Err(e) => e.to_string(),
            }));
        }
        Ok(None)
    }

    /// Accepts QEMU's control connection, failing if QEMU exits or `timeout` passes first.
    fn accept(&mut self, listener: &UnixListener, timeout: Duration) -> Result<UnixStream, Error> {
        let pidfd = self.pidfd()?;
        let started = Instant::now();
        match poll_readable(&[listener.as_raw_fd(), pidfd.as_raw_fd()], timeout) {
            Some(0) => listener
                .accept()
                .map(|(stream, _)| stream)
                .map_err(|e| Error::Io {
                    context: "accepting QEMU's control connection".into(),
                    source: e,
                }),
            Some(_) => Err(Error::Rxe(format!(
                "QEMU ({:?}) exited at start-up: {}",
                self.accel,
                self.child.wait().map(|s| s.to_string()).unwrap_or_default()
            ))),
            None => Err(Error::Rxe(format!(
                "QEMU did not connect its control channel within {:?}",
                started.elapsed()
            ))),
        }
    }

    /// A pidfd for QEMU (still our unreaped child, so its pid cannot have been reused).
    fn pidfd(&self) -> Result<OwnedFd, Error> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.child.id(), 0) };
        if fd < 0 {
            return Err(Error::Io {
                context: "pidfd_open on QEMU".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` is a descriptor the kernel just gave us and nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        // The child is not reaped before `wait` below, so its pid is still QEMU's.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

/// Whether the CPU shows hardware virtualisation (the `vmx` or `svm` flag). Some hosts
/// offer a /dev/kvm without it (nested KVM emulated in software, such as kvm-pvm), on which
/// QEMU with KVM either exits at once or starts but never boots the stock kernel.
fn cpu_virtualises() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| {
            info.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        })
        .unwrap_or(false)
}

/// Listens on the peer's control socket (`control.sock` in `dir`), replacing any old one.
fn listen(dir: &Path) -> Result<UnixListener, Error> {
    let socket = dir.join("control.sock");
    let _ = std::fs::remove_file(&socket);
    UnixListener::bind(&socket).map_err(|e| Error::Io {
        context: format!("listening on {}", socket.display()),
        source: e,
    })
}

/// Blocks until child `pid` has exited, leaving it for `Child::wait` to reap.
fn wait_for_exit_without_reaping(pid: u32) {
    loop {
        // SAFETY: all-zero is a valid siginfo_t; waitid writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a live siginfo_t; WNOWAIT leaves the child's status in place.
        let rc =
            unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Polls `fds` for readability up to `timeout`; returns the index of the first readable one.
fn poll_readable(fds: &[libc::c_int], timeout: Duration) -> Option<usize> {
    let deadline = Instant::now() + timeout;
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `polls` is a live array of `polls.len()` pollfds.
        let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, ms) };
        if n > 0 {
            return polls.iter().position(|p| p.revents != 0);
        }
        if n == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

/// The last lines QEMU wrote to its log (its error messages).
fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}
