//! A real Linux RDMA peer for interoperability tests: the kernel's Soft-RoCE driver
//! (`rdma_rxe`) in a QEMU guest, plugged into a tap device in a network namespace.
//!
//! The machine running the tests needs no RDMA support in its own kernel. The guest boots
//! Debian 12's 6.1 kernel (package `linux-image-amd64`; `/boot/vmlinuz-6.1.*`) with a small
//! initramfs that mounts this machine's root filesystem read-only over virtio-9p under a
//! tmpfs overlay, so the guest runs this machine's own programs (`ibv_rc_pingpong`, perftest,
//! `rping`, ...). An agent in the guest adds rxe0 on its NIC and runs the commands
//! [`RxePeer::run`] and [`RxePeer::spawn`] hand it, over a virtio-serial control channel;
//! outputs come back through a shared 9p directory.
//!
//! ```text
//!  namespace xr-<pid>-rxe<n>                       QEMU guest (-smp 1)
//!  host programs: RxePeer::ns_command              guest programs: RxePeer::run / spawn
//!  rxetap0 198.19.254.1/24  <--- tap / virtio-net --->  eth0 198.19.254.2/24, rxe0 on top
//! ```
//!
//! Host programs reach the guest at [`RxePeer::guest_ip`] from inside the namespace, on the
//! tap device ([`RxePeer::tap`], the `XRDMA_IFACE` to give libxrdma.so). The guest's RoCE v2
//! GID for its IPv4 address is [`RxePeer::gid_index`] (1 on the 6.1 kernel: GID 0 is the
//! link-local IPv6 one).
//!
//! Booting takes a minute or two without hardware virtualisation (QEMU's TCG); a command
//! then costs about half a second. Tests in one binary share one guest through
//! [`RxePeer::shared`]. Starting fails, saying why, when something is missing: root, QEMU,
//! the 6.1 kernel, busybox, rdma-core's rxe provider (scripts/setup.sh installs them all).
//!
//! Dropping a peer kills QEMU and deletes the namespace and the peer's directory, also while
//! a test unwinds from a panic; the shared peer is dropped when the test binary exits. If the
//! test process is killed, QEMU dies with it (`PR_SET_PDEATHSIG`), and the namespace and
//! directory are removed by the next peer or topology built.

mod control;
mod guest;
mod initramfs;
mod qemu;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use crate::netns::{NAME_PREFIX, pid_of_name, remove_stale};
use crate::{Error, Netns, cmd};
use control::{Control, State};
use qemu::Qemu;

/// The tap device's name in the peer's namespace.
const TAP: &str = "rxetap0";

/// The host side's address (on [`TAP`]) and the guest's, in 198.18.0.0/15. Each peer has
/// its own namespace, so every peer can use the same pair.
const HOST_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 254, 1);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 254, 2);
const PREFIX_LEN: u8 = 24;

/// How long a guest job may run at most, whatever its waiter does (the agent kills it then).
const JOB_LIMIT: Duration = Duration::from_secs(900);

/// How long a killed job gets to report its end.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// Numbers peers and jobs of this process.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// How QEMU runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// KVM if `/dev/kvm` opens, the CPU shows hardware virtualisation (`vmx` or `svm`) and
    /// QEMU starts with it (`-cpu host`); else TCG.
    Auto,
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// QEMU's emulator: slow, but works everywhere.
    Tcg,
}

/// Settings of a [`RxePeer`].
#[derive(Debug, Clone)]
pub struct RxeConfig {
    /// MTU of the tap device and the guest's NIC (rxe's path MTU is the largest IB MTU that
    /// fits: 1024 for 1500, 4096 for 9000).
    pub mtu: u32,
    /// The guest's memory.
    pub memory_mib: u32,
    /// How long booting until rxe0 is ACTIVE may take.
    pub boot_timeout: Duration,
    /// KVM or TCG.
    pub accel: Accel,
}

impl Default for RxeConfig {
    /// MTU 1500, 1 GiB, five minutes to boot, [`Accel::Auto`].
    fn default() -> Self {
        RxeConfig {
            mtu: 1500,
            memory_mib: 1024,
            boot_timeout: Duration::from_secs(300),
            accel: Accel::Auto,
        }
    }
}

