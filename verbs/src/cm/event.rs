//! Connection manager events and the channel that delivers them (`rdma_event_channel`).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use parking_lot::Mutex;

use super::CmId;
use crate::verbs::{AhAttr, CompletionChannel};

/// The event types of `enum rdma_cm_event_type`, with librdmacm's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum EventKind {
    /// `rdma_resolve_addr` finished.
    AddrResolved = 0,
    /// `rdma_resolve_addr` failed.
    AddrError = 1,
    /// `rdma_resolve_route` finished.
    RouteResolved = 2,
    /// `rdma_resolve_route` failed.
    RouteError = 3,
    /// A peer asks to connect to a listening id; the event's id is the new one.
    ConnectRequest = 4,
    /// The peer accepted and the id has no QP: call [`CmId::establish`].
    ConnectResponse = 5,
    /// The connection could not be set up locally.
    ConnectError = 6,
    /// The peer did not answer.
    Unreachable = 7,
    /// The peer rejected; `status` is the IB reason.
    Rejected = 8,
    /// Connected.
    Established = 9,
    /// Disconnected.
    Disconnected = 10,
    /// The device went away.
    DeviceRemoval = 11,
    /// Multicast join finished.
    MulticastJoin = 12,
    /// Multicast join failed.
    MulticastError = 13,
    /// The address moved.
    AddrChange = 14,
    /// The id's timewait is over; its QP may be reused.
    TimewaitExit = 15,
}

impl EventKind {
    /// librdmacm's name for it (`rdma_event_str`).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::AddrResolved => "RDMA_CM_EVENT_ADDR_RESOLVED",
            EventKind::AddrError => "RDMA_CM_EVENT_ADDR_ERROR",
            EventKind::RouteResolved => "RDMA_CM_EVENT_ROUTE_RESOLVED",
            EventKind::RouteError => "RDMA_CM_EVENT_ROUTE_ERROR",
            EventKind::ConnectRequest => "RDMA_CM_EVENT_CONNECT_REQUEST",
            EventKind::ConnectResponse => "RDMA_CM_EVENT_CONNECT_RESPONSE",
            EventKind::ConnectError => "RDMA_CM_EVENT_CONNECT_ERROR",
            EventKind::Unreachable => "RDMA_CM_EVENT_UNREACHABLE",
            EventKind::Rejected => "RDMA_CM_EVENT_REJECTED",
            EventKind::Established => "RDMA_CM_EVENT_ESTABLISHED",
            EventKind::Disconnected => "RDMA_CM_EVENT_DISCONNECTED",
            EventKind::DeviceRemoval => "RDMA_CM_EVENT_DEVICE_REMOVAL",
            EventKind::MulticastJoin => "RDMA_CM_EVENT_MULTICAST_JOIN",
            EventKind::MulticastError => "RDMA_CM_EVENT_MULTICAST_ERROR",
            EventKind::AddrChange => "RDMA_CM_EVENT_ADDR_CHANGE",
            EventKind::TimewaitExit => "RDMA_CM_EVENT_TIMEWAIT_EXIT",
        }
    }
}

/// Connection parameters (`struct rdma_conn_param`): what `connect` and `accept` ask for,
/// and what CONNECT_REQUEST, CONNECT_RESPONSE and ESTABLISHED report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnParam {
    /// Private data: up to 56 bytes for `connect` (after the 36-byte rdma_cm header), 196
    /// for `accept`, 148 for `reject`. Events carry the transport's whole field.
    pub private_data: Vec<u8>,
    /// RDMA READ / atomic requests the id accepts at once (0xFF: the device's maximum).
    pub responder_resources: u8,
    /// RDMA READ / atomic requests the id issues at once (0xFF: the device's maximum).
    pub initiator_depth: u8,
    /// End-to-end flow control (ignored on RoCE).
    pub flow_control: u8,
    /// Transport retries (7 at most).
    pub retry_count: u8,
    /// RNR retries (7: for ever).
    pub rnr_retry_count: u8,
    /// The QP uses an SRQ (when the application brings its own QP).
    pub srq: u8,
    /// The QP number, when the application brings its own QP.
    pub qp_num: u32,
}

