//! Two CM agents on a seeded wire with virtual time: connections establish, are rejected,
//! time out and disconnect as Linux's would, once each, through loss, duplication and
//! reordering; malformed MADs are counted and change nothing.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::*;
use crate::wire::mad::MAD_LEN;

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
const SERVICE: ServiceId = ServiceId(0x0000_0000_0106_0000 | 7174);

/// How the application at each end answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Policy {
    Accept,
    Reject,
    /// Answers nothing (a slow application).
    Ignore,
}

struct End {
    cm: CmEngine,
    addr: IpAddr,
    policy: Policy,
    events: Vec<CmEvent>,
    /// Our QPN, which a DREQ from the peer must name.
    qpn: Qpn,
}

struct Impairments {
    loss: f64,
    dup: f64,
    reorder: f64,
}

const CLEAN: Impairments = Impairments {
    loss: 0.0,
    dup: 0.0,
    reorder: 0.0,
};

struct Pair {
    now: Instant,
    ends: [End; 2],
    wire: Vec<(Instant, usize, IpAddr, Vec<u8>)>,
    rng: Rng,
    imp: Impairments,
    delay: Duration,
    /// The applications check the private data they receive (off for fuzzed input).
    check_private: bool,
}

fn config(seed: u64) -> CmConfig {
    CmConfig {
        ca_guid: 0x0002_c9ff_fe00_0000 | seed,
        seed,
        ..CmConfig::default()
    }
}

impl Pair {
    fn new(seed: u64, imp: Impairments) -> Pair {
        let end = |n: u64, addr| End {
            cm: CmEngine::new(config(seed * 2 + n)),
            addr,
            policy: Policy::Accept,
            events: Vec::new(),
            qpn: Qpn::new_masked(0x100 + n as u32),
        };
        let mut pair = Pair {
            now: Instant::now(),
            ends: [end(0, A), end(1, B)],
            wire: Vec::new(),
            rng: Rng::seed_from_u64(seed),
            imp,
            delay: Duration::from_micros(50),
            check_private: true,
        };
        let now = pair.now;
        pair.ends[1].cm.listen(now, SERVICE).unwrap();
        pair
    }

