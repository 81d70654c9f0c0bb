//! The `xdp` backend: AF_XDP sockets with a UMEM of pinned frames, and our own XDP program.
//!
//! Opening an interface:
//! 1. creates an XSKMAP and loads our program (`program.rs`), which redirects Ethernet/IP/UDP frames to our
//!    port into the socket of the receiving queue and passes everything else to the kernel;
//! 2. attaches it through a BPF link (native driver hook where the driver has one, else the
//!    generic hook), so it is detached as soon as we close, crash included;
//! 3. binds one AF_XDP socket per receive queue, each with its own UMEM (zero-copy where the
//!    driver supports it, else copy mode), and puts it in the map.
//!
//! Frames are built here: Ethernet, IP and UDP headers around the transport packet, then the
//! ICRC. Next-hop MACs come from the kernel's route and neighbour tables (`next_hop.rs`).
//! Transmits go out on the first queue's socket.
//!
//! A UMEM frame is one page, so a datagram longer than a frame's room (a jumbo-frame link,
//! which RoCE needs for path MTU 4096) needs multi-buffer sockets (`XDP_USE_SG`, Linux 6.6):
//! - on transmit, each buffer is two adjacent frames written as one run of bytes; the part
//!   past the first frame moves up by the second frame's headroom and goes as a second
//!   descriptor;
//! - on receive, a datagram spanning frames is copied together before it is parsed.
//!
//! Where the kernel refuses multi-buffer, the link is used up to one frame's room.
//!
//! The kernel pins UMEM pages when the UMEM is registered, so no page of a frame in flight
//! can move. A frame's ownership is tracked by an owned token (`frames.rs`).

mod bpf;
mod frames;
mod next_hop;
mod program;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, TxQueue, Umem};

use self::frames::{Frame, TxSlot};
use self::next_hop::NextHops;
use super::netlink::Netlink;
use super::{
    BackendKind, FrameIo, IoMode, LinkInfo, NetError, NetStats, RxMeta, TxMeta, TxReservation,
    datagram,
};
use crate::wire::{
    self,
    ethernet::{EtherType, EthernetRepr, MacAddr},
    frame::{FrameRepr, IpRepr, IpVersion},
    icrc,
    ipv4::Ipv4Repr,
    ipv6::Ipv6Repr,
    udp::{ROCEV2_PORT, UdpRepr},
};

/// UMEM frame size: one page, the most the kernel allows.
const FRAME_SIZE: u32 = 4096;
/// Headroom the kernel reserves in front of each received frame (`XDP_PACKET_HEADROOM`).
const XDP_HEADROOM: u32 = 256;
/// Bytes of one frame a datagram can use: xsk-rs lays transmit frames out like received ones,
/// behind the same headroom.
const FRAME_ROOM: usize = (FRAME_SIZE - XDP_HEADROOM) as usize;
/// Frames one transmitted datagram may span on a multi-buffer socket: two, so that a RoCE
/// path MTU of 4096 fits.
const TX_SPAN_MAX: usize = 2;
/// Frames one received datagram may span before it is dropped as oversize: enough for a
/// 9000-byte jumbo frame, the most a sender on the link can put there.
const RX_FRAGS_MAX: usize = 3;
/// `xdp_desc.options`: more descriptors of the same datagram follow.
const XDP_PKT_CONTD: u32 = 1;
/// Frames queued for transmit before `send` flushes by itself.
const TX_BATCH: usize = 64;
/// How long a bind that finds its queue busy keeps trying (see `open_queue`).
const BUSY_RETRY: Duration = Duration::from_millis(500);

/// How to attach and bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Driver hook and zero-copy where possible, falling back to copy, then to the generic
    /// hook.
    #[default]
    Auto,
    /// Driver hook and zero-copy, or fail.
    ZeroCopy,
    /// Driver hook, copy mode.
    DriverCopy,
    /// Generic (skb) hook, copy mode: works on every device.
    Skb,
}

/// Configuration of the `xdp` backend.
#[derive(Debug, Clone)]
pub struct XdpConfig {
    /// Interface to bind.
    pub iface: String,
    /// UDP port whose frames we take (RoCEv2: 4791).
    pub port: u16,
    /// Attach and bind mode.
    pub mode: XdpMode,
    /// UMEM frames per queue (half receive, half transmit); a power of two.
    pub frames_per_queue: u32,
}

impl XdpConfig {
    /// Port 4791 on `iface`, automatic mode, 4096 frames per queue.
    pub fn new(iface: impl Into<String>) -> Self {
        XdpConfig {
            iface: iface.into(),
            port: ROCEV2_PORT,
            mode: XdpMode::Auto,
            frames_per_queue: 4096,
        }
    }
}