/// UD parameters (`struct rdma_ud_param`) of ESTABLISHED on a UD id and of CONNECT_REQUEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdParam {
    /// Private data of the SIDR message.
    pub private_data: Vec<u8>,
    /// How to reach the peer's QP.
    pub ah_attr: AhAttr,
    /// The peer's QP.
    pub qp_num: u32,
    /// The peer's Q_Key.
    pub qkey: u32,
}

/// What an event carries besides its kind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EventParam {
    /// Nothing.
    #[default]
    None,
    /// Connection parameters (RC, and CONNECT_REQUEST, REJECTED, ...).
    Conn(ConnParam),
    /// UD parameters.
    Ud(UdParam),
}

/// One event (`struct rdma_cm_event`).
#[derive(Debug, Clone)]
pub struct Event {
    /// The id it is about (for CONNECT_REQUEST, the new id).
    pub id: CmId,
    /// The listening id, for CONNECT_REQUEST.
    pub listen_id: Option<CmId>,
    /// What happened.
    pub kind: EventKind,
    /// 0, an IB REJ reason (REJECTED) or a negative errno.
    pub status: i32,
    /// Parameters.
    pub param: EventParam,
}

/// An event channel: a FIFO of events and a file descriptor that polls readable while it is
/// not empty (`rdma_event_channel`). Cloning gives another handle to the same channel.
#[derive(Clone)]
pub struct EventChannel {
    inner: Arc<ChannelInner>,
}

struct ChannelInner {
    /// Reused for its eventfd discipline: readable exactly while something is queued,
    /// blocking or not by `O_NONBLOCK`. One handle, 0, stands for "an event".
    fifo: CompletionChannel,
    events: Mutex<VecDeque<Event>>,
}

impl std::fmt::Debug for EventChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventChannel")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

impl EventChannel {
    /// A new channel (`rdma_create_event_channel`).
    pub fn new() -> io::Result<EventChannel> {
        let fifo = CompletionChannel::new()?;
        fifo.attach(0)
            .map_err(|_| io::Error::other("a new channel has nothing attached"))?;
        Ok(EventChannel {
            inner: Arc::new(ChannelInner {
                fifo,
                events: Mutex::new(VecDeque::new()),
            }),
        })
    }

    /// Queues an event and makes the descriptor readable.
    pub(crate) fn push(&self, event: Event) {
        let mut events = self.inner.events.lock();
        events.push_back(event);
        // Under the queue's lock, so that the FIFO's order is the queue's. A failed
        // eventfd write leaves the event queued; the next one makes the fd readable.
        let _ = self.inner.fifo.signal(0);
    }

    /// Takes the next event (`rdma_get_cm_event`): waits for one, unless the descriptor is
    /// non-blocking, when it fails with `WouldBlock` (EAGAIN).
    pub fn get_event(&self) -> io::Result<Event> {
        loop {
            self.inner.fifo.get_event()?;
            // Every FIFO entry has its event, pushed under the same lock before it. Events
            // about ids destroyed since are dropped, as the kernel drops them.
            match self.inner.events.lock().pop_front() {
                Some(event) if !event.id.is_destroyed() => return Ok(event),
                _ => continue,
            }
        }
    }

    /// Events queued.
    pub fn pending(&self) -> usize {
        self.inner.events.lock().len()
    }

    /// Sets or clears `O_NONBLOCK` on the descriptor.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.fifo.set_nonblocking(nonblocking)
    }

    /// True if both handles name one channel.
    pub fn same(&self, other: &EventChannel) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl AsRawFd for EventChannel {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.fifo.as_raw_fd()
    }
}