    fn params(&self, private: &'static [u8]) -> ConnectParams<'static> {
        ConnectParams {
            peer: B,
            local: A,
            service_id: SERVICE,
            qpn: self.ends[0].qpn,
            starting_psn: Psn::new_masked(0x1234),
            responder_resources: 1,
            initiator_depth: 1,
            retry_count: 7,
            rnr_retry_count: 7,
            path_mtu: 3,
            srq: false,
            hop_limit: 64,
            traffic_class: 0,
            local_ack_timeout: 18,
            private_data: private,
        }
    }

    fn connect(&mut self) -> CommId {
        let p = self.params(b"hello");
        self.ends[0].cm.connect(self.now, &p).unwrap()
    }

    /// Moves every queued MAD onto the wire, impaired.
    fn transmit(&mut self) {
        for from in 0..2 {
            let mut buf = [0u8; MAD_LEN];
            while let Some(addr) = self.ends[from].cm.poll_transmit(&mut buf) {
                let to = if addr.peer == A { 0 } else { 1 };
                assert_eq!(addr.local, self.ends[from].addr);
                if self.rng.chance(self.imp.loss) {
                    continue;
                }
                let copies = if self.rng.chance(self.imp.dup) { 2 } else { 1 };
                for _ in 0..copies {
                    let extra = if self.rng.chance(self.imp.reorder) {
                        Duration::from_micros(self.rng.below(2_000))
                    } else {
                        Duration::ZERO
                    };
                    let at = self.now + self.delay + extra;
                    self.wire.push((at, to, self.ends[from].addr, buf.to_vec()));
                }
            }
        }
    }

    /// The application's side: record events and answer them by policy.
    fn apps(&mut self) {
        let check = self.check_private;
        for i in 0..2 {
            while let Some(ev) = self.ends[i].cm.poll_event() {
                let now = self.now;
                let end = &mut self.ends[i];
                match &ev {
                    CmEvent::Request { conn, req, .. } => match end.policy {
                        Policy::Accept => {
                            if check {
                                assert_eq!(&req.private_data[..5], b"hello");
                            }
                            let p = AcceptParams {
                                qpn: end.qpn,
                                starting_psn: Psn::new_masked(0x777),
                                responder_resources: req.initiator_depth,
                                initiator_depth: req.responder_resources,
                                rnr_retry_count: 7,
                                srq: false,
                                target_ack_delay: 15,
                                qkey: Qkey::new(0),
                                private_data: b"welcome",
                            };
                            end.cm.accept(now, *conn, &p).unwrap();
                        }
                        Policy::Reject => end.cm.reject(now, *conn, b"go away").unwrap(),
                        Policy::Ignore => {}
                    },
                    CmEvent::SidrRequest { conn, .. } => match end.policy {
                        Policy::Accept => {
                            let p = AcceptParams {
                                qpn: end.qpn,
                                starting_psn: Psn::ZERO,
                                responder_resources: 0,
                                initiator_depth: 0,
                                rnr_retry_count: 0,
                                srq: false,
                                target_ack_delay: 0,
                                qkey: Qkey::new(0x0123_4567),
                                private_data: b"ud",
                            };
                            end.cm.accept(now, *conn, &p).unwrap();
                        }
                        Policy::Reject => end.cm.reject(now, *conn, b"no").unwrap(),
                        Policy::Ignore => {}
                    },
                    CmEvent::Reply { conn, rep } => {
                        if check {
                            assert_eq!(&rep.private_data[..7], b"welcome");
                        }
                        end.cm.establish(now, *conn).unwrap();
                    }
                    CmEvent::Disconnected { conn, .. } => {
                        // Both states after a DREQ (ours answered, or theirs) accept it.
                        end.cm.disconnect(now, *conn).unwrap();
                    }
                    _ => {}
                }
                end.events.push(ev);
            }
        }
    }

    /// One step: deliver what is due, fire due timers, answer events, transmit. Returns
    /// false when nothing is left to happen.
    fn step(&mut self) -> bool {
        self.step_until(None)
    }

    /// [`step`](Self::step), but time stops at `limit`: returns false there.
    fn step_until(&mut self, limit: Option<Instant>) -> bool {
        self.apps();
        self.transmit();
        let next_wire = self.wire.iter().map(|w| w.0).min();
        let next_timer = self.ends.iter().filter_map(|e| e.cm.poll_timeout()).min();
        let Some(next) = [next_wire, next_timer].into_iter().flatten().min() else {
            return false;
        };
        if limit.is_some_and(|l| next > l) {
            self.now = limit.unwrap_or(self.now).max(self.now);
            return false;
        }
        self.now = self.now.max(next);
        let (due, rest): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|w| w.0 <= self.now);
        self.wire = rest;
        for (_, to, from, mad) in due {
            let local = self.ends[to].addr;
            self.ends[to].cm.handle_mad(self.now, from, local, &mad);
        }
        for end in &mut self.ends {
            end.cm.handle_timeout(self.now);
        }
        self.apps();
        self.transmit();
        true
    }

    /// Runs until idle; panics on livelock.
    fn drive(&mut self) {
        self.drive_bounded(100_000);
    }

    fn drive_bounded(&mut self, max_steps: usize) {
        for _ in 0..max_steps {
            if !self.step() {
                return;
            }
        }
        panic!("no quiescence after {max_steps} steps");
    }

    /// Runs until virtual time passes `until` or nothing is left.
    fn drive_until(&mut self, until: Duration) {
        let end = self.now + until;
        while self.now < end && self.step_until(Some(end)) {}
    }

    fn count(&self, end: usize, f: impl Fn(&CmEvent) -> bool) -> usize {
        self.ends[end].events.iter().filter(|e| f(e)).count()
    }
}

fn is_established(e: &CmEvent) -> bool {
    matches!(e, CmEvent::Established { .. })
}
fn is_disconnected(e: &CmEvent) -> bool {
    matches!(e, CmEvent::Disconnected { .. })
}
fn is_timewait_exit(e: &CmEvent) -> bool {
    matches!(e, CmEvent::TimewaitExit { .. })
}

