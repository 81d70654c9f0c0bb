//! The device context: one backend, the tables of objects on it, and progress.
//!
//! Progress (receiving, dispatching to QPs, flushing transmits) happens in three places:
//! inline, when an application polls a CQ; in a thread waiting for a CQ event, which sleeps
//! on the backend's descriptor as well as its channel's and makes the progress that brings
//! its event; and on a helper thread that spins briefly after activity and then sleeps on
//! the backend's descriptor and a wake-up eventfd, so an idle context burns no CPU. The
//! helper keeps out of the way while an application polls or waits that way, but not once
//! an application that polled stops: one that waits on memory for a peer's RDMA WRITE (as
//! perftest's ib_write_lat does) gets it written without polling, as from a NIC. Whoever
//! gets the backend's lock first does the work; the others return at once.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use super::Error;
use super::async_event::{AsyncQueue, Pending};
use super::channel::CompletionChannel;
use super::cq::{Cq, CqShared};
use super::device::{self, DeviceAttr, Gid, PortAttr};
use super::mr::Lkey;
use super::mr::MrTable;
use super::pd::Pd;
use super::qp::{Deadline, InPlaceSend, QpShared};
use super::srq::{Srq, SrqShared};
use super::txbuf::TxBufsShared;
use crate::engine::ud;
use crate::net::{FrameIo, LinkInfo, RxMeta};
use crate::rng::Rng;
use crate::wire::{BthPacket, Qpn, TransportClass};

/// An asynchronous event (`struct ibv_async_event`), naming the object it is about.
#[non_exhaustive]
pub enum AsyncEvent {
    /// A completion was lost because the CQ was full; the CQ is unusable
    /// (`IBV_EVENT_CQ_ERR`).
    CqErr(Cq),
    /// Fewer receives than the armed limit remain on the SRQ (`IBV_EVENT_SRQ_LIMIT_REACHED`);
    /// the limit is disarmed.
    SrqLimitReached(Srq),
}

/// Datagrams received per progress step.
const RX_BATCH: usize = 64;

/// How a context is set up.
#[derive(Debug, Clone)]
pub struct ContextConfig {
    /// Seed of the context's generator (QPNs, PSNs, keys); `None` draws one from the OS.
    pub seed: Option<u64>,
    /// Run a helper thread that makes progress while the application is not polling.
    pub progress_thread: bool,
    /// How long the helper thread keeps polling after the last activity before it sleeps.
    pub spin: Duration,
}

impl Default for ContextConfig {
    fn default() -> Self {
        ContextConfig {
            seed: None,
            progress_thread: true,
            spin: Duration::from_micros(50),
        }
    }
}

impl ContextConfig {
    /// The default configuration with a fixed seed, for reproducible runs.
    pub fn seeded(seed: u64) -> Self {
        ContextConfig {
            seed: Some(seed),
            ..ContextConfig::default()
        }
    }
}

/// The agent behind QP1, the General Services Interface (the connection manager's MADs).
///
/// A context hands it every UD SEND addressed to QP1 with the GSI Q_Key, and calls
/// [`poll`](Qp1Agent::poll) with the backend after each pass of progress and when
/// [`next_timeout`](Qp1Agent::next_timeout) comes, so that it sends what it owes and runs its
/// timers. Lock order: the backend is held during both calls; the agent must not call back
/// into the context's progress from them.
pub trait Qp1Agent: Send + Sync {
    /// A MAD arrived: the UD payload of a SEND to QP1, from `src_qp` at `meta.src`.
    fn receive(&self, now: Instant, meta: &RxMeta, src_qp: Qpn, payload: &[u8]);
    /// Sends what the agent owes and handles its due timers.
    fn poll(&self, now: Instant, io: &mut dyn FrameIo);
    /// When [`poll`](Qp1Agent::poll) is next needed for a timer, on the backend's clock.
    fn next_timeout(&self) -> Option<Instant>;
}

/// The Q_Key of QP1 (`IB_QP1_QKEY`): MADs with another are dropped.
pub const QP1_QKEY: u32 = 0x8001_0000;

/// Received datagrams dropped above the backend, by reason (the backend counts its own).
#[derive(Debug, Default)]
pub struct RxDrops {
    /// Not a transport xrdma handles yet, or malformed above the BTH.
    pub malformed: AtomicU64,
    /// Addressed to a QP that does not exist.
    pub no_qp: AtomicU64,
    /// The QP was not in a state that receives (RTR, RTS, SQD).
    pub qp_state: AtomicU64,
    /// Q_Key mismatch on a UD QP.
    pub bad_qkey: AtomicU64,
    /// No receive posted (UD drops, as hardware does).
    pub rq_empty: AtomicU64,
    /// To QP1 with another Q_Key than [`QP1_QKEY`], or while no agent serves QP1.
    pub qp1: AtomicU64,
}

