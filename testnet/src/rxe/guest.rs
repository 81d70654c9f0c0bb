//! The two scripts the guest runs: `/init` in the initramfs (busybox), which mounts this
//! machine's root filesystem over virtio-9p and switches into it, and the agent that then
//! runs as PID 1 (Debian's `/bin/sh`), sets up rxe0 and runs the host's jobs.
//!
//! Kernel command line parameters the scripts read: `xrdma.ip=ADDR/LEN`, `xrdma.mtu=N`.
//! 9p mount tags: `hostroot` (`/`, read-only) and `xrdmajobs` (the peer's job directory).
//! The control channel is the virtio-serial port named [`CONTROL_PORT`].

/// Name of the virtio-serial port that carries the control protocol.
pub(crate) const CONTROL_PORT: &str = "org.xrdma.rxe.ctl";

/// Where the job directory is mounted in the guest.
pub(crate) const GUEST_JOBS: &str = "/run/xrdma-rxe/jobs";

/// The agent's file name in the job directory.
pub(crate) const AGENT: &str = "agent.sh";

/// `/init` of the initramfs. It loads the modules listed in `/modules` from `/mods` (virtio
/// PCI and 9p, overlayfs), builds the new root as a tmpfs overlay on the read-only 9p root and
/// starts the agent from the job directory as PID 1.
pub(crate) fn init_script() -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec > /dev/console 2>&1
say() {{ echo "xrdma-rxe-init: $*"; }}
say "started"
die() {{ say "$*"; poweroff -f; }}
while read -r m; do insmod "/mods/$m" || say "insmod $m failed"; done < /modules
nine="trans=virtio,version=9p2000.L,msize=262144"
mkdir -p /lower /upper /newroot
mount -t 9p -o "$nine,ro" hostroot /lower || die "cannot mount the host's root over 9p"
mount -t tmpfs -o size=256m tmpfs /upper
mkdir -p /upper/data /upper/work
if ! mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay /newroot
then
    say "no overlay: the root stays read-only, with /var in memory"
    mount --bind /lower /newroot
    mount -t tmpfs tmpfs /newroot/var
fi
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
mount -t tmpfs -o mode=755 tmpfs /newroot/run
mkdir -p /newroot{jobs}
mount -t 9p -o "$nine" xrdmajobs /newroot{jobs} || die "cannot mount the job directory"
for fs in dev proc sys; do mount --move /$fs /newroot/$fs; done
exec switch_root /newroot /bin/sh {jobs}/{agent}
"#,
        jobs = GUEST_JOBS,
        agent = AGENT,
    )
}

/// The agent, PID 1 after `switch_root`.
///
/// It loads the NIC, console and RDMA modules, gives eth0 its address, adds rxe0 on it, waits
/// until rxe0's port is ACTIVE and tells the host over the control port: a `gid INDEX GID
/// TYPE` line per GID, `state STATE`, then `ready RELEASE`. Then it reads commands:
///
/// - `run NAME SECONDS`: runs `NAME.sh` from the job directory with `sh`, in its own session,
///   output (both streams) to `NAME.out`, killed after SECONDS; answers `done NAME STATUS`.
/// - `kill NAME`: sends TERM to job NAME's process group, KILL three seconds later.
///
/// Lines starting `note` are messages for the host's error reports.
pub(crate) fn agent_script() -> String {
    format!(
        r#"#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
J={jobs}
say() {{ echo "xrdma-rxe-agent: $*" > /dev/console; }}
die() {{ say "$*"; echo o > /proc/sysrq-trigger; exit 1; }}
param() {{ tr ' ' '\n' < /proc/cmdline | sed -n "s/^xrdma\.$1=//p"; }}
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
hostname rxepeer
for m in virtio_net virtio_console rdma_rxe ib_uverbs rdma_ucm; do
    modprobe "$m" || say "modprobe $m failed"
done
port=
i=0
while [ -z "$port" ] && [ $i -lt 300 ]; do
    for f in /sys/class/virtio-ports/*/name; do
        [ "$(cat "$f" 2>/dev/null)" = {port} ] || continue
        dev=${{f%/name}}
        [ -c "/dev/${{dev##*/}}" ] && port=/dev/${{dev##*/}}
    done
    [ -n "$port" ] || sleep 0.1
    i=$((i + 1))
done
[ -n "$port" ] || die "no control port {port}"
exec 3<> "$port"
tell() {{ echo "$*" >&3; }}
ip link set lo up
ip link set eth0 mtu "$(param mtu)" up || tell "note cannot bring eth0 up"
ip addr add "$(param ip)" dev eth0 || tell "note cannot add $(param ip) to eth0"
rdma link add rxe0 type rxe netdev eth0 || tell "note rdma link add rxe0 failed"
ports=/sys/class/infiniband/rxe0/ports/1
i=0
while [ "$(cat $ports/state 2>/dev/null)" != "4: ACTIVE" ] && [ $i -lt 300 ]; do
    sleep 0.1
    i=$((i + 1))
done
for g in $ports/gids/*; do
    n=${{g##*/}}
    t=$(cat "$ports/gid_attrs/types/$n" 2>/dev/null) || continue
    tell "gid $n $(cat "$g") $t"
done
tell "state $(cat $ports/state 2>/dev/null)"
tell "ready $(uname -r)"
say "ready"
run_job() {{
    (cd /root 2>/dev/null || cd /; exec setsid timeout -k 3 "$2" sh "$J/$1.sh") \
        < /dev/null > "$J/$1.out" 2>&1 3>&- &
    echo $! > "$J/$1.pid"
    wait $!
    tell "done $1 $?"
}}
kill_job() {{
    # The job may have been started a moment ago: give run_job time to write its pid.
    i=0
    while [ ! -s "$J/$1.pid" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    p=$(cat "$J/$1.pid" 2>/dev/null) || return
    kill -TERM "-$p" 2>/dev/null
    sleep 3
    kill -KILL "-$p" 2>/dev/null
}}
while read -r verb name arg <&3; do
    case $verb in
        run) run_job "$name" "$arg" & ;;
        kill) kill_job "$name" 3>&- & ;;
        *) tell "note unknown command $verb" ;;
    esac
done
die "the control channel closed"
"#,
        jobs = GUEST_JOBS,
        port = CONTROL_PORT,
    )
}
