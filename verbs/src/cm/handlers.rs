//! What the CM engine's events do to CM ids: the rdma_cm events they become, and what
//! librdmacm and the kernel's CMA do on the way (QP transitions, the RTU).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use super::agent::Agent;
use super::device::Device;
use super::event::{ConnParam, Event, EventKind, EventParam, UdParam};
use super::id::{CmId, IdInner, Phase};
use super::qp_attr::{MinIb, bring_up, path_mtu};
use crate::engine::cm::CmEvent;
use crate::verbs::{AhAttr, AttrMask, Gid, QpAttr, QpState};
use crate::wire::Psn;
use crate::wire::cm::{CommId, ServiceId};
use crate::wire::cma::{CMA_HEADER_LEN, CmaHeaderRepr};

pub(super) fn push_event(
    id: &Arc<IdInner>,
    listen_id: Option<&Arc<IdInner>>,
    kind: EventKind,
    status: i32,
    param: EventParam,
) {
    if id.destroyed.load(Ordering::Acquire) {
        return;
    }
    let channel = match listen_id {
        Some(l) => l.channel.lock().clone(),
        None => id.channel.lock().clone(),
    };
    channel.push(Event {
        id: CmId { inner: id.clone() },
        listen_id: listen_id.map(|l| CmId { inner: l.clone() }),
        kind,
        status,
        param,
    });
}

pub(super) fn conn_param_event(
    private: &[u8],
    responder_resources: u8,
    initiator_depth: u8,
    rnr_retry_count: u8,
    srq: bool,
    qp_num: u32,
) -> EventParam {
    EventParam::Conn(ConnParam {
        private_data: private.to_vec(),
        responder_resources,
        initiator_depth,
        flow_control: 0,
        retry_count: 0,
        rnr_retry_count,
        srq: u8::from(srq),
        qp_num,
    })
}

/// The id a request for `service_id` brings, on the listener's channel, with the rdma_cm
/// header of its private data; a request nobody listens for any more, or whose header is
/// not rdma_cm's, is rejected.
fn new_child(
    agent: &Arc<Agent>,
    now: Instant,
    conn: CommId,
    service_id: ServiceId,
    private: &[u8],
) -> Option<(Arc<IdInner>, CmId, CmaHeaderRepr, Device)> {
    let listener = agent
        .listeners
        .lock()
        .get(&service_id)
        .and_then(Weak::upgrade);
    let hdr = CmaHeaderRepr::parse(private);
    let device = device_of(agent);
    let (Some(listener), Ok(hdr), Some(device)) = (listener, hdr, device) else {
        agent.with_engine(now, |e| e.reject(now, conn, &[]).ok());
        return None;
    };
    let channel = listener.channel.lock().clone();
    let child = CmId::with_type(&channel, listener.ps, listener.qp_type);
    Some((listener, child, hdr, device))
}