/// What a guest command printed and how it ended.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    /// Its exit status (124 if the agent's time limit killed it, 128 + N after signal N).
    pub status: i32,
    /// Standard output and standard error, interleaved as written.
    pub output: String,
    /// From submitting the command to learning that it ended.
    pub elapsed: Duration,
}

impl GuestOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// A Soft-RoCE peer: a QEMU guest running `rdma_rxe`, on a tap device in its own network
/// namespace. See the [module documentation](self).
pub struct RxePeer {
    // Dropped in this order: QEMU, then the control channel, the namespace, the directory.
    qemu: Option<Qemu>,
    control: Option<Control>,
    ns: Netns,
    dir: PathBuf,
    gid_index: u32,
    release: String,
    boot_time: Duration,
}

impl RxePeer {
    /// Creates the namespace and tap device, boots the guest and returns once rxe0 is ACTIVE.
    ///
    /// # Errors
    /// [`Error::NotRoot`] unless root; [`Error::Rxe`] saying what is missing or what went
    /// wrong (with the end of the guest's console log), e.g. no QEMU, no 6.1 kernel image,
    /// a boot that did not finish within [`RxeConfig::boot_timeout`].
    pub fn start(config: RxeConfig) -> Result<RxePeer, Error> {
        cmd::require_root()?;
        let kernel = find_kernel()?;
        check_guest_userland()?;
        remove_stale();
        remove_stale_dirs();
        let name = format!(
            "{NAME_PREFIX}{}-rxe{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("jobs")).map_err(|e| Error::Io {
            context: format!("creating {}", dir.join("jobs").display()),
            source: e,
        })?;
        let ns = match Netns::new(&name) {
            Ok(ns) => ns,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // From here on, dropping `peer` undoes everything.
        let mut peer = RxePeer {
            qemu: None,
            control: None,
            ns,
            dir,
            gid_index: 0,
            release: kernel.release.clone(),
            boot_time: Duration::ZERO,
        };
        peer.make_tap(config.mtu)?;
        peer.boot(&config, &kernel)?;
        Ok(peer)
    }

    /// The peer shared by every test of this test binary, started by the first call with
    /// [`RxeConfig::default`]. The guard serialises its users: a test holds it while it
    /// uses the peer, so tests run their cases one after the other. If starting failed, every
    /// call fails with the same message.
    ///
    /// The peer is dropped (QEMU killed, namespace deleted) when the process exits.
    pub fn shared() -> Result<SharedRxePeer, Error> {
        static SHARED: OnceLock<Result<Mutex<Option<RxePeer>>, String>> = OnceLock::new();
        extern "C" fn stop_shared() {
            if let Some(Ok(peer)) = SHARED.get() {
                let mut guard = match peer.try_lock() {
                    Ok(guard) => guard,
                    Err(TryLockError::Poisoned(p)) => p.into_inner(),
                    // A test still holds it: QEMU dies with the process (PR_SET_PDEATHSIG)
                    // and the namespace with the next peer or topology built.
                    Err(TryLockError::WouldBlock) => return,
                };
                drop(guard.take());
            }
        }
        let shared = SHARED.get_or_init(|| {
            let peer = RxePeer::start(RxeConfig::default()).map_err(|e| e.to_string())?;
            // SAFETY: registers a plain function without arguments; it runs at exit.
            if unsafe { libc::atexit(stop_shared) } != 0 {
                eprintln!("xrdma-testnet: atexit failed; the Soft-RoCE peer outlives the tests");
            }
            Ok(Mutex::new(Some(peer)))
        });
        match shared {
            Ok(peer) => {
                let guard = peer.lock().unwrap_or_else(|p| p.into_inner());
                if guard.is_none() {
                    return Err(Error::Rxe("the shared Soft-RoCE peer was stopped".into()));
                }
                Ok(SharedRxePeer(guard))
            }
            Err(why) => Err(Error::Rxe(format!(
                "the shared Soft-RoCE peer did not start: {why}"
            ))),
        }
    }