/// One AF_XDP socket with its UMEM and rings.
struct Queue {
    id: u32,
    // Rings before the UMEM: they hold the socket, which must go before the UMEM it uses.
    tx: TxQueue,
    rx: RxQueue,
    fill: FillQueue,
    comp: CompQueue,
    umem: Umem,
    /// Transmit buffers we own and may write.
    free: Vec<TxSlot>,
    /// Frames per transmit buffer: 2 on a multi-buffer socket, else 1.
    span: usize,
    /// Address of the first transmit buffer's head frame; buffer `i` is `span` frames on.
    tx_first_addr: usize,
    /// Multi-buffer: the frames of each transmit buffer that have come back, until all have.
    returning: Vec<[Option<Frame>; TX_SPAN_MAX]>,
    /// A received datagram whose descriptors have not all arrived, copied together.
    rx_partial: Vec<u8>,
    /// The datagram being gathered outgrew `rx_partial`: drop the rest of it.
    rx_oversize: bool,
    /// Written frames not yet on the transmit ring.
    pending: Vec<FrameDesc>,
    /// Frames on the transmit ring, not yet completed.
    in_flight: usize,
    /// Scratch for ring consumption, allocated once.
    scratch: Vec<FrameDesc>,
    /// Frames set aside for in-place sends (`FrameIo::reserve_tx`), by index; `None` while
    /// the kernel has one. Contiguous in the UMEM, from `reserved_first_addr` on.
    reserved: Vec<Option<Frame>>,
    reserved_first_addr: usize,
    /// How many reserved frames have been handed out.
    reserved_handed: usize,
    /// Reserved frames the kernel has given back, not yet reported.
    reserved_done: Vec<usize>,
    /// Entries in each ring.
    ring_size: u32,
    /// Bound in zero-copy mode.
    zero_copy: bool,
}

impl Queue {
    /// Moves completed transmit frames back to the free pool.
    fn reclaim(&mut self) {
        // SAFETY: the descriptors written into `scratch` come from this queue's UMEM's
        // completion ring; they are ours again once consumed.
        let n = unsafe { self.comp.consume(&mut self.scratch) };
        let reserved = self.reserved_first_addr
            ..self.reserved_first_addr + self.reserved.len() * FRAME_SIZE as usize;
        for i in 0..n {
            let desc = self.scratch[i];
            let frame = Frame::reclaimed(desc);
            if reserved.contains(&desc.addr()) {
                let index = (desc.addr() - reserved.start) / FRAME_SIZE as usize;
                self.reserved[index] = Some(frame);
                self.reserved_done.push(index);
            } else if self.span == 1 {
                self.free.push(TxSlot {
                    head: frame,
                    tail: None,
                });
            } else {
                self.give_back(frame);
            }
        }
        self.in_flight -= n.min(self.in_flight);
    }

    /// Multi-buffer: `frame` of a transmit buffer is ours again; once all of the buffer's
    /// are, it goes back to the free pool.
    fn give_back(&mut self, frame: Frame) {
        let index = (frame.addr() - self.tx_first_addr) / FRAME_SIZE as usize;
        let parts = &mut self.returning[index / self.span];
        parts[index % self.span] = Some(frame);
        if let [Some(_), Some(_)] = parts {
            let [head, tail] = std::mem::take(parts);
            self.free.push(TxSlot {
                head: head.expect("checked"),
                tail,
            });
        }
    }

    /// Queues transmit buffer `slot`, holding a `total`-byte frame (its part past the head
    /// frame already moved to the tail frame's data), for the transmit ring.
    fn queue_slot(&mut self, mut slot: TxSlot, total: usize) {
        let head_len = total.min(FRAME_ROOM);
        // SAFETY: the frame is ours until it goes on the ring below; only its length is set.
        unsafe { self.umem.data_mut(slot.head.desc_mut()) }
            .cursor()
            .set_pos(head_len);
        match slot.tail {
            Some(mut tail) if total > FRAME_ROOM => {
                slot.head.set_options(XDP_PKT_CONTD);
                // SAFETY: as for the head.
                unsafe { self.umem.data_mut(tail.desc_mut()) }
                    .cursor()
                    .set_pos(total - FRAME_ROOM);
                self.pending.push(slot.head.into_desc());
                self.pending.push(tail.into_desc());
            }
            Some(tail) => {
                // Not sent: it waits for the head to come back.
                slot.head.set_options(0);
                self.pending.push(slot.head.into_desc());
                self.give_back(tail);
            }
            None => self.pending.push(slot.head.into_desc()),
        }
    }

    /// Puts pending frames on the transmit ring and kicks the kernel.
    fn submit(&mut self) -> Result<(), NetError> {
        if !self.pending.is_empty() {
            // xsk-rs submits all or nothing, so offer only what the ring has room for, and
            // only whole datagrams.
            let room = self.tx.nb_free(self.pending.len() as u32) as usize;
            let mut count = room.min(self.pending.len());
            while count > 0 && self.pending[count - 1].options() & XDP_PKT_CONTD != 0 {
                count -= 1;
            }
            // SAFETY: every pending descriptor is a frame of this queue's UMEM that we
            // owned (a `Frame` consumed by `into_desc`), fully written, and not on any ring.
            let n = unsafe { self.tx.produce(&self.pending[..count]) };
            self.pending.drain(..n);
            self.in_flight += n;
        }
        if self.in_flight == 0 || !self.tx.needs_wakeup() {
            return Ok(());
        }
        // In copy mode each kick transmits at most a small batch (32 frames) synchronously,
        // so kick until the ring is drained; in zero-copy mode one kick starts the driver.
        let kicks = if self.zero_copy {
            1
        } else {
            self.ring_size / 32 + 1
        };
        for _ in 0..kicks {
            self.tx
                .wakeup()
                .map_err(NetError::io("waking the AF_XDP transmit path"))?;
            if self.tx.nb_free_exact() == self.ring_size {
                break;
            }
        }
        Ok(())
    }
}