#[test]
fn connect_accept_establish_and_disconnect() {
    let mut pair = Pair::new(1, CLEAN);
    let conn = pair.connect();
    pair.drive_until(Duration::from_millis(10));
    assert_eq!(pair.count(0, |e| matches!(e, CmEvent::Reply { .. })), 1);
    assert_eq!(pair.count(1, is_established), 1);
    assert_eq!(
        pair.ends[0].cm.conn_state(conn),
        Some(ConnState::Established)
    );
    // The REQ carried what the active side asked.
    let req = pair.ends[1]
        .events
        .iter()
        .find_map(|e| match e {
            CmEvent::Request {
                req, peer, local, ..
            } => Some((req.clone(), *peer, *local)),
            _ => None,
        })
        .unwrap();
    assert_eq!((req.1, req.2), (A, B));
    assert_eq!(req.0.local_qpn, pair.ends[0].qpn);
    assert_eq!(req.0.starting_psn, Psn::new_masked(0x1234));
    assert_eq!(req.0.primary_path.local_gid, gid_of(A));
    assert_eq!(req.0.primary_path.remote_gid, gid_of(B));
    assert_eq!((req.0.pkey, req.0.max_cm_retries), (0xffff, 15));

    pair.ends[0].cm.disconnect(pair.now, conn).unwrap();
    pair.drive();
    for end in 0..2 {
        assert_eq!(pair.count(end, is_disconnected), 1);
        assert_eq!(pair.count(end, is_timewait_exit), 1);
        assert_eq!(pair.ends[end].cm.conn_count(), 0, "end {end} leaks");
    }
}

#[test]
fn no_listener_is_rejected_with_reason_8() {
    let mut pair = Pair::new(2, CLEAN);
    pair.ends[1].cm.unlisten(SERVICE);
    let start = pair.now;
    let conn = pair.connect();
    pair.drive();
    // Refused once the passive side's listen grace, and the active side's grace for a
    // refusal, are over (and not after a REQ retransmission).
    let cfg = CmConfig::default();
    assert!(pair.now - start >= cfg.refused_grace);
    assert!(pair.now - start < cfg.refused_grace + 2 * cfg.listen_grace + 2 * REFUSED_RESEND);
    assert!(pair.ends[0].cm.stats().refused_resends >= 1);
    let rej = pair.ends[0]
        .events
        .iter()
        .find_map(|e| match e {
            CmEvent::Rejected { conn: c, rej } if *c == conn => Some(rej.clone()),
            _ => None,
        })
        .expect("REJ");
    assert_eq!(rej.reason, reason::INVALID_SERVICE_ID);
    assert_eq!(rej.local_comm_id, CommId(0));
    // One refusal per REQ: the first and those sent again within the grace.
    let s = pair.ends[1].cm.stats();
    assert_eq!(s.no_listener, pair.ends[0].cm.stats().refused_resends + 1);
    assert_eq!(pair.ends[0].cm.conn_count(), 0);
    assert_eq!(pair.ends[1].cm.conn_count(), 0);
}

#[test]
fn a_request_waits_briefly_for_a_listener_that_is_about_to_come() {
    let mut pair = Pair::new(12, CLEAN);
    pair.ends[1].cm.unlisten(SERVICE);
    pair.connect();
    // The REQ arrives before the server listens: it is held, not refused...
    pair.drive_until(Duration::from_millis(50));
    assert!(pair.ends[0].events.is_empty(), "{:?}", pair.ends[0].events);
    let now = pair.now;
    pair.ends[1].cm.listen(now, SERVICE).unwrap();
    // ...and taken by the listener once there.
    pair.drive_until(Duration::from_millis(10));
    assert_eq!(pair.count(1, is_established), 1);
    assert_eq!(pair.ends[1].cm.stats().no_listener, 0);
}

#[test]
fn consumer_reject_carries_reason_28_and_private_data() {
    let mut pair = Pair::new(3, CLEAN);
    pair.ends[1].policy = Policy::Reject;
    pair.connect();
    pair.drive();
    let rej = pair.ends[0]
        .events
        .iter()
        .find_map(|e| match e {
            CmEvent::Rejected { rej, .. } => Some(rej.clone()),
            _ => None,
        })
        .expect("REJ");
    assert_eq!(rej.reason, reason::CONSUMER_DEFINED);
    assert_eq!(&rej.private_data[..7], b"go away");
    assert_eq!(pair.ends[1].cm.conn_count(), 0);
}