pub(crate) struct ContextShared {
    pub(crate) io: Mutex<Box<dyn FrameIo>>,
    pub(crate) link: LinkInfo,
    pub(crate) device: DeviceAttr,
    pub(crate) port: PortAttr,
    pub(crate) rng: Mutex<Rng>,
    pub(crate) mrs: RwLock<MrTable>,
    pub(crate) qps: RwLock<HashMap<u32, Arc<QpShared>>>,
    pub(crate) cqs: RwLock<HashMap<u64, Weak<CqShared>>>,
    pub(crate) srqs: RwLock<HashMap<u64, Weak<SrqShared>>>,
    /// Send buffers inside the backend, by the lkey of their region.
    pub(crate) tx_bufs: RwLock<HashMap<Lkey, Weak<TxBufsShared>>>,
    /// In-place sends in flight, by backend buffer index.
    pub(crate) in_place: Mutex<HashMap<usize, InPlaceSend>>,
    pub(crate) async_events: AsyncQueue,
    pub(crate) drops: RxDrops,
    next_handle: AtomicU64,
    next_pd: AtomicU32,
    progress: Mutex<Option<ProgressThread>>,
    /// When the application last polled a CQ, in microseconds since `epoch`
    /// ([`NEVER_POLLED`] before it first does). While it polls, it drives progress itself
    /// and the helper thread keeps out of its way.
    app_polled_us: AtomicU64,
    /// When the application last polled a CQ or posted a send, in microseconds since
    /// `epoch` (see [`APP_LEAVING`]).
    app_active_us: AtomicU64,
    epoch: Instant,
    /// Application threads waiting for a CQ event in [`Context::get_cq_event`], which
    /// make progress themselves while they wait: the helper thread keeps out of their way.
    app_waiting: AtomicU32,
    /// The last pass of progress left RC transmits for the next (see `progress_for`).
    held_transmits: AtomicBool,
    /// The agent serving QP1, once one is set.
    qp1: RwLock<Option<Arc<dyn Qp1Agent>>>,
    /// The application's last CQ poll found completions (see [`APP_LEAVING`]).
    app_found: AtomicBool,
    /// Application threads inside `post_send` (see [`ContextShared::app_posting`]).
    app_posting: AtomicU32,
    /// A post left its frames for the next progress to flush (`after_post`, while the
    /// application polls); cleared by the flush. The helper thread does not go to sleep
    /// while it is set: see `progress_loop`.
    unflushed: AtomicBool,
}

/// An application thread inside `post_send`; dropping it notes when it left.
pub(crate) struct AppPosting<'a>(&'a ContextShared);