/// The bytes of transmit buffer `slot`, from its head frame's data to its last frame's end.
///
/// # Safety
///
/// `slot` must be a transmit buffer of `umem`, owned by user space (not on any ring), and
/// nothing else may hold a reference into its frames while the slice lives.
unsafe fn slot_bytes<'a>(umem: &'a Umem, slot: &'a mut TxSlot) -> &'a mut [u8] {
    // SAFETY: the caller's contract: the frame is ours and unaliased.
    let mut head = unsafe { umem.data_mut(slot.head.desc_mut()) };
    let mut cursor = head.cursor();
    let capacity = cursor.buf_len();
    cursor.set_pos(capacity);
    let start = head.contents_mut().as_mut_ptr();
    let Some(tail) = &slot.tail else {
        // SAFETY: the head frame's data segment, ours as above, `capacity` bytes long.
        return unsafe { std::slice::from_raw_parts_mut(start, capacity) };
    };
    debug_assert_eq!(tail.addr(), slot.head.addr() + FRAME_SIZE as usize);
    // SAFETY: the tail frame is the UMEM frame right after the head (buffers are built from
    // adjacent frames in `open_queue`, checked above), so the head's data segment, the tail's
    // headroom and its data segment are one mapping; both frames are ours by the caller's
    // contract.
    unsafe { std::slice::from_raw_parts_mut(start, capacity + FRAME_SIZE as usize) }
}

/// xrdma's XDP program attached to one interface, with the XSKMAP it redirects into.
///
/// [`XdpIo`] uses one; it is public for callers that bind AF_XDP sockets of their own (a
/// bare-socket benchmark, say) and want the same steering: UDP to `port` goes to the socket
/// in the receiving queue's slot, everything else to the kernel. Detached on drop.
pub struct XdpRedirect {
    // The link first: dropping it detaches the program before anything else goes.
    _link: OwnedFd,
    _prog: OwnedFd,
    map: OwnedFd,
    mode: XdpMode,
}

impl XdpRedirect {
    /// Attaches the program for UDP port `port` to interface `ifindex` (named `iface` in
    /// errors), with room for `queues` sockets. Returns the mode it got: in
    /// [`XdpMode::Auto`], `Auto` means the driver hook and `Skb` the generic one.
    pub fn attach(
        iface: &str,
        ifindex: u32,
        queues: u32,
        port: u16,
        mode: XdpMode,
    ) -> Result<Self, NetError> {
        let map = bpf::create_xskmap(queues).map_err(|e| {
            if is_errno(&e, libc::EPERM) {
                NetError::NotPermitted(
                    "AF_XDP needs CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW: run as root, or use the udp backend".into(),
                )
            } else {
                NetError::Io("creating the XSKMAP", e)
            }
        })?;
        // The program reads only the headers, which are in the first buffer, so it is marked
        // as multi-buffer capable: a driver then attaches it to a jumbo-frame link too.
        // Kernels before 5.18 do not know the flag; they get the program without it.
        let insns = program::redirect_udp_port(port, map.as_raw_fd());
        let prog = bpf::load_xdp_program(&insns, true)
            .or_else(|e| match e.raw_os_error() {
                Some(libc::EINVAL) => bpf::load_xdp_program(&insns, false),
                _ => Err(e),
            })
            .map_err(NetError::io("loading the XDP program"))?;
        let (link, mode) = attach(&prog, ifindex, iface, mode)?;
        Ok(XdpRedirect {
            _link: link,
            _prog: prog,
            map,
            mode,
        })
    }

    /// The mode the program was attached in.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Steers frames received on `queue` to the AF_XDP socket `xsk_fd`.
    pub fn insert(&self, queue: u32, xsk_fd: RawFd) -> Result<(), NetError> {
        bpf::xskmap_set(&self.map, queue, xsk_fd)
            .map_err(NetError::io("adding the socket to the XSKMAP"))
    }
}

/// An AF_XDP endpoint on one interface.
pub struct XdpIo {
    // Declared first so the program is detached before the sockets close.
    _redirect: XdpRedirect,
    queues: Vec<Queue>,
    epoll: OwnedFd,
    next_hops: NextHops,
    link: LinkInfo,
    stats: NetStats,
}

fn is_errno(err: &io::Error, errno: i32) -> bool {
    err.raw_os_error() == Some(errno)
}

/// The errno inside an xsk-rs error, if it carries one.
fn xsk_errno(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    err.source()
        .and_then(|s| s.downcast_ref::<io::Error>())
        .and_then(|e| e.raw_os_error())
}