#[test]
fn lost_req_is_sent_again_after_the_response_timeout() {
    let mut pair = Pair::new(4, CLEAN);
    pair.connect();
    // Lose the first REQ by hand.
    let mut buf = [0u8; MAD_LEN];
    assert!(pair.ends[0].cm.poll_transmit(&mut buf).is_some());
    let start = pair.now;
    pair.drive_until(Duration::from_secs(10));
    assert_eq!(pair.count(1, is_established), 1);
    assert_eq!(pair.ends[0].cm.stats().retransmits, 1);
    // 2 × 256 ms + 4096 ms.
    assert!(pair.now - start >= Duration::from_millis(4608));
}

#[test]
fn silent_peer_makes_the_connection_unreachable_after_16_reqs() {
    let mut pair = Pair::new(5, CLEAN);
    pair.imp.loss = 1.0;
    let conn = pair.connect();
    let start = pair.now;
    pair.drive();
    assert_eq!(
        pair.ends[0].events,
        vec![CmEvent::Unreachable { conn }],
        "one Unreachable and nothing else"
    );
    assert_eq!(pair.ends[0].cm.stats().retransmits, 15);
    assert_eq!(pair.now - start, Duration::from_millis(4608 * 16));
    assert_eq!(pair.ends[0].cm.conn_count(), 0);
}

#[test]
fn slow_application_gets_mra_and_the_peer_keeps_waiting() {
    let mut pair = Pair::new(6, CLEAN);
    pair.ends[1].policy = Policy::Ignore;
    let conn = pair.connect();
    // Long enough for the active side to give up if MRA did not hold it: 16 × 4.6 s.
    pair.drive_until(Duration::from_secs(80));
    assert!(pair.ends[1].cm.stats().duplicates >= 1);
    assert_eq!(
        pair.ends[0].cm.conn_state(conn),
        Some(ConnState::Connecting)
    );
    assert!(pair.ends[0].events.is_empty(), "{:?}", pair.ends[0].events);
    // Now the application answers.
    let pending = pair.ends[1]
        .events
        .iter()
        .find_map(|e| match e {
            CmEvent::Request { conn, .. } => Some(*conn),
            _ => None,
        })
        .unwrap();
    pair.ends[1].policy = Policy::Accept;
    let p = AcceptParams {
        qpn: pair.ends[1].qpn,
        starting_psn: Psn::ZERO,
        responder_resources: 1,
        initiator_depth: 1,
        rnr_retry_count: 7,
        srq: false,
        target_ack_delay: 0,
        qkey: Qkey::new(0),
        private_data: b"welcome",
    };
    pair.ends[1].cm.accept(pair.now, pending, &p).unwrap();
    pair.drive_until(Duration::from_secs(1));
    assert_eq!(pair.count(1, is_established), 1);
    assert_eq!(pair.count(1, |e| matches!(e, CmEvent::Request { .. })), 1);
}

#[test]
fn both_sides_disconnecting_at_once_see_one_disconnect_each() {
    let mut pair = Pair::new(7, CLEAN);
    let conn = pair.connect();
    pair.drive_until(Duration::from_millis(10));
    let passive = pair.ends[1]
        .events
        .iter()
        .find_map(|e| match e {
            CmEvent::Established { conn } => Some(*conn),
            _ => None,
        })
        .unwrap();
    let now = pair.now;
    pair.ends[0].cm.disconnect(now, conn).unwrap();
    pair.ends[1].cm.disconnect(now, passive).unwrap();
    pair.drive();
    for end in 0..2 {
        assert_eq!(pair.count(end, is_disconnected), 1, "end {end}");
        assert_eq!(pair.ends[end].cm.conn_count(), 0);
    }
}

#[test]
fn dreq_naming_another_qp_is_dropped() {
    let mut pair = Pair::new(8, CLEAN);
    let conn = pair.connect();
    pair.drive_until(Duration::from_millis(10));
    // The passive side believes the active QP is another one.
    pair.ends[0].qpn = Qpn::new_masked(0x999);
    let mut bad = pair.ends[0].cm.conns.get(&conn).unwrap().remote_qpn;
    bad = Qpn::new_masked(bad.value() ^ 1);
    pair.ends[0].cm.conns.get_mut(&conn).unwrap().remote_qpn = bad;
    pair.ends[0].cm.disconnect(pair.now, conn).unwrap();
    pair.drive_until(Duration::from_millis(10));
    assert_eq!(pair.ends[1].cm.stats().bad_qpn, 1);
    assert_eq!(pair.count(1, is_disconnected), 0);
}

