//! What the progress tests share: contexts on loopback over the udp backend, and small UD
//! messages.
#![allow(dead_code)] // each test binary uses its own part

use xrdma_verbs::net::udp::{UdpConfig, UdpIo};
use xrdma_verbs::verbs::*;
use xrdma_verbs::wire::Qkey;

/// Q_Key of every UD QP here.
pub const QKEY: u32 = 0x99;

/// A context on loopback at `ip`, `port`, with or without its helper thread.
pub fn lo_context(ip: &str, port: u16, progress_thread: bool) -> Context {
    let io = UdpIo::open(&UdpConfig {
        addr: Some(ip.parse().unwrap()),
        port,
        ..UdpConfig::new("lo")
    })
    .unwrap();
    let config = ContextConfig {
        progress_thread,
        ..ContextConfig::seeded(3)
    };
    Context::new(Box::new(io), config).unwrap()
}

/// A signaled, inline UD send of 16 bytes from `qp` to `to` through `ah`.
pub fn send(qp: &QueuePair, ah: &AddressHandle, to: &QueuePair, data: &[u8; 16], wr_id: u64) {
    let wr = SendWr {
        wr_id,
        opcode: SendOpcode::Send,
        send_flags: SendFlags::SIGNALED | SendFlags::INLINE,
        sg_list: &[Sge {
            addr: data.as_ptr() as u64,
            length: 16,
            lkey: Lkey(0),
        }],
        imm_data: 0,
        rdma: None,
        atomic: None,
        ud: Some(UdDest {
            ah,
            remote_qpn: to.qpn(),
            remote_qkey: Qkey::new(QKEY),
        }),
    };
    unsafe { qp.post_send(&wr) }.unwrap();
}

/// Posts `buf`, registered in `mr`, as one receive.
pub fn post_recv(qp: &QueuePair, mr: &Mr, buf: &[u8], wr_id: u64) {
    let sge = Sge {
        addr: buf.as_ptr() as u64,
        length: buf.len() as u32,
        lkey: mr.lkey(),
    };
    unsafe {
        qp.post_recv(&RecvWr {
            wr_id,
            sg_list: &[sge],
        })
    }
    .unwrap();
}