impl XdpIo {
    /// Binds `config.iface`. Must be called on a thread in the interface's network namespace.
    pub fn open(config: &XdpConfig) -> Result<Self, NetError> {
        if !config.frames_per_queue.is_power_of_two() || config.frames_per_queue < 64 {
            return Err(NetError::InvalidConfig(
                "frames_per_queue must be a power of two >= 64".into(),
            ));
        }
        let mut netlink = Netlink::open().map_err(NetError::io("opening rtnetlink"))?;
        let info = netlink
            .link_by_name(&config.iface)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => NetError::NoSuchInterface(config.iface.clone()),
                _ => NetError::Io("querying the interface", e),
            })?;
        let addrs: Vec<IpAddr> = netlink
            .addresses(info.index)
            .map_err(NetError::io("listing addresses"))?
            .into_iter()
            .map(|(ip, _)| ip)
            .collect();

        let redirect = XdpRedirect::attach(
            &config.iface,
            info.index,
            info.num_rx_queues,
            config.port,
            auto_mode_for(&info, config.mode),
        )?;
        let attach_mode = redirect.mode();

        // Frames longer than one UMEM frame need multi-buffer sockets, which span a datagram
        // over several frames.
        let multi_buffer = info.mtu as usize + wire::ethernet::HEADER_LEN > FRAME_ROOM;
        let queue_ids: Vec<u32> = (0..info.num_rx_queues.max(1)).collect();
        let mut queues = Vec::with_capacity(queue_ids.len());
        let mut zero_copy = true;
        for &id in &queue_ids {
            // The kernel allocates queues it does not use (veth: one per CPU, one active by
            // default); binding past the active ones fails with EINVAL.
            let (queue, zc) = match open_queue(config, id, attach_mode, multi_buffer) {
                Ok(q) => q,
                Err(e) if id > 0 && e.errno() == libc::EINVAL => break,
                Err(e) => return Err(e),
            };
            zero_copy &= zc;
            redirect.insert(id, queue.rx.fd().as_raw_fd())?;
            queues.push(queue);
        }
        let epoll = epoll_over(&queues)?;

        let mode = match (attach_mode, zero_copy) {
            (XdpMode::Skb, _) => IoMode::SkbCopy,
            (_, true) => IoMode::ZeroCopy,
            (_, false) => IoMode::DriverCopy,
        };
        // What one transmit buffer holds; a multi-buffer socket refused by an older kernel
        // leaves one frame, and the link's MTU is used only up to it.
        let span = queues.iter().map(|q| q.span).min().unwrap_or(1);
        let max_frame = (span * FRAME_ROOM) as u32;
        let link = LinkInfo {
            backend: BackendKind::Xdp,
            mode,
            iface: info.name.clone(),
            ifindex: info.index,
            mac: Some(MacAddr(info.mac)),
            mtu: info.mtu.min(max_frame - wire::ethernet::HEADER_LEN as u32),
            addrs: addrs.clone(),
            port: config.port,
            queues: queues.len() as u32,
        };
        Ok(XdpIo {
            _redirect: redirect,
            queues,
            epoll,
            next_hops: NextHops::new(netlink, info.index, addrs),
            link,
            stats: NetStats::default(),
        })
    }
}

/// Attaches `prog` in the requested mode; in `Auto`, the driver hook first, then generic.
fn attach(
    prog: &OwnedFd,
    ifindex: u32,
    iface: &str,
    mode: XdpMode,
) -> Result<(OwnedFd, XdpMode), NetError> {
    let busy = |e: io::Error| {
        if is_errno(&e, libc::EBUSY) || is_errno(&e, libc::EEXIST) {
            NetError::InvalidConfig(format!(
                "{iface} already has an XDP program attached (another xrdma process on it?)"
            ))
        } else if is_errno(&e, libc::EPERM) {
            NetError::NotPermitted("attaching XDP programs needs CAP_NET_ADMIN".into())
        } else {
            NetError::Unsupported(format!("attaching XDP to {iface}: {e}"))
        }
    };
    match mode {
        XdpMode::Skb => bpf::attach_xdp(prog, ifindex, bpf::XDP_FLAGS_SKB_MODE)
            .map(|l| (l, XdpMode::Skb))
            .map_err(busy),
        XdpMode::ZeroCopy | XdpMode::DriverCopy => {
            bpf::attach_xdp(prog, ifindex, bpf::XDP_FLAGS_DRV_MODE)
                .map(|l| (l, mode))
                .map_err(busy)
        }
        XdpMode::Auto => match bpf::attach_xdp(prog, ifindex, bpf::XDP_FLAGS_DRV_MODE) {
            Ok(l) => Ok((l, XdpMode::Auto)),
            Err(e)
                if is_errno(&e, libc::EBUSY)
                    || is_errno(&e, libc::EEXIST)
                    || is_errno(&e, libc::EPERM) =>
            {
                Err(busy(e))
            }
            Err(_) => bpf::attach_xdp(prog, ifindex, bpf::XDP_FLAGS_SKB_MODE)
                .map(|l| (l, XdpMode::Skb))
                .map_err(busy),
        },
    }
}

