//! The helper thread: completes receives while nobody polls, and sleeps when idle.

use xrdma_verbs::net::udp::{UdpConfig, UdpIo};
use xrdma_verbs::verbs::*;
use xrdma_verbs::wire::Qkey;

const QKEY: u32 = 0x99;

fn context(ip: &str, port: u16, progress_thread: bool) -> Context {
    let io = UdpIo::open(&UdpConfig {
        addr: Some(ip.parse().unwrap()),
        port,
        ..UdpConfig::new("lo")
    })
    .unwrap();
    Context::new(
        Box::new(io),
        ContextConfig {
            progress_thread,
            ..ContextConfig::seeded(3)
        },
    )
    .unwrap()
}

fn ud(ctx: &Context, channel: Option<&std::sync::Arc<CompletionChannel>>) -> (Pd, Cq, QueuePair) {
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(256, channel).unwrap();
    let qp = pd.create_qp(&QpInitAttr::ud(&cq, &cq, 128)).unwrap();
    qp.bring_up_ud(QKEY, 0).unwrap();
    (pd, cq, qp)
}

#[test]
fn receives_complete_and_wake_the_channel_with_nobody_polling() {
    let a = context("127.0.0.1", 47_921, false);
    let b = context("127.0.0.2", 47_921, true);
    let ch = b.create_comp_channel().unwrap();
    let (pd_a, cq_a, qp_a) = ud(&a, None);
    let (pd_b, cq_b, qp_b) = ud(&b, Some(&ch));
    let mut rx = vec![0u8; 128 * 64];
    let rx_mr =
        unsafe { pd_b.reg_mr(rx.as_mut_ptr(), rx.len(), AccessFlags::LOCAL_WRITE) }.unwrap();
    let ah = pd_a.create_ah(&AhAttr::new(b.gid(0).unwrap())).unwrap();
    let data = [1u8; 16];
    let mut wcs = [WorkCompletion::default(); 4];
    for round in 0..100u64 {
        let sge = Sge {
            addr: rx.as_ptr() as u64 + (round % 128) * 64,
            length: 64,
            lkey: rx_mr.lkey(),
        };
        unsafe {
            qp_b.post_recv(&RecvWr {
                wr_id: round,
                sg_list: &[sge],
            })
        }
        .unwrap();
        cq_b.req_notify(false).unwrap();
        let wr = SendWr {
            wr_id: round,
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
                ah: &ah,
                remote_qpn: qp_b.qpn(),
                remote_qkey: Qkey::new(QKEY),
            }),
        };
        unsafe { qp_a.post_send(&wr) }.unwrap();
        assert_eq!(cq_a.poll(&mut wcs), 1);
        // Only the helper thread can receive now: wait on the channel's descriptor.
        let mut p = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&*ch),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        let ready = unsafe { libc::poll(&mut p, 1, 10_000) };
        assert_eq!(ready, 1, "round {round}: no completion event within 10 s");
        let fired = b.get_cq_event(&ch).unwrap();
        fired.ack_events(1).unwrap();
        assert_eq!(cq_b.poll(&mut wcs), 1);
        assert_eq!((wcs[0].wr_id, wcs[0].status), (round, WcStatus::Success));
    }
    drop(rx_mr);
}