    fn make_tap(&self, mtu: u32) -> Result<(), Error> {
        let ns = self.ns.name();
        let host = format!("{HOST_IP}/{PREFIX_LEN}");
        let mtu = mtu.to_string();
        for args in [
            &["-n", ns, "link", "set", "lo", "up"][..],
            &["-n", ns, "tuntap", "add", "dev", TAP, "mode", "tap"],
            &["-n", ns, "link", "set", TAP, "mtu", &mtu],
            &["-n", ns, "addr", "add", &host, "dev", TAP],
            &["-n", ns, "link", "set", TAP, "up"],
        ] {
            cmd::ip(args, &format!("setting up tap device {TAP} in {ns}"))?;
        }
        // IPv6 would only add router solicitations and DAD to the link.
        self.ns
            .set_net_sysctl(&format!("ipv6/conf/{TAP}/disable_ipv6"), "1", true)
    }

    fn boot(&mut self, config: &RxeConfig, kernel: &Kernel) -> Result<(), Error> {
        let started = Instant::now();
        std::fs::write(
            self.dir.join("initramfs.cpio"),
            initramfs::build(&kernel.release)?,
        )
        .map_err(|e| self.io("writing the initramfs", e))?;
        std::fs::write(
            self.dir.join("jobs").join(guest::AGENT),
            guest::agent_script(),
        )
        .map_err(|e| self.io("writing the guest agent", e))?;
        let launch = qemu::Launch {
            ns: &self.ns,
            dir: &self.dir,
            kernel: &kernel.image,
            memory_mib: config.memory_mib,
            mtu: config.mtu,
            tap: TAP,
            guest: format!("{GUEST_IP}/{PREFIX_LEN}"),
        };
        let (qemu, stream) = Qemu::start(&launch, config.accel, config.boot_timeout)?;
        self.qemu = Some(qemu);
        let control = Control::new(stream)?;
        let left = config.boot_timeout.saturating_sub(started.elapsed());
        let state = control.wait(left, |s| s.ready.is_some());
        let ready = state.ready.is_some();
        let problem = if state.closed && !ready {
            Some("QEMU exited before the guest was ready".to_owned())
        } else if !ready {
            Some(format!(
                "the guest was not ready after {:?} (QEMU runs it with {:?}{})",
                config.boot_timeout,
                self.accel(),
                if self.accel() == Accel::Kvm {
                    "; if KVM does not work here, try Accel::Tcg"
                } else {
                    ""
                }
            ))
        } else if state.port_state.as_deref() != Some("4: ACTIVE") {
            Some(format!("rxe0's port is {:?}, not ACTIVE", state.port_state))
        } else {
            match ipv4_gid(&state, GUEST_IP) {
                Some(index) => {
                    self.gid_index = index;
                    None
                }
                None => Some(format!(
                    "rxe0 has no RoCE v2 GID for {GUEST_IP}: {:?}",
                    state.gids
                )),
            }
        };
        drop(state);
        self.control = Some(control);
        if let Some(problem) = problem {
            return Err(Error::Rxe(self.report(&problem)));
        }
        self.boot_time = started.elapsed();
        Ok(())
    }

    /// Runs `command` (a `sh` command line) in the guest and waits for it; kills it and fails
    /// if it runs past `timeout`.
    ///
    /// # Errors
    /// [`Error::Rxe`] if the command cannot be handed over, runs past `timeout` (the message
    /// has its output so far) or the guest dies. A command that fails is not an error: see
    /// [`GuestOutput::status`].
    pub fn run(&self, command: &str, timeout: Duration) -> Result<GuestOutput, Error> {
        self.spawn(command)?.wait(timeout)
    }