/// The mode to attach in on `link` when `mode` is asked for: [`XdpMode::Auto`] on a veth
/// device means the generic hook. veth's native hook copies each frame into an XDP buffer
/// in a NAPI poll behind a ring, on top of the copy into the socket, and AF_XDP on veth is
/// copy mode either way; the generic hook measured 7-15% more throughput and lower latency
/// (`xrdma perf`, rc-write-bw, rc-send-bw, rc-send-lat, between two namespaces).
fn auto_mode_for(link: &super::netlink::LinkInfo, mode: XdpMode) -> XdpMode {
    match mode {
        XdpMode::Auto if link.kind.as_deref() == Some("veth") => XdpMode::Skb,
        mode => mode,
    }
}

/// Creates the UMEM and socket of one queue and primes its fill ring; with `multi_buffer`,
/// asks for a socket whose datagrams may span frames, and settles for one whose do not.
/// Returns whether the socket is in zero-copy mode.
fn open_queue(
    config: &XdpConfig,
    id: u32,
    attach_mode: XdpMode,
    multi_buffer: bool,
) -> Result<(Queue, bool), NetError> {
    let frames = config.frames_per_queue;
    let ring = QueueSize::new(frames / 2).map_err(|e| NetError::InvalidConfig(e.to_string()))?;
    // The fill ring holds twice the receive frames (half the UMEM). The kernel publishes
    // its consumer index lazily: it may have taken every entry it peeked (and handed the
    // frames back to us through the RX ring) while the ring still shows them as unread.
    // Entries that look unread are then at most that peeked batch plus what we produced
    // since, each at most the receive frames, so twice them always leaves room for a frame
    // coming back. A fill ring the size of the receive frames ran full under load.
    let fill_ring = QueueSize::new(frames).map_err(|e| NetError::InvalidConfig(e.to_string()))?;
    let umem_config = UmemConfig::builder()
        .frame_size(FrameSize::new(FRAME_SIZE).map_err(|e| NetError::InvalidConfig(e.to_string()))?)
        .fill_queue_size(fill_ring)
        .comp_queue_size(ring)
        .build()
        .map_err(|e| NetError::InvalidConfig(e.to_string()))?;
    let (umem, descs) = Umem::new(
        umem_config,
        std::num::NonZeroU32::new(frames).expect("checked >= 64"),
        false,
    )
    .map_err(|e| match xsk_errno(&e) {
        Some(libc::ENOMEM) | Some(libc::EPERM) => NetError::NotPermitted(format!(
            "registering a {} KiB UMEM failed ({e}): raise RLIMIT_MEMLOCK or run as root",
            frames as usize * FRAME_SIZE as usize / 1024
        )),
        _ => NetError::Io("creating the UMEM", io::Error::other(e.to_string())),
    })?;
    let iface: Interface = config
        .iface
        .parse()
        .map_err(|_| NetError::InvalidConfig(format!("bad interface name {:?}", config.iface)))?;

    let modes: &[BindFlags] = match attach_mode {
        XdpMode::Skb | XdpMode::DriverCopy => &[BindFlags::XDP_COPY],
        XdpMode::ZeroCopy => &[BindFlags::XDP_ZEROCOPY],
        XdpMode::Auto => &[BindFlags::XDP_ZEROCOPY, BindFlags::XDP_COPY],
    };
    let tries: Vec<BindFlags> = modes
        .iter()
        .flat_map(|&mode| {
            let sg = multi_buffer.then_some(mode | BindFlags::XDP_USE_SG);
            sg.into_iter().chain([mode])
        })
        .collect();
    // The kernel frees a closed socket's hold on its queue in deferred work, so a queue that
    // a process released a moment ago can still say EBUSY: retry that for a short while.
    let busy_until = Instant::now() + BUSY_RETRY;
    let mut last_err = None;
    'bind: loop {
        for &bind in &tries {
            let socket_config = SocketConfig::builder()
                .rx_queue_size(ring)
                .tx_queue_size(ring)
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .bind_flags(bind | BindFlags::XDP_USE_NEED_WAKEUP)
                .build();
            // SAFETY: this UMEM is new and not shared, so the (interface, queue) pair is not
            // already bound through it; the program-load inhibit flag is set in any case.
            match unsafe { xsk_rs::Socket::new(socket_config, &umem, &iface, id) } {
                Ok((tx, rx, Some((mut fill, comp)))) => {
                    let half = frames as usize / 2;
                    // SAFETY: the first half of the fresh UMEM's frames go to the fill ring and
                    // are never touched by us until the RX ring returns them.
                    let filled = unsafe { fill.produce(&descs[..half]) };
                    if filled != half {
                        return Err(NetError::Io(
                            "priming the fill ring",
                            io::Error::other("fill ring too small"),
                        ));
                    }
                    // A quarter of the frames transmit through the free pool, in buffers of
                    // `span` adjacent frames; the last quarter stays aside for in-place
                    // sends (`reserve_tx`), a frame each.
                    let quarter = frames as usize / 4;
                    let span = if bind.contains(BindFlags::XDP_USE_SG) {
                        TX_SPAN_MAX
                    } else {
                        1
                    };
                    let free = descs[half..half + quarter]
                        .chunks_exact(span)
                        .map(|pair| TxSlot {
                            head: Frame::reclaimed(pair[0]),
                            tail: pair.get(1).map(|d| Frame::reclaimed(*d)),
                        })
                        .collect::<Vec<_>>();
                    let returning = if span > 1 {
                        (0..free.len()).map(|_| Default::default()).collect()
                    } else {
                        Vec::new()
                    };
                    let reserved: Vec<Option<Frame>> = descs[half + quarter..]
                        .iter()
                        .map(|d| Some(Frame::reclaimed(*d)))
                        .collect();
                    let reserved_first_addr = descs[half + quarter].addr();
                    let queue = Queue {
                        id,
                        tx,
                        rx,
                        fill,
                        comp,
                        umem,
                        free,
                        span,
                        tx_first_addr: descs[half].addr(),
                        returning,
                        rx_partial: Vec::with_capacity(RX_FRAGS_MAX * FRAME_ROOM),
                        rx_oversize: false,
                        pending: Vec::with_capacity(half),
                        in_flight: 0,
                        scratch: vec![FrameDesc::default(); half],
                        reserved_done: Vec::with_capacity(reserved.len()),
                        reserved,
                        reserved_first_addr,
                        reserved_handed: 0,
                        ring_size: frames / 2,
                        zero_copy: bind.contains(BindFlags::XDP_ZEROCOPY),
                    };
                    return Ok((queue, bind.contains(BindFlags::XDP_ZEROCOPY)));
                }
                Ok(_) => {
                    return Err(NetError::Io(
                        "binding the AF_XDP socket",
                        io::Error::other("no fill/completion rings"),
                    ));
                }
                Err(e) => last_err = Some(e),
            }
        }
        match &last_err {
            Some(e) if xsk_errno(e) == Some(libc::EBUSY) && Instant::now() < busy_until => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => break 'bind,
        }
    }
    let e = last_err.expect("at least one bind attempt");
    Err(match xsk_errno(&e) {
        Some(libc::EAFNOSUPPORT) => {
            NetError::Unsupported("AF_XDP sockets (the kernel lacks CONFIG_XDP_SOCKETS)".into())
        }
        Some(libc::EPERM) => {
            NetError::NotPermitted("AF_XDP sockets need CAP_NET_RAW: run as root".into())
        }
        Some(libc::EOPNOTSUPP) if attach_mode == XdpMode::ZeroCopy => {
            NetError::Unsupported(format!("zero-copy AF_XDP on {}", config.iface))
        }
        Some(libc::EBUSY) => {
            NetError::InvalidConfig(format!("queue {id} of {} is already bound", config.iface))
        }
        errno => NetError::Io(
            "binding the AF_XDP socket",
            errno
                .map(io::Error::from_raw_os_error)
                .unwrap_or_else(|| io::Error::other(e.to_string())),
        ),
    })
}

