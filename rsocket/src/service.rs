//! The service thread: one per process, it makes the progress of sockets nobody is calling
//! into. It sleeps in `epoll` on the connection manager's event channel, shared by every
//! socket, and on the completion channel of every connection; it turns CM events into
//! connections made, accepted and lost, and completions into data and credits, reads
//! datagram sockets' UDP sockets (rsocket's `udp_svc`), and keeps
//! each socket's readiness descriptor up to date. It also finishes closing sockets whose
//! last handle was dropped with data still in flight, and sends keepalives when due.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use xrdma_verbs::cm::{Event, EventChannel, EventKind};

use crate::dgram::DgramInner;
use crate::listener::ListenerInner;
use crate::stream::StreamInner;

/// What a token names.
#[derive(Clone)]
pub(crate) enum Entry {
    Stream(Weak<StreamInner>),
    Listener(Weak<ListenerInner>),
    Datagram(Weak<DgramInner>),
}

pub(crate) struct Service {
    epoll: OwnedFd,
    /// The event channel of every socket's CM ids.
    pub(crate) channel: EventChannel,
    entries: Mutex<HashMap<u64, Entry>>,
    next_token: AtomicU64,
    /// Streams whose last handle is gone, kept until their close completes.
    closing: Mutex<Vec<Arc<StreamInner>>>,
    /// Wake-ups asked for by sockets (their keepalives), earliest first.
    timers: Mutex<BinaryHeap<Reverse<(Instant, u64)>>>,
    wake: OwnedFd,
}

/// Tokens of the channel and of the wake-up eventfd; sockets' start above.
const CHANNEL_TOKEN: u64 = 1;
const WAKE_TOKEN: u64 = 2;

/// How often closing sockets are looked at while they wait for their sends.
/// Set in the token of a timer that looks for the end of a socket's calls (see
/// [`Calls`](crate::shared::Calls)), rather than a keepalive's.
pub(crate) const QUIET_TIMER: u64 = 1 << 63;

const CLOSING_TICK: Duration = Duration::from_millis(5);

/// The process's service, started on first use.
/// See [`crate::wait_closing`].
pub(crate) fn wait_closing(limit: Duration) -> bool {
    let Some(Ok(svc)) = SERVICE.get() else {
        // No socket was ever made.
        return true;
    };
    let deadline = Instant::now() + limit;
    loop {
        if svc.closing.lock().is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // The service thread finishes the closes; it looks at them every CLOSING_TICK.
        std::thread::sleep(CLOSING_TICK);
    }
}

static SERVICE: OnceLock<Result<Service, i32>> = OnceLock::new();

pub(crate) fn service() -> io::Result<&'static Service> {
    let svc = SERVICE.get_or_init(|| {
        let svc = Service::new().map_err(|e| e.raw_os_error().unwrap_or(libc::ENOMEM))?;
        Ok(svc)
    });
    match svc {
        Ok(svc) => {
            static STARTED: OnceLock<io::Result<()>> = OnceLock::new();
            STARTED
                .get_or_init(|| {
                    std::thread::Builder::new()
                        .name("xrdma-rsocket".into())
                        .spawn(move || {
                            xrdma_verbs::verbs::mark_service_thread();
                            svc.run()
                        })
                        .map(|_| ())
                })
                .as_ref()
                .map_err(|e| io::Error::new(e.kind(), e.to_string()))?;
            Ok(svc)
        }
        Err(e) => Err(io::Error::from_raw_os_error(*e)),
    }
}

impl Service {
    fn new() -> io::Result<Service> {
        // SAFETY: no pointers; the result is checked.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        // SAFETY: as above.
        let wfd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if wfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        let wake = unsafe { OwnedFd::from_raw_fd(wfd) };
        let channel = EventChannel::new()?;
        channel.set_nonblocking(true)?;
        let svc = Service {
            epoll,
            channel,
            entries: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(16),
            closing: Mutex::new(Vec::new()),
            timers: Mutex::new(BinaryHeap::new()),
            wake,
        };
        svc.watch_fd(svc.channel.as_raw_fd(), CHANNEL_TOKEN, false)?;
        svc.watch_fd(svc.wake.as_raw_fd(), WAKE_TOKEN, false)?;
        Ok(svc)
    }

    /// A token for `entry`, under which its CM ids report (their `user` value) and its
    /// completion channel is watched.
    pub(crate) fn register(&self, entry: Entry) -> u64 {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.entries.lock().insert(token, entry);
        token
    }

    pub(crate) fn unregister(&self, token: u64) {
        self.entries.lock().remove(&token);
    }

    /// Watches a completion channel's descriptor for `token`. Edge-triggered: every event
    /// signalled wakes the thread once, whoever takes it.
    pub(crate) fn watch(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.watch_fd(fd, token, true)
    }