impl Drop for AppPosting<'_> {
    fn drop(&mut self) {
        let c = self.0;
        c.app_active_us
            .store(c.epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
        c.app_posting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A device context (`ibv_open_device`). Cloning gives another handle to the same context.
#[derive(Clone)]
pub struct Context {
    pub(crate) shared: Arc<ContextShared>,
}

impl Context {
    /// A context over an opened backend.
    pub fn new(io: Box<dyn FrameIo>, config: ContextConfig) -> Result<Context, Error> {
        let link = io.link().clone();
        let shared = Arc::new(ContextShared {
            device: device::device_attr(&link),
            port: device::port_attr(&link),
            io: Mutex::new(io),
            link,
            rng: Mutex::new(
                config
                    .seed
                    .map(Rng::seed_from_u64)
                    .unwrap_or_else(Rng::from_entropy),
            ),
            mrs: RwLock::new(MrTable::new()),
            qps: RwLock::new(HashMap::new()),
            cqs: RwLock::new(HashMap::new()),
            srqs: RwLock::new(HashMap::new()),
            tx_bufs: RwLock::new(HashMap::new()),
            in_place: Mutex::new(HashMap::new()),
            async_events: AsyncQueue::new().map_err(|e| {
                Error::Net(crate::net::NetError::Io(
                    "creating the async event queue",
                    e,
                ))
            })?,
            drops: RxDrops::default(),
            next_handle: AtomicU64::new(1),
            next_pd: AtomicU32::new(1),
            progress: Mutex::new(None),
            app_polled_us: AtomicU64::new(NEVER_POLLED),
            app_active_us: AtomicU64::new(NEVER_POLLED),
            epoch: Instant::now(),
            app_waiting: AtomicU32::new(0),
            held_transmits: AtomicBool::new(false),
            qp1: RwLock::new(None),
            app_found: AtomicBool::new(false),
            app_posting: AtomicU32::new(0),
            unflushed: AtomicBool::new(false),
        });
        if config.progress_thread {
            let thread = ProgressThread::start(&shared, config.spin)?;
            *shared.progress.lock() = Some(thread);
        }
        Ok(Context { shared })
    }

    /// What the backend's link is.
    pub fn link(&self) -> &LinkInfo {
        &self.shared.link
    }

    /// Device attributes (`ibv_query_device`).
    pub fn query_device(&self) -> &DeviceAttr {
        &self.shared.device
    }

    /// Attributes of port 1 (`ibv_query_port`); EINVAL for any other port.
    pub fn query_port(&self, port: u8) -> Result<&PortAttr, Error> {
        if port != 1 {
            return Err(Error::invalid("xrdma devices have one port, number 1"));
        }
        Ok(&self.shared.port)
    }

    /// GID `index` of port 1 (`ibv_query_gid`): the interface's addresses, IPv4 mapped.
    pub fn gid(&self, index: usize) -> Result<Gid, Error> {
        self.shared
            .link
            .addrs
            .get(index)
            .map(|ip| Gid::from_ip(*ip))
            .ok_or(Error::invalid("GID index past the table"))
    }

    /// Allocates a protection domain.
    pub fn alloc_pd(&self) -> Result<Pd, Error> {
        Ok(Pd::new(
            self.clone(),
            self.shared.next_pd.fetch_add(1, Ordering::Relaxed),
        ))
    }

    /// Creates a completion channel.
    pub fn create_comp_channel(&self) -> Result<Arc<CompletionChannel>, Error> {
        CompletionChannel::new()
            .map(Arc::new)
            .map_err(|e| Error::Net(crate::net::NetError::Io("creating a completion channel", e)))
    }

    /// Creates a completion queue of `cqe` entries, reporting to `channel` if given.
    pub fn create_cq(
        &self,
        cqe: u32,
        channel: Option<&Arc<CompletionChannel>>,
    ) -> Result<Cq, Error> {
        let id = self.shared.new_handle();
        let cq = Cq::new(self.clone(), id, cqe, channel.cloned())?;
        self.shared
            .cqs
            .write()
            .insert(id, Arc::downgrade(&cq.shared));
        Ok(cq)
    }

    /// Waits for the next event on `channel` (`ibv_get_cq_event`) and returns its CQ. The
    /// event must be acknowledged with [`Cq::ack_events`].
    pub fn get_cq_event(&self, channel: &CompletionChannel) -> Result<Cq, Error> {
        let shared = &self.shared;
        // Sends deferred to the next poll must not wait behind a blocked application.
        shared.flush()?;
        // Wait on the backend too, and make progress on every arrival and RC timer: the
        // packet that brings the event wakes this thread, not the helper thread first
        // (on a VM each wake-up costs tens of microseconds).
        let backend = shared.io.lock().as_raw_fd();
        shared.app_waiting.fetch_add(1, Ordering::SeqCst);
        let event = channel.get_event_driving(backend, &mut || {
            shared.progress();
            // In-place sends complete when the medium hands their buffers back, which
            // makes no descriptor readable (with zero-copy, some time after the kick).
            if !shared.in_place.lock().is_empty() {
                return 1;
            }
            shared.rc_poll_timeout()
        });
        shared.app_wait_end();
        let id =
            event.map_err(|e| Error::Net(crate::net::NetError::Io("waiting for a CQ event", e)))?;
        // The channel has counted the event as delivered to this CQ.
        let cq = shared.cqs.read().get(&id).and_then(Weak::upgrade);
        let shared = cq.ok_or(Error::invalid("the event's CQ no longer exists"))?;
        Ok(Cq { shared })
    }

    /// Descriptors [`Context::wait_driving`] watches at most.
    pub const MAX_WAIT_FDS: usize = 63;

    /// Sleeps until one of `fds` polls ready (their `revents` say which) or `timeout`
    /// passes, making the context's progress meanwhile, as [`Context::get_cq_event`] does:
    /// this thread handles what arrives and the RC timers, so the datagram that makes a
    /// descriptor ready (through a completion channel, say) wakes it without a hop through
    /// the helper thread. Returns how many of `fds` are ready (0: the timeout passed).
    /// At most [`Context::MAX_WAIT_FDS`] descriptors (EINVAL otherwise).
    pub fn wait_driving(
        &self,
        fds: &mut [libc::pollfd],
        timeout: Option<Duration>,
    ) -> std::io::Result<usize> {
        let shared = &self.shared;
        let _ = shared.flush();
        let deadline = timeout.map(|t| Instant::now() + t);
        if fds.len() > Self::MAX_WAIT_FDS {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        let backend = shared.io.lock().as_raw_fd();
        let mut all = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; Self::MAX_WAIT_FDS + 1];
        let count = fds.len() + 1;
        shared.app_waiting.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            let rc = shared.rc_poll_timeout();
            let left = deadline.map(|d| {
                d.saturating_duration_since(Instant::now())
                    .as_micros()
                    .div_ceil(1000)
                    .min(i32::MAX as u128) as i32
            });
            let ms = match (left, rc) {
                (Some(l), r) if r >= 0 => l.min(r),
                (Some(l), _) => l,
                (None, r) => r,
            };
            all[..fds.len()].copy_from_slice(fds);
            all[fds.len()] = libc::pollfd {
                fd: backend,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `all` holds at least `count` live pollfds; poll writes only their
            // revents.
            let n = unsafe { libc::poll(all.as_mut_ptr(), count as libc::nfds_t, ms) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                break Err(e);
            }
            shared.progress();
            for (f, a) in fds.iter_mut().zip(&all) {
                f.revents = a.revents;
            }
            let ready = fds.iter().filter(|f| f.revents != 0).count();
            if ready > 0 {
                break Ok(ready);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break Ok(0);
            }
        };
        shared.app_wait_end();
        result
    }

    /// Waits for the next asynchronous event (`ibv_get_async_event`); with O_NONBLOCK set
    /// on [`Context::async_fd`], returns EAGAIN at once when there is none. Events about
    /// objects destroyed meanwhile are skipped.
    pub fn get_async_event(&self) -> Result<AsyncEvent, Error> {
        let shared = &self.shared;
        loop {
            let pending = shared.async_events.take().map_err(|e| {
                Error::Net(crate::net::NetError::Io("waiting for an async event", e))
            })?;
            let event = match pending {
                Pending::CqErr(id) => shared
                    .cqs
                    .read()
                    .get(&id)
                    .and_then(Weak::upgrade)
                    .map(|shared| AsyncEvent::CqErr(Cq { shared })),
                Pending::SrqLimit(id) => shared
                    .srqs
                    .read()
                    .get(&id)
                    .and_then(Weak::upgrade)
                    .map(|shared| AsyncEvent::SrqLimitReached(Srq { shared })),
            };
            if let Some(event) = event {
                return Ok(event);
            }
        }
    }

    /// The descriptor that polls readable while asynchronous events wait
    /// (`ibv_context.async_fd`).
    pub fn async_fd(&self) -> std::os::fd::RawFd {
        self.shared.async_events.as_raw_fd()
    }

    /// The backend's counters.
    pub fn net_stats(&self) -> crate::net::NetStats {
        self.shared.io.lock().stats()
    }

    /// Drops counted above the backend.
    pub fn rx_drops(&self) -> &RxDrops {
        &self.shared.drops
    }

    /// Sets the agent that serves QP1 (the connection manager). Fails with EBUSY if one is
    /// set already.
    pub fn set_qp1_agent(&self, agent: Arc<dyn Qp1Agent>) -> Result<(), Error> {
        let mut slot = self.shared.qp1.write();
        if slot.is_some() {
            return Err(Error::Busy("QP1 already has an agent"));
        }
        *slot = Some(agent);
        drop(slot);
        self.shared.wake_helper();
        Ok(())
    }

    /// Removes the QP1 agent (MADs are then dropped and counted).
    pub fn clear_qp1_agent(&self) {
        self.shared.qp1.write().take();
    }

    /// Runs `f` with the backend, waiting for it if another thread makes progress now, and
    /// flushes after: for control traffic that must leave at once (the agent's MADs).
    pub fn with_backend<R>(&self, f: impl FnOnce(&mut dyn FrameIo, Instant) -> R) -> R {
        let mut io = self.shared.io.lock();
        let now = io.now();
        let r = f(&mut **io, now);
        let _ = self.shared.flush_io(&mut **io);
        drop(io);
        // The agent may have armed an earlier timer than the helper sleeps for.
        self.shared.wake_helper();
        r
    }

    /// Tells the context that the application stops polling its CQs for now, to wait on
    /// memory for a peer's RDMA WRITE, say. While it polls, posts leave their transmits
    /// to its next poll (so that back-to-back posts share one kick) and the helper thread
    /// leaves arrivals to it; now the transmits go out at once, as a NIC's doorbell would
    /// have sent them, and the helper thread takes what arrives from now on, as a NIC
    /// writes memory whether or not anyone polls. The next poll undoes it.
    pub fn stop_polling(&self) -> Result<(), Error> {
        let shared = &self.shared;
        shared.app_polled_us.store(NEVER_POLLED, Ordering::Relaxed);
        shared.app_active_us.store(NEVER_POLLED, Ordering::Relaxed);
        let r = shared.flush();
        // It may be sleeping on the application's behalf, away from the backend.
        shared.wake_helper();
        r
    }

    /// Runs one progress step on the calling thread: receives a batch, dispatches it,
    /// flushes transmits. Returns how many datagrams it handled; 0 also when another thread
    /// is making progress right now.
    pub fn progress(&self) -> usize {
        self.shared.progress()
    }
}

thread_local! {
    /// Set on a library's service thread (see [`mark_service_thread`]).
    static SERVICE_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as a library's service thread (rsockets' is one): it polls CQs
/// once per completion event, to act on them, not in a loop. Its polls drive progress as
/// any thread's do, but do not count as the application polling: while an application
/// polls, the helper thread leaves arrivals and transmits to it, and counting these polls
/// would have it wait up to a millisecond, each time, for polls that do not come.
pub fn mark_service_thread() {
    SERVICE_THREAD.set(true);
}

/// `app_polled_us` of a context whose application has not polled yet.
const NEVER_POLLED: u64 = u64::MAX;

/// While the application polled within this long, the helper thread does not compete with
/// it for the backend (on a machine with few cores the two would take turns on one).
const APP_POLLING: Duration = Duration::from_millis(1);

/// An application whose last CQ poll found nothing is waiting for something in a loop and
/// polls again: it takes what arrives itself, for [`APP_POLLING`]. One whose last poll
/// found completions may have gone to act on them, and one that waits on memory (for a
/// peer's RDMA WRITE, as perftest's ib_write_lat does) polls a CQ only for its own
/// sends' completions: once it has done nothing for this long, the helper thread handles
/// what arrives for it, as a NIC writes memory whether or not anyone polls.
const APP_LEAVING: Duration = Duration::from_micros(5);

/// How long the helper thread leaves the backend to an application polling in a loop before
/// it looks again: from `MIN_WATCH`, doubled while the application keeps polling, up to
/// `MAX_WATCH` (what a datagram may wait once an application that polled all along stops,
/// as long as before this look-again existed).
const MIN_WATCH: Duration = Duration::from_micros(10);
const MAX_WATCH: Duration = Duration::from_millis(1);

impl ContextShared {
    /// Progress on behalf of an application thread polling a CQ.
    pub(crate) fn progress_from_poll(&self) -> usize {
        if SERVICE_THREAD.get() {
            return self.progress_for(false);
        }
        let now = self.epoch.elapsed().as_micros() as u64;
        self.app_polled_us.store(now, Ordering::Relaxed);
        self.app_active_us.store(now, Ordering::Relaxed);
        self.progress_for(true)
    }

    /// A thread that waited for an event (having counted itself in `app_waiting`) is done
    /// waiting. The helper thread may have parked while threads waited: the last one out
    /// wakes it (only then, so that a ping-pong does not wake it at every event).
    pub(crate) fn app_wait_end(&self) {
        if self.app_waiting.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(t) = self.progress.lock().as_ref() {
                if t.parked.load(Ordering::SeqCst) {
                    t.wake();
                }
            }
        }
    }

    /// Notes that the application is posting a send, until the guard drops: it is busy,
    /// and polls again soon.
    pub(crate) fn app_posting(&self) -> AppPosting<'_> {
        self.app_posting.fetch_add(1, Ordering::Relaxed);
        AppPosting(self)
    }

    /// Records whether the application's CQ poll, after [`Self::progress_from_poll`], found
    /// completions.
    pub(crate) fn app_poll_found(&self, found: bool) {
        if SERVICE_THREAD.get() {
            return;
        }
        self.app_found.store(found, Ordering::Relaxed);
    }

    /// True while the application (which polled within [`APP_POLLING`]) takes what arrives
    /// itself: it is posting, its last poll found nothing, or it was busy within
    /// [`APP_LEAVING`]. False once it may have gone to wait on memory, and the helper
    /// thread should.
    fn app_takes_arrivals(&self) -> bool {
        self.app_posting.load(Ordering::Relaxed) > 0
            || !self.app_found.load(Ordering::Relaxed)
            || since(&self.app_active_us, self.epoch) < APP_LEAVING
    }

    /// How long the helper thread should keep out of the application's way: while the
    /// application polls, it drives progress itself.
    fn defer_to_app(&self) -> Option<Duration> {
        APP_POLLING
            .checked_sub(self.since_app_polled())
            .filter(|d| !d.is_zero())
    }

    /// True while the application polls its CQs, so that its next poll drives progress,
    /// flushes included. Not while one of its threads waits for a CQ event: that thread
    /// sleeps until something arrives, so a send posted meanwhile must go out at once.
    pub(crate) fn app_is_polling(&self) -> bool {
        self.app_waiting.load(Ordering::SeqCst) == 0 && self.since_app_polled() < APP_POLLING
    }

    /// After a post with the backend `io` held: rings the doorbell, unless the application
    /// is polling (its next poll does, and back-to-back sends share one kick). Then, if
    /// the helper thread sleeps with nothing to do, wakes it: the application may not
    /// poll again, and the send's timers are new.
    pub(crate) fn after_post(&self, io: &mut dyn FrameIo) -> Result<(), Error> {
        if !self.app_is_polling() {
            return self.flush_io(io);
        }
        // Set before looking at `asleep`, as the helper thread sets `asleep` before it
        // looks at this: either we see it asleep and wake it, or it sees the frames
        // waiting and does not sleep.
        self.unflushed.store(true, Ordering::SeqCst);
        if let Some(t) = self.progress.lock().as_ref() {
            if t.asleep.load(Ordering::SeqCst) {
                t.wake();
            }
        }
        Ok(())
    }

    /// Hands queued transmits to the medium.
    fn flush(&self) -> Result<(), Error> {
        self.flush_io(&mut **self.io.lock())
    }

    /// Hands `io`'s queued transmits (the backend, held) to the medium: nothing a post left
    /// is unflushed after.
    fn flush_io(&self, io: &mut dyn FrameIo) -> Result<(), Error> {
        self.unflushed.store(false, Ordering::SeqCst);
        Ok(io.flush()?)
    }

    /// Wakes the helper thread, if there is one, to recompute its sleep.
    fn wake_helper(&self) {
        if let Some(t) = self.progress.lock().as_ref() {
            t.wake();
        }
    }

    /// How long until the earliest timer (of an RC QP, or of the QP1 agent) is due, on the
    /// backend's clock, as a poll(2) timeout: milliseconds, rounded up; -1 when no timer
    /// runs.
    fn rc_poll_timeout(&self) -> i32 {
        self.rc_timeout().map_or(-1, |left| {
            left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        })
    }

    /// How long until the earliest timer (of an RC QP, or of the QP1 agent) is due, on the
    /// backend's clock; `None` when no timer runs.
    fn rc_timeout(&self) -> Option<Duration> {
        let rc = self
            .qps
            .read()
            .values()
            .filter(|q| q.is_rc())
            .filter_map(|q| q.rc_timeout())
            .min();
        let agent = self.qp1.read().as_ref().and_then(|a| a.next_timeout());
        let next = [rc, agent].into_iter().flatten().min()?;
        Some(next.saturating_duration_since(self.io.lock().now()))
    }

    /// How long ago the application last polled (`Duration::MAX` if it never has).
    fn since_app_polled(&self) -> Duration {
        since(&self.app_polled_us, self.epoch)
    }

    pub(crate) fn progress(&self) -> usize {
        self.progress_for(false)
    }

    /// One pass of progress. For a polling application (`app`), a pass that brings RC
    /// completions hands them over before the QP's transmits: those (its ACKs) wait for the
    /// next pass, which always sends. The application sees its completion a kick sooner,
    /// and a reply it posts meanwhile leaves with the ACK, ahead of it.
    fn progress_for(&self, app: bool) -> usize {
        let Some(mut io) = self.io.try_lock() else {
            return 0;
        };
        let hold = app && !self.held_transmits.load(Ordering::Relaxed);
        let mut handled = 0;
        let now = io.now();
        // A receive error leaves nothing to dispatch; the backend has counted what it could.
        let _ = io.recv(RX_BATCH, &mut |meta, packet| {
            handled += 1;
            self.dispatch(meta, packet, now);
        });
        // RC QPs: answer what arrived, resend what timed out, send what was posted.
        // Under the table's read lock, without taking QP references of our own: a QP being
        // destroyed waits for this, and its CQs and PD are free the moment it is gone.
        let mut held = false;
        // The clock as the QPs' timers keep it, read once for them all.
        let at = (now, Deadline::encode(Some(now)));
        for qp in self.qps.read().values().filter(|q| q.is_rc()) {
            held |= qp.rc_progress(self, &mut **io, at, hold);
        }
        self.held_transmits.store(held, Ordering::Relaxed);
        if let Some(agent) = self.qp1.read().as_ref() {
            agent.poll(now, &mut **io);
        }
        if !held {
            let _ = self.flush_io(&mut **io);
        }
        io.reserved_done(&mut |index| {
            if let Some(send) = self.in_place.lock().remove(&index) {
                send.qp.in_place_done(&send);
            }
        });
        handled
    }

    fn dispatch(&self, meta: &RxMeta, packet: &[u8], now: Instant) {
        let class = BthPacket::new_checked(packet)
            .ok()
            .and_then(|b| b.opcode().class());
        match class {
            Some(TransportClass::Ud) => match ud::parse(packet) {
                Ok(p) if p.header.dest_qp == Qpn::GSI => match self.qp1.read().as_ref() {
                    Some(agent) if p.header.qkey.value() == QP1_QKEY => {
                        agent.receive(now, meta, p.header.src_qp, p.payload)
                    }
                    _ => count(&self.drops.qp1),
                },
                Ok(p) => match self.qps.read().get(&p.header.dest_qp.value()) {
                    Some(qp) => qp.receive_ud(self, meta, &p, packet.len()),
                    None => count(&self.drops.no_qp),
                },
                Err(_) => count(&self.drops.malformed),
            },
            Some(TransportClass::Rc) => {
                let dest = BthPacket::new_checked(packet)
                    .map(|b| b.dest_qp().value())
                    .unwrap_or(0);
                match self.qps.read().get(&dest) {
                    Some(qp) if qp.is_rc() => qp.receive_rc(self, packet, now),
                    _ => count(&self.drops.no_qp),
                }
            }
            _ => count(&self.drops.malformed),
        }
    }

    pub(crate) fn new_handle(&self) -> u64 {
        self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn next_random(&self) -> u32 {
        self.rng.lock().next_u32()
    }
}

/// How long ago `stamp` (microseconds since `epoch`, or [`NEVER_POLLED`]) was; `Duration::MAX`
/// for never.
fn since(stamp: &AtomicU64, epoch: Instant) -> Duration {
    let at = stamp.load(Ordering::Relaxed);
    if at == NEVER_POLLED {
        return Duration::MAX;
    }
    let now = epoch.elapsed().as_micros() as u64;
    Duration::from_micros(now.saturating_sub(at))
}

pub(crate) fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Drop for ContextShared {
    fn drop(&mut self) {
        if let Some(t) = self.progress.get_mut().take() {
            t.stop();
        }
    }
}

/// The helper thread and how to stop it.
struct ProgressThread {
    stop: Arc<AtomicBool>,
    /// True while the thread sleeps until woken, because application threads wait for CQ
    /// events and make progress themselves.
    parked: Arc<AtomicBool>,
    /// True while the thread sleeps with nothing to do: until the backend is readable or
    /// an RC timer it knew of is due. A send the application leaves unflushed must wake it.
    asleep: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
    handle: Option<JoinHandle<()>>,
}

impl ProgressThread {
    fn start(shared: &Arc<ContextShared>, spin: Duration) -> Result<ProgressThread, Error> {
        // SAFETY: eventfd has no memory-safety preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::Net(crate::net::NetError::Io(
                "creating an eventfd",
                std::io::Error::last_os_error(),
            )));
        }
        // SAFETY: `fd` is new and owned by nothing else.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let stop = Arc::new(AtomicBool::new(false));
        let weak = Arc::downgrade(shared);
        let io_fd = shared.io.lock().as_raw_fd();
        let parked = Arc::new(AtomicBool::new(false));
        let asleep = Arc::new(AtomicBool::new(false));
        let (stop2, wake2, parked2, asleep2) =
            (stop.clone(), wake.clone(), parked.clone(), asleep.clone());
        let handle = thread::Builder::new()
            .name("xrdma-progress".into())
            .spawn(move || progress_loop(weak, io_fd, &wake2, &stop2, (&parked2, &asleep2), spin))
            .map_err(|_| Error::Full("cannot start the progress thread"))?;
        Ok(ProgressThread {
            stop,
            parked,
            asleep,
            wake,
            handle: Some(handle),
        })
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
        let _ = unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
        if let Some(h) = self.handle.take() {
            // The last reference may be dropped by the progress thread itself; it exits on
            // its own once it sees `stop`.
            if h.thread().id() != thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

/// Makes progress while there is work; after `spin` without any, sleeps until the backend
/// or the wake-up eventfd is readable. The backend's descriptor is level-triggered, so a
/// datagram that arrives while we decide to sleep still wakes us.
fn progress_loop(
    ctx: Weak<ContextShared>,
    io_fd: i32,
    wake: &OwnedFd,
    stop: &AtomicBool,
    (parked, asleep): (&AtomicBool, &AtomicBool),
    spin: Duration,
) {
    // Timeouts of a few microseconds (see `MIN_WATCH`) mean what they say: no 50 us of
    // timer slack on this thread's sleeps.
    // SAFETY: PR_SET_TIMERSLACK takes an integer and changes only the calling thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let mut last_work = Instant::now();
    let mut watch = MIN_WATCH;
    while !stop.load(Ordering::Acquire) {
        let Some(shared) = ctx.upgrade() else { return };
        // Park while threads wait for CQ events: they make progress themselves. Announce
        // it before looking, so that the last waiter to leave either is seen here or sees
        // `parked` and wakes us (an eventfd stays readable: a wake-up written before we
        // sleep is not lost).
        parked.store(true, Ordering::SeqCst);
        if shared.app_waiting.load(Ordering::SeqCst) > 0 {
            drop(shared);
            sleep_on(&[wake.as_raw_fd()], None, wake);
            parked.store(false, Ordering::SeqCst);
            continue;
        }
        parked.store(false, Ordering::SeqCst);
        if let Some(pause) = shared.defer_to_app() {
            if shared.app_takes_arrivals() {
                // The application polls in a loop and takes what arrives itself: look
                // again after `watch`, a longer while each time it is still at it, so that
                // one that polls all along costs this thread few wake-ups.
                drop(shared);
                sleep_on(&[wake.as_raw_fd()], Some(watch.min(pause)), wake);
                watch = (watch * 2).min(MAX_WATCH);
                continue;
            }
            // It has stopped polling, perhaps to wait on memory: sleep until a datagram
            // arrives for it or the pause ends (stopping ends it early).
            drop(shared);
            if !sleep_on(&[io_fd, wake.as_raw_fd()], Some(pause), wake) {
                continue;
            }
            let Some(shared) = ctx.upgrade() else { return };
            if shared.app_takes_arrivals() {
                // It came back meanwhile, and takes the datagram.
                continue;
            }
            if shared.progress() > 0 {
                watch = MIN_WATCH;
                last_work = Instant::now();
            } else {
                // The application holds the backend: not to spin on the readable
                // descriptor meanwhile, look again after `watch`.
                drop(shared);
                sleep_on(&[wake.as_raw_fd()], Some(watch), wake);
                watch = (watch * 2).min(MAX_WATCH);
            }
            continue;
        }
        let handled = shared.progress();
        drop(shared);
        if handled > 0 {
            last_work = Instant::now();
            continue;
        }
        if last_work.elapsed() < spin {
            std::hint::spin_loop();
            continue;
        }
        // Spin again only after real work: a wake-up that finds nothing goes back to sleep,
        // until the backend or the next RC timer needs us. Announce it first, then look
        // once more: a send posted before the announcement is flushed (and its timers
        // seen) here; one posted after it sees `asleep` and wakes us.
        asleep.store(true, Ordering::SeqCst);
        let Some(shared) = ctx.upgrade() else { return };
        if shared.progress() > 0 {
            asleep.store(false, Ordering::SeqCst);
            last_work = Instant::now();
            continue;
        }
        // A post that saw us awake left frames unflushed, and our progress just now may
        // have found the backend taken by that very post (it returns at once then):
        // look again rather than sleep on them.
        if shared.unflushed.load(Ordering::SeqCst) {
            asleep.store(false, Ordering::SeqCst);
            std::hint::spin_loop();
            continue;
        }
        let timeout = shared.rc_timeout();
        drop(shared);
        sleep_on(&[io_fd, wake.as_raw_fd()], timeout, wake);
        asleep.store(false, Ordering::SeqCst);
    }
}

/// Sleeps until one of `fds` is readable or `timeout` passes (`None`: no timeout), and
/// drains the wake-up eventfd if it was what woke us. True if a descriptor other than the
/// wake-up eventfd is readable.
fn sleep_on(fds: &[i32], timeout: Option<Duration>, wake: &OwnedFd) -> bool {
    let mut p = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 2];
    for (slot, fd) in p.iter_mut().zip(fds) {
        slot.fd = *fd;
    }
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds.len()` (at most 2) live pollfds; the descriptors stay open while the
    // context lives, and the context joins this thread before closing them. `ts_ptr` is
    // NULL or points at a live timespec; a NULL signal mask leaves the mask alone.
    unsafe {
        libc::ppoll(
            p.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            ts_ptr,
            std::ptr::null(),
        )
    };
    let fired = |q: &libc::pollfd| q.revents != 0;
    if p[..fds.len()]
        .iter()
        .any(|q| q.fd == wake.as_raw_fd() && fired(q))
    {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a live u64 from our non-blocking eventfd.
        let _ = unsafe { libc::read(wake.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
    p[..fds.len()]
        .iter()
        .any(|q| q.fd != wake.as_raw_fd() && fired(q))
}