/// An epoll descriptor that is readable when any queue's socket has received frames.
fn epoll_over(queues: &[Queue]) -> Result<OwnedFd, NetError> {
    // SAFETY: epoll_create1 has no memory-safety preconditions.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(NetError::Io(
            "creating an epoll descriptor",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
    for q in queues {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: q.id as u64,
        };
        // SAFETY: both descriptors are open and `ev` is a live epoll_event.
        let rc =
            unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, q.rx.fd().as_raw_fd(), &mut ev) };
        if rc < 0 {
            return Err(NetError::Io(
                "adding a socket to epoll",
                io::Error::last_os_error(),
            ));
        }
    }
    Ok(epoll)
}

/// The frame headers of a datagram from `src` to `meta.dst` carrying `transport_len` bytes.
fn frame_repr(
    src_mac: MacAddr,
    hop: next_hop::Hop,
    meta: &TxMeta,
    transport_len: usize,
) -> Result<FrameRepr, NetError> {
    let udp = UdpRepr {
        src_port: meta.src_port,
        dst_port: meta.dst.port(),
        payload_len: transport_len + icrc::ICRC_LEN,
    };
    let ip_payload = udp.payload_len + wire::udp::HEADER_LEN;
    let (ip, ethertype) = match (hop.src, meta.dst.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => (
            IpRepr::V4(Ipv4Repr {
                src,
                dst,
                protocol: 17,
                payload_len: ip_payload,
                ttl: meta.ttl,
                tos: meta.tos,
                ident: 0,
                dont_frag: true,
            }),
            EtherType::Ipv4,
        ),
        (IpAddr::V6(src), IpAddr::V6(dst)) => (
            IpRepr::V6(Ipv6Repr {
                src,
                dst,
                next_header: 17,
                payload_len: ip_payload,
                hop_limit: meta.ttl,
                traffic_class: meta.tos,
                flow_label: 0,
            }),
            EtherType::Ipv6,
        ),
        _ => return Err(NetError::AddressFamily(meta.dst.ip())),
    };
    Ok(FrameRepr {
        eth: EthernetRepr {
            src: src_mac,
            dst: hop.mac,
            ethertype,
        },
        ip,
        udp,
    })
}