    /// Starts `command` (a `sh` command line) in the guest, in its own session, and returns
    /// at once. The agent kills it after 15 minutes in any case; dropping the [`Job`] before
    /// it ends kills it sooner.
    ///
    /// # Errors
    /// [`Error::Rxe`] or [`Error::Io`] if the command cannot be written or handed over.
    pub fn spawn(&self, command: &str) -> Result<Job<'_>, Error> {
        let name = format!("j{}", COUNTER.fetch_add(1, Ordering::Relaxed));
        let script = self.dir.join("jobs").join(format!("{name}.sh"));
        std::fs::write(&script, format!("{command}\n"))
            .map_err(|e| self.io("writing a guest job", e))?;
        let started = Instant::now();
        self.control()?
            .send(&format!("run {name} {}", JOB_LIMIT.as_secs()))?;
        Ok(Job {
            peer: self,
            name,
            command: command.to_owned(),
            started,
            finished: false,
        })
    }

    /// Waits until a program in the guest listens on TCP `port`.
    ///
    /// # Errors
    /// [`Error::Rxe`] if none does within `timeout`.
    pub fn wait_guest_listening(&self, port: u16, timeout: Duration) -> Result<(), Error> {
        let out = self.run(
            &format!("while ! ss -Hltn 'sport = :{port}' | grep -q .; do sleep 0.05; done"),
            timeout,
        )?;
        if out.success() {
            Ok(())
        } else {
            Err(Error::Rxe(format!(
                "waiting for a listener on the guest's TCP port {port}: {}",
                out.output
            )))
        }
    }

    /// Waits until a program in the peer's namespace (the host side) listens on TCP `port`.
    ///
    /// # Errors
    /// [`Error::Rxe`] if none does within `timeout`.
    pub fn wait_host_listening(&self, port: u16, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let listening = self.ns.sh(&format!("ss -Hltn 'sport = :{port}'"))?;
            if !listening.trim().is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Rxe(format!(
                    "nothing listens on TCP port {port} in {} after {timeout:?}",
                    self.ns.name()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A [`Command`] that runs `program` on the host side, in the peer's namespace, where
    /// the tap device is the only link (`ip netns exec`).
    pub fn ns_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.ns.command(program)
    }

    /// The peer's network namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// The tap device in the namespace, the host side's link to the guest.
    pub fn tap(&self) -> &str {
        TAP
    }

    /// The host side's address, on [`tap`](Self::tap).
    pub fn host_ip(&self) -> Ipv4Addr {
        HOST_IP
    }

    /// The guest's address.
    pub fn guest_ip(&self) -> Ipv4Addr {
        GUEST_IP
    }

    /// The index of rxe0's RoCE v2 GID for [`guest_ip`](Self::guest_ip) (`-g` of rdma-core's
    /// programs in the guest).
    pub fn gid_index(&self) -> u32 {
        self.gid_index
    }

    /// The guest kernel's release, e.g. `6.1.0-57-amd64`.
    pub fn kernel_release(&self) -> &str {
        &self.release
    }

    /// How long [`start`](Self::start) took from launching QEMU to rxe0 ACTIVE.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// Whether QEMU runs the guest with KVM or TCG.
    pub fn accel(&self) -> Accel {
        self.qemu.as_ref().map_or(Accel::Tcg, Qemu::accel)
    }

    /// The guest's serial console so far (kernel messages, the agent's).
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    fn control(&self) -> Result<&Control, Error> {
        self.control
            .as_ref()
            .ok_or_else(|| Error::Rxe("the Soft-RoCE guest is not running".into()))
    }

    fn io(&self, what: &str, source: std::io::Error) -> Error {
        Error::Io {
            context: format!("{what} in {}", self.dir.display()),
            source,
        }
    }

    /// `problem`, with what the agent noted and the end of the console and QEMU logs.
    fn report(&self, problem: &str) -> String {
        let mut out = format!("Soft-RoCE peer {}: {problem}", self.ns.name());
        if let Some(control) = &self.control {
            let notes = control.state().notes.join("; ");
            if !notes.is_empty() {
                out.push_str(&format!("\nagent: {notes}"));
            }
        }
        for (what, file) in [("console", "console.log"), ("QEMU", "qemu.log")] {
            let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n");
            if !tail.trim().is_empty() {
                out.push_str(&format!("\n--- {what} (last lines) ---\n{tail}"));
            }
        }
        out
    }
}

impl Drop for RxePeer {
    fn drop(&mut self) {
        // Killing QEMU closes the control channel, which ends its reader thread.
        drop(self.qemu.take());
        if let Some(mut control) = self.control.take() {
            control.join();
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("xrdma-testnet: removing {}: {e}", self.dir.display());
        }
        // `ns` is deleted after this, by its own Drop.
    }
}

impl fmt::Debug for RxePeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RxePeer")
            .field("ns", &self.ns.name())
            .field("kernel", &self.release)
            .field("accel", &self.accel())
            .field("gid_index", &self.gid_index)
            .finish()
    }
}

