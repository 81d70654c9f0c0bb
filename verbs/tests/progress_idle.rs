//! An idle context burns no CPU: its helper thread sleeps in poll(2), and so do a thread
//! blocked waiting for a CQ event and, meanwhile, the helper. Alone in its test binary, so
//! that no other context's helper thread is around.

use std::time::{Duration, Instant};

mod common;

use common::{QKEY, lo_context as context, post_recv, send};
use xrdma_verbs::verbs::*;

/// State letter and CPU ticks of this process's thread named `name`.
fn thread_stat(name: &str) -> Option<(char, u64)> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = task.path();
        // A thread may exit while we look; skip it.
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if comm.trim() == name {
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            // Fields after the parenthesised command: state is the first, utime and stime
            // the 12th and 13th.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?;
            return Some((f[0].chars().next()?, ticks));
        }
    }
    None
}

/// Waits (up to 10 s) until every thread named in `names` is asleep, then checks that none
/// of them is scheduled in the next half second.
fn asleep_and_staying_asleep(names: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    // A thread names itself once it runs, so it may take a moment to show up.
    loop {
        let states: Vec<_> = names
            .iter()
            .map(|n| thread_stat(n).map(|(s, _)| s))
            .collect();
        if states.iter().all(|s| *s == Some('S')) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "threads {names:?} in states {states:?} (not all sleeping) after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before: Vec<_> = names.iter().map(|n| thread_stat(n).unwrap().1).collect();
    std::thread::sleep(Duration::from_millis(500));
    for (name, ticks_before) in names.iter().zip(before) {
        let (state, ticks_after) = thread_stat(name).unwrap();
        assert_eq!(state, 'S', "{name}");
        // Not a timing bound: a sleeping thread is not scheduled at all, so its CPU ticks
        // do not move.
        assert_eq!(ticks_after, ticks_before, "{name} used CPU while idle");
    }
}

#[test]
fn an_idle_context_sleeps() {
    let ctx = context("127.0.0.3", 47_922, true);
    let pd = ctx.alloc_pd().unwrap();
    let ch = ctx.create_comp_channel().unwrap();
    let cq = ctx.create_cq(16, Some(&ch)).unwrap();
    let qp = pd.create_qp(&QpInitAttr::ud(&cq, &cq, 16)).unwrap();
    qp.bring_up_ud(QKEY, 0).unwrap();
    // After its spin, the helper thread must be asleep (S) in poll, and stay asleep.
    asleep_and_staying_asleep(&["xrdma-progress"]);

    // A thread blocked waiting for a CQ event sleeps, and so does the helper meanwhile.
    let mut rx = vec![0u8; 64];
    let mr = unsafe { pd.reg_mr(rx.as_mut_ptr(), rx.len(), AccessFlags::LOCAL_WRITE) }.unwrap();
    post_recv(&qp, &mr, &rx, 1);
    cq.req_notify(false).unwrap();
    let (ctx2, ch2) = (ctx.clone(), ch.clone());
    let waiter = std::thread::Builder::new()
        .name("xrdma-waiter".into())
        .spawn(move || ctx2.get_cq_event(&ch2).map(|cq| cq.ack_events(1)))
        .unwrap();
    asleep_and_staying_asleep(&["xrdma-progress", "xrdma-waiter"]);

    // A datagram from another context (without a helper thread) ends the wait.
    let peer = context("127.0.0.4", 47_922, false);
    let peer_pd = peer.alloc_pd().unwrap();
    let peer_cq = peer.create_cq(16, None).unwrap();
    let peer_qp = peer_pd
        .create_qp(&QpInitAttr::ud(&peer_cq, &peer_cq, 16))
        .unwrap();
    peer_qp.bring_up_ud(QKEY, 0).unwrap();
    let ah = peer_pd
        .create_ah(&AhAttr::new(ctx.gid(0).unwrap()))
        .unwrap();
    send(&peer_qp, &ah, &qp, &[3u8; 16], 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !waiter.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the waiting thread never got its event"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    waiter.join().unwrap().unwrap().unwrap();
    let mut wcs = [WorkCompletion::default(); 2];
    assert_eq!(cq.poll(&mut wcs), 1);
    assert_eq!((wcs[0].wr_id, wcs[0].status), (1, WcStatus::Success));
    drop((peer_qp, peer_cq, peer_pd, peer, mr, qp, cq, ch, pd, ctx));
    assert!(
        thread_stat("xrdma-progress").is_none(),
        "dropping the context stops its thread"
    );
}