/// Writes the Ethernet/IP/UDP headers for a `transport_len`-byte transport packet at the
/// start of `buf` (the packet already follows them) and the ICRC after it; returns the
/// frame length.
fn finish_frame(
    buf: &mut [u8],
    src_mac: MacAddr,
    hop: next_hop::Hop,
    meta: &TxMeta,
    version: IpVersion,
    transport_len: usize,
) -> Result<usize, NetError> {
    let repr = frame_repr(src_mac, hop, meta, transport_len)?;
    let total = wire::frame::frame_header_len(version) + transport_len + icrc::ICRC_LEN;
    if total > buf.len() {
        return Err(NetError::TooLong {
            len: transport_len,
            max: buf.len() - (total - transport_len),
        });
    }
    wire::frame::emit_frame_headers(&repr, &mut buf[..total])
        .and_then(|_| wire::frame::seal_frame(&mut buf[..total], version))
        .map_err(|e| NetError::InvalidConfig(format!("building a frame: {e}")))?;
    Ok(total)
}

/// Checks a received frame and hands its transport packet to `deliver`, or counts why it
/// was dropped. Returns how many it delivered (0 or 1).
fn deliver_frame(
    stats: &mut NetStats,
    port: u16,
    frame: &[u8],
    deliver: &mut dyn FnMut(&RxMeta, &[u8]),
) -> usize {
    let f = match wire::frame::parse_frame(frame) {
        Ok(f) if f.udp.dst_port != port => {
            stats.rx_not_roce += 1;
            return 0;
        }
        Ok(f) => f,
        Err(e) => {
            stats.count_drop(e);
            return 0;
        }
    };
    if let Err(e) = datagram::check_transport(f.transport) {
        stats.count_drop(e);
        return 0;
    }
    let (src, dst) = match f.ip {
        IpRepr::V4(ip) => (IpAddr::V4(ip.src), IpAddr::V4(ip.dst)),
        IpRepr::V6(ip) => (IpAddr::V6(ip.src), IpAddr::V6(ip.dst)),
    };
    stats.rx_packets += 1;
    stats.rx_bytes += f.transport.len() as u64;
    deliver(
        &RxMeta {
            src: SocketAddr::new(src, f.udp.src_port),
            dst,
        },
        f.transport,
    );
    1
}

impl FrameIo for XdpIo {
    fn link(&self) -> &LinkInfo {
        &self.link
    }

