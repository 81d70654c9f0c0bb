//! An idle context burns no CPU: its helper thread sleeps in poll(2). Alone in its test
//! binary, so that no other context's thread is around.

use std::time::{Duration, Instant};

use xrdma_verbs::net::udp::{UdpConfig, UdpIo};
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

fn context(ip: &str, port: u16) -> Context {
    let io = UdpIo::open(&UdpConfig {
        addr: Some(ip.parse().unwrap()),
        port,
        ..UdpConfig::new("lo")
    })
    .unwrap();
    Context::new(Box::new(io), ContextConfig::seeded(3)).unwrap()
}

#[test]
fn an_idle_context_sleeps() {
    let ctx = context("127.0.0.3", 47_922);
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(16, None).unwrap();
    let qp = pd.create_qp(&QpInitAttr::ud(&cq, &cq, 16)).unwrap();
    // After its spin, the thread must be asleep (S) in poll, and stay asleep.
    let deadline = Instant::now() + Duration::from_secs(10);
    // The thread names itself once it runs, so it may take a moment to show up.
    loop {
        let state = thread_stat("xrdma-progress").map(|(s, _)| s);
        if state == Some('S') {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "progress thread {state:?} (not sleeping) after 10 s of idleness"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, ticks_before) = thread_stat("xrdma-progress").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (state, ticks_after) = thread_stat("xrdma-progress").unwrap();
    assert_eq!(state, 'S');
    // Not a timing bound: a sleeping thread is not scheduled at all, so its CPU ticks
    // do not move.
    assert_eq!(
        ticks_after, ticks_before,
        "an idle progress thread used CPU"
    );
    drop((qp, cq, pd, ctx));
    assert!(
        thread_stat("xrdma-progress").is_none(),
        "dropping the context stops its thread"
    );
}
