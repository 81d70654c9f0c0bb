//! Progress nobody polls for: the helper thread completes receives while nobody polls, and
//! a thread waiting for a CQ event makes the progress that brings it.

mod common;

use common::{QKEY, lo_context as context, post_recv, send};
use xrdma_verbs::verbs::*;

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
        let slot = (round % 128) as usize * 64;
        post_recv(&qp_b, &rx_mr, &rx[slot..slot + 64], round);
        cq_b.req_notify(false).unwrap();
        send(&qp_a, &ah, &qp_b, &data, round);
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

#[test]
fn a_thread_waiting_for_an_event_makes_the_progress_that_brings_it() {
    // Neither context has a helper thread: B's event can only come from the thread waiting
    // for it. While it waits, a send B's main thread posts must leave at once, although B
    // polled a moment ago (which otherwise leaves the kick to the next poll).
    let a = context("127.0.0.1", 47_923, false);
    let b = context("127.0.0.2", 47_923, false);
    let ch = b.create_comp_channel().unwrap();
    let (pd_a, cq_a, qp_a) = ud(&a, None);
    // B's sends complete on a CQ of their own, so that the channel's only event is the
    // receive, and nothing but the waiting thread's own progress can bring it.
    let pd_b = b.alloc_pd().unwrap();
    let cq_b = b.create_cq(16, Some(&ch)).unwrap();
    let send_cq_b = b.create_cq(64, None).unwrap();
    let qp_b = pd_b
        .create_qp(&QpInitAttr::ud(&send_cq_b, &cq_b, 16))
        .unwrap();
    qp_b.bring_up_ud(QKEY, 0).unwrap();
    let mut rx_a = vec![0u8; 64];
    let mut rx_b = vec![0u8; 64];
    let mr_a = unsafe { pd_a.reg_mr(rx_a.as_mut_ptr(), 64, AccessFlags::LOCAL_WRITE) }.unwrap();
    let mr_b = unsafe { pd_b.reg_mr(rx_b.as_mut_ptr(), 64, AccessFlags::LOCAL_WRITE) }.unwrap();
    let to_a = pd_b.create_ah(&AhAttr::new(a.gid(0).unwrap())).unwrap();
    let to_b = pd_a.create_ah(&AhAttr::new(b.gid(0).unwrap())).unwrap();
    let data = [5u8; 16];
    let mut wcs = [WorkCompletion::default(); 4];
    for round in 0..20 {
        post_recv(&qp_a, &mr_a, &rx_a, 1);
        post_recv(&qp_b, &mr_b, &rx_b, 1);
        cq_b.req_notify(false).unwrap();
        // The waiter runs detached, so that a wait that never ends fails the test rather
        // than hanging it.
        let ready = std::sync::Arc::new(std::sync::Barrier::new(2));
        let (done_tx, done) = std::sync::mpsc::channel();
        let (b2, ch2, cq_b2, ready2) = (b.clone(), ch.clone(), cq_b.clone(), ready.clone());
        std::thread::spawn(move || {
            let mut wcs = [WorkCompletion::default(); 4];
            assert_eq!(cq_b2.poll(&mut wcs), 0);
            ready2.wait();
            let fired = b2.get_cq_event(&ch2).unwrap();
            fired.ack_events(1).unwrap();
            let n = cq_b2.poll(&mut wcs);
            let _ = done_tx.send(wcs[..n].to_vec());
        });
        ready.wait();
        std::thread::sleep(std::time::Duration::from_micros(200));
        send(&qp_b, &to_a, &qp_a, &data, 7);
        // A echoes once B's message is in (A's own last send completes on the way).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: B's send never reached A"
            );
            let n = cq_a.poll(&mut wcs);
            assert!(wcs[..n].iter().all(|w| w.status == WcStatus::Success));
            if wcs[..n].iter().any(|w| w.opcode == WcOpcode::Recv) {
                break;
            }
        }
        send(&qp_a, &to_b, &qp_b, &data, 7);
        // A polled a moment ago, so its send waits for its next progress.
        a.progress();
        let got = done
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("round {round}: B's waiting thread never got its event"));
        assert_eq!(got.len(), 1, "round {round}: {got:?}");
        assert_eq!(
            (got[0].opcode, got[0].status),
            (WcOpcode::Recv, WcStatus::Success)
        );
        assert_eq!(send_cq_b.poll(&mut wcs), 1);
    }
    drop((mr_a, mr_b));
}