    fn send(
        &mut self,
        meta: &TxMeta,
        write: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> Result<bool, NetError> {
        let hop = self.next_hops.get(meta.dst.ip())?;
        let src_mac = self.link.mac.expect("xdp links have a MAC");
        let ipv6 = meta.dst.is_ipv6();
        let max = self.link.max_transport_len(ipv6);
        let version = if ipv6 { IpVersion::V6 } else { IpVersion::V4 };
        let header_len = wire::frame::frame_header_len(version);
        let q = &mut self.queues[0];
        if q.free.is_empty() {
            q.reclaim();
            if q.free.is_empty() {
                q.submit()?;
                q.reclaim();
                if q.free.is_empty() {
                    self.stats.tx_full += 1;
                    return Ok(false);
                }
            }
        }
        let mut slot = q.free.pop().expect("checked non-empty");
        // SAFETY: the buffer's frames belong to this queue's UMEM and we own them (they came
        // off the free pool), so neither the kernel nor any other reference touches them.
        let buf = unsafe { slot_bytes(&q.umem, &mut slot) };
        // A datagram spanning two frames is written as one run of bytes from the head
        // frame's data on; its part past the head frame then moves up by the tail frame's
        // headroom, to where the tail descriptor starts. So the run may be that much longer
        // than what is sent.
        let capacity = buf.len() - (q.span - 1) * XDP_HEADROOM as usize;
        let room = max.min(capacity - header_len - icrc::ICRC_LEN);
        let len = write(&mut buf[header_len..header_len + room]);
        let result = if len > room {
            Err(NetError::TooLong { len, max: room })
        } else {
            finish_frame(&mut buf[..capacity], src_mac, hop, meta, version, len)
        };
        match result {
            Ok(total) => {
                if total > FRAME_ROOM {
                    buf.copy_within(FRAME_ROOM..total, FRAME_SIZE as usize);
                }
                q.queue_slot(slot, total);
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += len as u64;
                if q.pending.len() >= TX_BATCH {
                    q.submit()?;
                }
                Ok(true)
            }
            Err(e) => {
                q.free.push(slot);
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> Result<(), NetError> {
        for q in &mut self.queues {
            q.submit()?;
            q.reclaim();
        }
        Ok(())
    }

    fn recv(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&RxMeta, &[u8]),
    ) -> Result<usize, NetError> {
        let mut delivered = 0;
        let port = self.link.port;
        for q in &mut self.queues {
            if delivered >= max {
                break;
            }
            let want = (max - delivered).min(q.scratch.len());
            // SAFETY: descriptors come off this queue's RX ring, so they are frames of this
            // UMEM that the kernel has finished writing and handed to us.
            let n = unsafe { q.rx.consume(&mut q.scratch[..want]) };
            for desc in &q.scratch[..n] {
                // SAFETY: as above; we only read, and only until the frame goes back on the
                // fill ring below.
                let data = unsafe { q.umem.data(desc) };
                let bytes = data.contents();
                let more = desc.options() & XDP_PKT_CONTD != 0;
                if !more && q.rx_partial.is_empty() && !q.rx_oversize {
                    delivered += deliver_frame(&mut self.stats, port, bytes, deliver);
                    continue;
                }
                // A datagram spanning frames (multi-buffer) is copied together.
                if q.rx_partial.len() + bytes.len() > q.rx_partial.capacity() {
                    q.rx_oversize = true;
                    q.rx_partial.clear();
                }
                if !q.rx_oversize {
                    q.rx_partial.extend_from_slice(bytes);
                }
                if !more {
                    if q.rx_oversize {
                        self.stats.rx_oversize += 1;
                    } else {
                        delivered += deliver_frame(&mut self.stats, port, &q.rx_partial, deliver);
                    }
                    q.rx_partial.clear();
                    q.rx_oversize = false;
                }
            }
            if n > 0 {
                // SAFETY: the frames just consumed are done with and go back to the kernel;
                // the fill ring has room for them (see its size in `open_queue`).
                let refilled = unsafe { q.fill.produce(&q.scratch[..n]) };
                debug_assert_eq!(refilled, n);
            }
            if q.fill.needs_wakeup() {
                q.fill
                    .wakeup(q.rx.fd_mut(), 0)
                    .map_err(NetError::io("waking the AF_XDP receive path"))?;
            }
        }
        Ok(delivered)
    }

    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn reserve_tx(&mut self, count: usize) -> Result<Option<TxReservation>, NetError> {
        let q = &mut self.queues[0];
        let first = q.reserved_handed;
        if count == 0 || first + count > q.reserved.len() {
            return Err(NetError::InvalidConfig(format!(
                "{count} in-place transmit buffers asked for, {} left",
                q.reserved.len() - first
            )));
        }
        let Some(frame) = q.reserved[first].as_mut() else {
            return Err(NetError::InvalidConfig(
                "reserved frame in flight before it was handed out".into(),
            ));
        };
        // SAFETY: the frame is ours (not on any ring); we only take its address and size.
        let mut data = unsafe { q.umem.data_mut(frame.desc_mut()) };
        let mut cursor = data.cursor();
        let capacity = cursor.buf_len();
        cursor.set_pos(capacity);
        let base = data.contents_mut().as_mut_ptr() as usize;
        q.reserved_handed += count;
        Ok(Some(TxReservation {
            first,
            count,
            base,
            stride: FRAME_SIZE as usize,
            capacity,
        }))
    }

    fn send_reserved(
        &mut self,
        meta: &TxMeta,
        index: usize,
        transport_len: usize,
    ) -> Result<bool, NetError> {
        let hop = self.next_hops.get(meta.dst.ip())?;
        let src_mac = self.link.mac.expect("xdp links have a MAC");
        let version = if meta.dst.is_ipv6() {
            IpVersion::V6
        } else {
            IpVersion::V4
        };
        let max = self.link.max_transport_len(meta.dst.is_ipv6());
        if transport_len > max {
            return Err(NetError::TooLong {
                len: transport_len,
                max,
            });
        }
        let q = &mut self.queues[0];
        if index >= q.reserved_handed {
            return Err(NetError::InvalidConfig(format!(
                "no reserved transmit buffer {index}"
            )));
        }
        let Some(mut frame) = q.reserved[index].take() else {
            return Err(NetError::InvalidConfig(format!(
                "reserved transmit buffer {index} is still in flight"
            )));
        };
        // SAFETY: the frame is ours until submitted; the caller wrote the transport packet
        // and does not touch the buffer while we fill in the headers.
        let mut data = unsafe { q.umem.data_mut(frame.desc_mut()) };
        let mut cursor = data.cursor();
        let capacity = cursor.buf_len();
        cursor.set_pos(capacity);
        match finish_frame(
            data.contents_mut(),
            src_mac,
            hop,
            meta,
            version,
            transport_len,
        ) {
            Ok(total) => {
                data.cursor().set_pos(total);
                q.pending.push(frame.into_desc());
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += transport_len as u64;
                self.stats.tx_in_place += 1;
                if q.pending.len() >= TX_BATCH {
                    q.submit()?;
                }
                Ok(true)
            }
            Err(e) => {
                q.reserved[index] = Some(frame);
                Err(e)
            }
        }
    }

    fn reserved_done(&mut self, done: &mut dyn FnMut(usize)) {
        let q = &mut self.queues[0];
        q.reclaim();
        for index in q.reserved_done.drain(..) {
            done(index);
        }
    }

    fn stats(&self) -> NetStats {
        self.stats
    }
}