    /// Stops watching `fd` (before it is closed).
    pub(crate) fn unwatch(&self, fd: RawFd) {
        // SAFETY: a NULL event is allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
    }

    fn watch_fd(&self, fd: RawFd, token: u64, edge: bool) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | if edge { libc::EPOLLET } else { 0 }) as u32,
            u64: token,
        };
        // SAFETY: `ev` is a live epoll_event.
        let r =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Keeps `stream` until its close completes.
    pub(crate) fn linger(&self, stream: Arc<StreamInner>) {
        self.closing.lock().push(stream);
        self.wake();
    }

    /// Wakes the thread at `at` for the socket of `token`.
    pub(crate) fn schedule(&self, token: u64, at: Instant) {
        let mut timers = self.timers.lock();
        let earliest = timers.peek().is_none_or(|Reverse((first, _))| at < *first);
        timers.push(Reverse((at, token)));
        drop(timers);
        if earliest {
            self.wake();
        }
    }

    fn wake(&self) {
        let one = 1u64;
        // SAFETY: 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// How long epoll may sleep: until the next timer, and a tick while sockets close.
    fn sleep_ms(&self) -> i32 {
        let mut limit = self
            .timers
            .lock()
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(Instant::now()));
        if !self.closing.lock().is_empty() {
            limit = Some(limit.map_or(CLOSING_TICK, |l| l.min(CLOSING_TICK)));
        }
        // Rounded up: waking a millisecond early would spin until the timer is due.
        limit.map_or(-1, |l| {
            l.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        })
    }

    /// Runs the timers that are due.
    fn run_timers(&self) {
        let now = Instant::now();
        loop {
            let token = {
                let mut timers = self.timers.lock();
                match timers.peek() {
                    Some(Reverse((at, _))) if *at <= now => timers.pop().map(|Reverse(t)| t.1),
                    _ => break,
                }
            };
            match token {
                // The end of a socket's calls (see `Calls`): as its events.
                Some(t) if t & QUIET_TIMER != 0 => self.handle(t & !QUIET_TIMER),
                Some(t) => match self.entry(t) {
                    Some(Entry::Stream(s)) => {
                        if let Some(s) = s.upgrade() {
                            s.keepalive_tick(now);
                        }
                    }
                    _ => self.handle(t),
                },
                None => {}
            }
        }
    }

    fn entry(&self, token: u64) -> Option<Entry> {
        self.entries.lock().get(&token).cloned()
    }

    fn run(&self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            let timeout = self.sleep_ms();
            // SAFETY: `events` is a live array of the length passed.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    timeout,
                )
            };
            for ev in &events[..n.max(0) as usize] {
                let token = ev.u64;
                // A bug in one socket's handling must not stop every socket's progress.
                let handled =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(token)));
                if handled.is_err() {
                    crate::SERVICE_PANICS.fetch_add(1, Ordering::Relaxed);
                }
            }
            let closing: Vec<Arc<StreamInner>> = std::mem::take(&mut *self.closing.lock());
            let still: Vec<Arc<StreamInner>> = closing
                .into_iter()
                .filter(|s| {
                    !std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.continue_close()))
                        .unwrap_or(true)
                })
                .collect();
            self.closing.lock().extend(still);
            let timers = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.run_timers();
            }));
            if timers.is_err() {
                crate::SERVICE_PANICS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn handle(&self, token: u64) {
        match token {
            CHANNEL_TOKEN => self.drain_channel(),
            WAKE_TOKEN => {
                let mut v = 0u64;
                // SAFETY: reads 8 bytes into a live u64.
                unsafe { libc::read(self.wake.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
            }
            token => match self.entry(token) {
                Some(Entry::Stream(s)) => {
                    if let Some(s) = s.upgrade() {
                        s.service_completions();
                    }
                }
                Some(Entry::Datagram(d)) => {
                    if let Some(d) = d.upgrade() {
                        d.service_events();
                    }
                }
                _ => {}
            },
        }
    }

    fn drain_channel(&self) {
        while let Ok(event) = self.channel.get_event() {
            self.dispatch(event);
        }
    }

    fn dispatch(&self, event: Event) {
        if event.kind == EventKind::ConnectRequest {
            let listener = event.listen_id.as_ref().map(|l| l.user() as u64);
            match listener.and_then(|t| self.entry(t)) {
                Some(Entry::Listener(l)) => match l.upgrade() {
                    Some(l) => l.on_request(event),
                    None => {
                        let _ = event.id.reject(&[]);
                        event.id.destroy();
                    }
                },
                _ => {
                    let _ = event.id.reject(&[]);
                    event.id.destroy();
                }
            }
            return;
        }
        if let Some(Entry::Stream(s)) = self.entry(event.id.user() as u64) {
            if let Some(s) = s.upgrade() {
                s.on_cm_event(event);
            }
        }
    }
}