/// Turns one engine event into the rdma_cm event of the id it is about, doing what
/// librdmacm and the kernel's CMA do on the way (QP transitions, the RTU).
pub(crate) fn on_engine_event(agent: &Arc<Agent>, now: Instant, ev: CmEvent) {
    match ev {
        CmEvent::Request {
            conn,
            peer,
            local,
            req,
        } => {
            let Some((listener, child, hdr, device)) =
                new_child(agent, now, conn, req.service_id, &req.private_data)
            else {
                return;
            };
            {
                let mut st = child.inner.st.lock();
                st.phase = Phase::Requested;
                st.src = Some(SocketAddr::new(
                    if hdr.dst.is_unspecified() {
                        local
                    } else {
                        hdr.dst
                    },
                    req.service_id.port(),
                ));
                st.dst = Some(SocketAddr::new(
                    if hdr.src.is_unspecified() {
                        peer
                    } else {
                        hdr.src
                    },
                    hdr.src_port,
                ));
                st.path_mtu = path_mtu(&device).min_ib(req.path_mtu);
                st.our_psn = Psn::new_masked(device.ctx.shared.next_random());
                st.device = Some(device);
                st.comm = Some(conn);
                st.peer_qpn = req.local_qpn;
                st.peer_psn = req.starting_psn;
                st.responder_resources = req.initiator_depth;
                st.initiator_depth = req.responder_resources;
                st.retry_count = req.retry_count;
                st.rnr_retry_count = req.rnr_retry_count;
                st.tos = req.primary_path.traffic_class;
            }
            agent
                .conns
                .lock()
                .insert(conn, Arc::downgrade(&child.inner));
            let param = conn_param_event(
                &req.private_data[CMA_HEADER_LEN..],
                req.initiator_depth,
                req.responder_resources,
                req.rnr_retry_count,
                req.srq,
                req.local_qpn.value(),
            );
            let param = match param {
                EventParam::Conn(mut c) => {
                    c.retry_count = req.retry_count;
                    EventParam::Conn(c)
                }
                other => other,
            };
            push_event(
                &child.inner,
                Some(&listener),
                EventKind::ConnectRequest,
                0,
                param,
            );
        }
        CmEvent::SidrRequest {
            conn,
            peer,
            local,
            req,
        } => {
            let Some((listener, child, hdr, device)) =
                new_child(agent, now, conn, req.service_id, &req.private_data)
            else {
                return;
            };
            {
                let mut st = child.inner.st.lock();
                st.phase = Phase::Requested;
                st.src = Some(SocketAddr::new(local, req.service_id.port()));
                st.dst = Some(SocketAddr::new(hdr.src, hdr.src_port));
                st.device = Some(device);
                st.comm = Some(conn);
            }
            agent
                .conns
                .lock()
                .insert(conn, Arc::downgrade(&child.inner));
            let param = EventParam::Ud(UdParam {
                private_data: req.private_data[CMA_HEADER_LEN..].to_vec(),
                ah_attr: AhAttr::new(Gid::from_ip(peer)),
                qp_num: 0,
                qkey: 0,
            });
            push_event(
                &child.inner,
                Some(&listener),
                EventKind::ConnectRequest,
                0,
                param,
            );
        }
        CmEvent::Reply { conn, rep } => {
            let Some(id) = agent.id_of(conn) else { return };
            let mut st = id.st.lock();
            st.peer_qpn = rep.local_qpn;
            st.peer_psn = rep.starting_psn;
            let param = conn_param_event(
                &rep.private_data,
                rep.initiator_depth,
                rep.responder_resources,
                rep.rnr_retry_count,
                rep.srq,
                rep.local_qpn.value(),
            );
            match st.qp.clone() {
                Some(qp) => {
                    if bring_up(&qp, &st).is_err() {
                        st.phase = Phase::Disconnected;
                        drop(st);
                        agent.with_engine(now, |e| e.reject(now, conn, &[]).ok());
                        push_event(&id, None, EventKind::ConnectError, -libc::EINVAL, param);
                        return;
                    }
                    st.phase = Phase::Connected;
                    drop(st);
                    agent.with_engine(now, |e| e.establish(now, conn).ok());
                    push_event(&id, None, EventKind::Established, 0, param);
                }
                None => {
                    st.phase = Phase::Responded;
                    drop(st);
                    push_event(&id, None, EventKind::ConnectResponse, 0, param);
                }
            }
        }
        CmEvent::SidrReply { conn, rep } => {
            let Some(id) = agent.id_of(conn) else { return };
            agent.conns.lock().remove(&conn);
            let mut st = id.st.lock();
            let peer = st.dst.map(|d| d.ip());
            if rep.status == crate::engine::cm::sidr_status::SUCCESS {
                st.phase = Phase::Connected;
                drop(st);
                let param = EventParam::Ud(UdParam {
                    private_data: rep.private_data.to_vec(),
                    ah_attr: AhAttr::new(Gid::from_ip(peer.unwrap_or(IpAddr::from([0u8; 4])))),
                    qp_num: rep.qpn.value(),
                    qkey: rep.qkey.value(),
                });
                push_event(&id, None, EventKind::Established, 0, param);
            } else {
                st.phase = Phase::Disconnected;
                drop(st);
                push_event(
                    &id,
                    None,
                    EventKind::Unreachable,
                    -libc::ECONNRESET,
                    EventParam::None,
                );
            }
        }
        CmEvent::Established { conn } => {
            let Some(id) = agent.id_of(conn) else { return };
            id.st.lock().phase = Phase::Connected;
            push_event(
                &id,
                None,
                EventKind::Established,
                0,
                EventParam::Conn(ConnParam::default()),
            );
        }
        CmEvent::Rejected { conn, rej } => {
            let Some(id) = agent.id_of(conn) else { return };
            agent.conns.lock().remove(&conn);
            to_error(&id);
            let param = EventParam::Conn(ConnParam {
                private_data: rej.private_data.to_vec(),
                ..ConnParam::default()
            });
            push_event(&id, None, EventKind::Rejected, i32::from(rej.reason), param);
        }
        CmEvent::Unreachable { conn } => {
            let Some(id) = agent.id_of(conn) else { return };
            agent.conns.lock().remove(&conn);
            to_error(&id);
            push_event(
                &id,
                None,
                EventKind::Unreachable,
                -libc::ETIMEDOUT,
                EventParam::None,
            );
        }
        CmEvent::Disconnected { conn, .. } => {
            let Some(id) = agent.id_of(conn) else { return };
            // The QP goes on, as with the kernel's CM: what is in flight may still be
            // acknowledged, and the application's rdma_disconnect moves it to ERR.
            id.st.lock().phase = Phase::Disconnected;
            push_event(&id, None, EventKind::Disconnected, 0, EventParam::None);
        }
        CmEvent::TimewaitExit { conn } => {
            let Some(id) = agent.id_of(conn) else { return };
            agent.conns.lock().remove(&conn);
            push_event(&id, None, EventKind::TimewaitExit, 0, EventParam::None);
        }
    }
}

/// The connection is over: its QP stops (ERR flushes what is posted).
pub(super) fn to_error(id: &Arc<IdInner>) {
    let mut st = id.st.lock();
    st.phase = Phase::Disconnected;
    if let Some(qp) = &st.qp {
        let _ = qp.modify(&QpAttr::new(QpState::Err), AttrMask::STATE);
    }
}

/// The device an agent serves (its context, while it lives, and the agent).
fn device_of(agent: &Arc<Agent>) -> Option<Device> {
    Some(Device {
        ctx: agent.context()?,
        agent: agent.clone(),
    })
}