#[test]
fn sidr_accept_reject_and_no_listener() {
    for (policy, listen, status) in [
        (Policy::Accept, true, sidr_status::SUCCESS),
        (Policy::Reject, true, sidr_status::REJECT),
        (Policy::Accept, false, sidr_status::UNSUPPORTED),
    ] {
        let mut pair = Pair::new(9, CLEAN);
        pair.ends[1].policy = policy;
        let sid = ServiceId::from_port(0x0111, 9000);
        if listen {
            let now = pair.now;
            pair.ends[1].cm.listen(now, sid).unwrap();
        }
        let conn = pair.ends[0]
            .cm
            .resolve_sidr(pair.now, B, A, sid, b"hi")
            .unwrap();
        pair.drive();
        let rep = pair.ends[0]
            .events
            .iter()
            .find_map(|e| match e {
                CmEvent::SidrReply { conn: c, rep } if *c == conn => Some(rep.clone()),
                _ => None,
            })
            .expect("SIDR_REP");
        assert_eq!(rep.status, status);
        if status == sidr_status::SUCCESS {
            assert_eq!(rep.qpn, pair.ends[1].qpn);
            assert_eq!(rep.qkey, Qkey::new(0x0123_4567));
            assert_eq!(&rep.private_data[..2], b"ud");
        }
        assert_eq!(pair.ends[0].cm.conn_count(), 0);
        assert_eq!(pair.ends[1].cm.conn_count(), 0, "lingering answers expire");
    }
}

#[test]
fn garbage_is_counted_and_changes_nothing() {
    let mut pair = Pair::new(10, CLEAN);
    let now = pair.now;
    let cm = &mut pair.ends[1].cm;
    cm.handle_mad(now, A, B, &[0u8; 10]);
    let mut mad = [0u8; MAD_LEN];
    cm.handle_mad(now, A, B, &mad);
    mad[..4].copy_from_slice(&[1, 7, 2, 3]);
    mad[16..18].copy_from_slice(&0x0019u16.to_be_bytes()); // LAP: not on RoCE
    cm.handle_mad(now, A, B, &mad);
    // A DREP and an RTU for connections that do not exist.
    for attr in [crate::wire::cm::attr::DREP, crate::wire::cm::attr::RTU] {
        mad[16..18].copy_from_slice(&attr.to_be_bytes());
        mad[24..28].copy_from_slice(&7u32.to_be_bytes());
        cm.handle_mad(now, A, B, &mad);
    }
    let s = cm.stats();
    assert_eq!(s.malformed, 1);
    assert_eq!(s.unsupported, 2);
    assert_eq!(s.unknown_conn, 2);
    assert_eq!(cm.conn_count(), 0);
    assert!(cm.poll_event().is_none());
    assert!(cm.poll_transmit(&mut [0u8; MAD_LEN]).is_none());
}

#[test]
fn destroying_a_pending_request_rejects_it_with_timeout() {
    let mut pair = Pair::new(11, CLEAN);
    pair.ends[1].policy = Policy::Ignore;
    let conn = pair.connect();
    pair.drive_until(Duration::from_millis(1));
    pair.ends[0].cm.destroy(pair.now, conn);
    pair.drive_until(Duration::from_millis(1));
    assert!(pair.ends[0].events.is_empty());
    let rejected: Vec<_> = pair.ends[1]
        .events
        .iter()
        .filter_map(|e| match e {
            CmEvent::Rejected { rej, .. } => Some(rej.reason),
            _ => None,
        })
        .collect();
    assert_eq!(rejected, vec![reason::TIMEOUT]);
    assert_eq!(pair.ends[1].cm.conn_count(), 0);
}