/// The shared peer of [`RxePeer::shared`], locked for the caller; dereferences to the
/// [`RxePeer`].
pub struct SharedRxePeer(MutexGuard<'static, Option<RxePeer>>);

impl std::ops::Deref for SharedRxePeer {
    type Target = RxePeer;

    fn deref(&self) -> &RxePeer {
        // `shared` hands out guards only while the peer is there, and only the exit handler,
        // which waits for the lock, takes it away.
        self.0.as_ref().expect("the shared peer is running")
    }
}

/// A command running in the guest, from [`RxePeer::spawn`].
pub struct Job<'p> {
    peer: &'p RxePeer,
    name: String,
    command: String,
    started: Instant,
    finished: bool,
}

impl Job<'_> {
    /// Waits for the command to end and returns its output; kills it and fails if it runs
    /// past `timeout`.
    ///
    /// # Errors
    /// [`Error::Rxe`] if it runs past `timeout` (the message holds its output so far) or the
    /// guest dies meanwhile.
    pub fn wait(mut self, timeout: Duration) -> Result<GuestOutput, Error> {
        let control = self.peer.control()?;
        let name = self.name.clone();
        let status = control
            .wait(timeout, |s| s.done.contains_key(&name))
            .done
            .get(&name)
            .copied();
        let status = match status {
            Some(status) => status,
            None if control.state().closed => {
                self.finished = true;
                return Err(Error::Rxe(
                    self.peer
                        .report(&format!("QEMU exited while `{}` ran", self.command)),
                ));
            }
            None => {
                self.finished = true;
                let _ = control.send(&format!("kill {name}"));
                let ended = control
                    .wait(KILL_GRACE, |s| s.done.contains_key(&name))
                    .done
                    .contains_key(&name);
                return Err(Error::Rxe(format!(
                    "`{}` still ran in the Soft-RoCE guest after {timeout:?}; {}. \
                     Its output:\n{}",
                    self.command,
                    if ended {
                        "killed it"
                    } else {
                        "it did not end when killed"
                    },
                    self.output()
                )));
            }
        };
        self.finished = true;
        Ok(GuestOutput {
            status,
            output: self.output(),
            elapsed: self.started.elapsed(),
        })
    }

    /// The command line.
    pub fn command(&self) -> &str {
        &self.command
    }

    fn output(&self) -> String {
        let path = self
            .peer
            .dir
            .join("jobs")
            .join(format!("{}.out", self.name));
        std::fs::read_to_string(path).unwrap_or_default()
    }
}

impl Drop for Job<'_> {
    fn drop(&mut self) {
        if !self.finished {
            if let Ok(control) = self.peer.control() {
                let _ = control.send(&format!("kill {}", self.name));
            }
        }
    }
}

/// The guest's kernel image.
struct Kernel {
    image: PathBuf,
    release: String,
}

/// The newest `/boot/vmlinuz-6.1.*` whose modules are installed.
fn find_kernel() -> Result<Kernel, Error> {
    let missing = || {
        Error::Rxe(
            "no Debian 6.1 kernel for the Soft-RoCE guest: /boot/vmlinuz-6.1.* with its \
             /lib/modules/6.1.*/ is needed (apt-get install linux-image-amd64 on Debian 12; \
             scripts/setup.sh does)"
                .into(),
        )
    };
    let entries = std::fs::read_dir("/boot").map_err(|_| missing())?;
    let mut releases: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let release = name.strip_prefix("vmlinuz-")?.to_owned();
            release.starts_with("6.1.").then_some(release)
        })
        .filter(|r| {
            Path::new("/lib/modules")
                .join(r)
                .join("modules.dep")
                .exists()
        })
        .collect();
    releases.sort_by_key(|r| version_key(r));
    let release = releases.pop().ok_or_else(missing)?;
    Ok(Kernel {
        image: PathBuf::from(format!("/boot/vmlinuz-{release}")),
        release,
    })
}