/// Through loss, duplication and reordering of up to 30 % each, every connection
/// establishes once, disconnects once on each side, and nothing leaks or hangs.
#[test]
fn lossy_wire_establishes_and_disconnects_each_connection_once() {
    for seed in 0..20u64 {
        let rate = 0.05 + 0.25 * (seed as f64 / 19.0);
        let mut pair = Pair::new(
            100 + seed,
            Impairments {
                loss: rate,
                dup: rate,
                reorder: rate,
            },
        );
        let conns: Vec<CommId> = (0..8).map(|_| pair.connect()).collect();
        pair.drive_bounded(1_000_000);
        let established: HashSet<CommId> = pair.ends[0]
            .events
            .iter()
            .filter_map(|e| match e {
                CmEvent::Reply { conn, .. } => Some(*conn),
                _ => None,
            })
            .collect();
        let replies = pair.count(0, |e| matches!(e, CmEvent::Reply { .. }));
        assert_eq!(
            replies,
            established.len(),
            "seed {seed}: a REP acted on twice"
        );
        let unreachable = pair.count(0, |e| matches!(e, CmEvent::Unreachable { .. }));
        assert_eq!(established.len() + unreachable, conns.len(), "seed {seed}");
        // Passive side: never more establishments than requests, one request per REQ.
        let requests = pair.count(1, |e| matches!(e, CmEvent::Request { .. }));
        assert!(requests <= conns.len(), "seed {seed}: a REQ acted on twice");
        assert!(pair.count(1, is_established) <= requests);

        let now = pair.now;
        for conn in &established {
            if pair.ends[0].cm.conn_state(*conn) == Some(ConnState::Established) {
                pair.ends[0].cm.disconnect(now, *conn).unwrap();
            }
        }
        pair.drive_bounded(1_000_000);
        let disconnected: Vec<CommId> = pair.ends[0]
            .events
            .iter()
            .filter_map(|e| match e {
                CmEvent::Disconnected { conn, .. } => Some(*conn),
                _ => None,
            })
            .collect();
        let unique: HashSet<_> = disconnected.iter().collect();
        assert_eq!(
            unique.len(),
            disconnected.len(),
            "seed {seed}: disconnected twice"
        );
        for end in 0..2 {
            assert_eq!(
                pair.ends[end].cm.conn_count(),
                0,
                "seed {seed}: end {end} leaks"
            );
        }
    }
}

/// MADs an engine takes from the wire, as the agent hands them over: whole ones it sent,
/// mutated at random, and arbitrary bytes. None may panic the engine, establish anything
/// out of thin air, or leave a connection it cannot time out.
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// The MADs of one clean connection and disconnection, as the passive side receives
    /// them and as the active side does.
    fn conversation() -> Vec<(usize, Vec<u8>)> {
        let mut pair = Pair::new(77, CLEAN);
        let conn = pair.connect();
        let mut seen = Vec::new();
        let mut record = |pair: &Pair| {
            for (_, to, _, mad) in &pair.wire {
                seen.push((*to, mad.clone()));
            }
        };
        for _ in 0..20 {
            pair.apps();
            pair.transmit();
            record(&pair);
            if !pair.step() {
                break;
            }
        }
        let now = pair.now;
        let _ = pair.ends[0].cm.disconnect(now, conn);
        for _ in 0..20 {
            pair.apps();
            pair.transmit();
            record(&pair);
            if !pair.step() {
                break;
            }
        }
        seen
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn mutated_and_random_mads_never_panic_or_leak(
            pick in 0usize..64,
            flips in proptest::collection::vec((0usize..256, any::<u8>()), 1..8),
            random in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mads = conversation();
            assert!(mads.len() >= 5, "{} MADs", mads.len());
            let mut pair = Pair::new(78, CLEAN);
            pair.check_private = false;
            let now = pair.now;
            let (to, mut mad) = mads[pick % mads.len()].clone();
            for (at, v) in flips {
                mad[at] ^= v;
            }
            let from = if to == 0 { B } else { A };
            let local = pair.ends[to].addr;
            pair.ends[to].cm.handle_mad(now, from, local, &mad);
            pair.ends[to].cm.handle_mad(now, from, local, &random);
            pair.drive_bounded(100_000);
            // Whatever was started ends: a connection from a stray REQ is rejected or times
            // out, a held one is refused.
            let later = pair.now + Duration::from_secs(600);
            for end in &mut pair.ends {
                end.cm.handle_timeout(later);
                while end.cm.poll_event().is_some() {}
            }
            for end in 0..2 {
                let idle = pair.ends[end].cm.poll_timeout().is_none_or(|t| t > later)
                    || pair.ends[end].cm.conn_count() == 0;
                prop_assert!(idle, "end {end} keeps {} connections", pair.ends[end].cm.conn_count());
            }
        }
    }
}