/// `6.1.0-57-amd64` -> [6, 1, 0, 57]: sorts releases by their numbers.
fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// The guest runs this machine's programs: check the ones the agent and the tests need.
fn check_guest_userland() -> Result<(), Error> {
    let providers = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .any(|arch| {
            std::fs::read_dir(arch.path().join("libibverbs"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|f| f.file_name().to_string_lossy().starts_with("librxe-"))
        });
    if !providers {
        return Err(Error::Rxe(
            "no rxe provider for libibverbs (libibverbs/librxe-*.so): the Soft-RoCE guest runs \
             this machine's rdma-core; apt-get install ibverbs-providers rdma-core"
                .into(),
        ));
    }
    for (program, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("modprobe", "kmod"),
        ("rdma", "iproute2"),
        ("ss", "iproute2"),
        ("setsid", "util-linux"),
        ("timeout", "coreutils"),
    ] {
        if !in_path(program) {
            return Err(Error::Rxe(format!(
                "{program} not found, which the Soft-RoCE peer needs: apt-get install {package}"
            )));
        }
    }
    if !Path::new("/bin/busybox").exists() {
        return Err(Error::Rxe(
            "/bin/busybox not found, which the Soft-RoCE guest's initramfs needs: apt-get \
             install busybox-static"
                .into(),
        ));
    }
    Ok(())
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).exists()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(program).exists())
}

/// The RoCE v2 GID index of `ip` (`::ffff:a.b.c.d`, as sysfs writes it) among `state`'s.
fn ipv4_gid(state: &State, ip: Ipv4Addr) -> Option<u32> {
    let [a, b, c, d] = ip.octets();
    let want = format!("0000:0000:0000:0000:0000:ffff:{a:02x}{b:02x}:{c:02x}{d:02x}");
    state
        .gids
        .iter()
        .find(|(_, gid, kind)| *gid == want && kind == "RoCE v2")
        .map(|(index, _, _)| *index)
}

/// Removes the directories of peers whose process is gone (`<tmp>/xr-<pid>-rxe<n>`).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = pid_of_name(name) else {
            continue;
        };
        if name.contains("-rxe") && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guests_ipv4_gid_is_found_by_address_and_type() {
        let state = State {
            gids: vec![
                (
                    0,
                    "fe80:0000:0000:0000:5054:00ff:fe12:0002".into(),
                    "RoCE v2".into(),
                ),
                (
                    1,
                    "0000:0000:0000:0000:0000:ffff:c613:fe02".into(),
                    "IB/RoCE v1".into(),
                ),
                (
                    2,
                    "0000:0000:0000:0000:0000:ffff:c613:fe02".into(),
                    "RoCE v2".into(),
                ),
            ],
            ..State::default()
        };
        assert_eq!(ipv4_gid(&state, GUEST_IP), Some(2));
        assert_eq!(ipv4_gid(&state, HOST_IP), None);
    }

    #[test]
    fn kernel_releases_sort_by_number() {
        let mut r = vec!["6.1.0-9-amd64", "6.1.0-57-amd64", "6.1.0-10-amd64"];
        r.sort_by_key(|r| version_key(r));
        assert_eq!(r, ["6.1.0-9-amd64", "6.1.0-10-amd64", "6.1.0-57-amd64"]);
    }

    #[test]
    fn addresses_are_in_the_benchmarking_range() {
        for ip in [HOST_IP, GUEST_IP] {
            assert_eq!(
                u32::from(ip) & 0xfffe_0000,
                u32::from(Ipv4Addr::new(198, 18, 0, 0))
            );
        }
    }
}
