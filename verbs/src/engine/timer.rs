//! One timer table per QP: an enum of timers and an array of deadlines; the next wake-up
//! is the earliest armed deadline. Time is always an argument.

use std::time::Instant;

/// The timers of a reliable connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// No ACK for the oldest unacknowledged packet: retransmit from it.
    Retransmit = 0,
    /// The responder said Receiver Not Ready: resend when it expires.
    Rnr = 1,
    /// No ACK progress for a few round trips: resend from the oldest unacknowledged
    /// packet, without counting a retry (a lost packet at the tail of a burst, or a lost
    /// NAK, costs a few round trips rather than the whole ACK timeout).
    Probe = 2,
}

impl Timer {
    /// Every timer, in table order.
    pub const ALL: [Timer; 3] = [Timer::Retransmit, Timer::Rnr, Timer::Probe];
}

/// Deadlines of a QP's timers; unarmed timers have none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerTable {
    deadlines: [Option<Instant>; 3],
}

impl TimerTable {
    /// Arms `timer` to fire at `at` (re-arming moves it).
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = Some(at);
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    /// When `timer` fires, if armed.
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer as usize]
    }

    /// True if `timer` is armed.
    pub fn is_armed(&self, timer: Timer) -> bool {
        self.get(timer).is_some()
    }

    /// The earliest armed deadline: when the QP next needs `handle_timeout`.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Disarms and returns the first timer (in table order) due at `now`, if any; call
    /// until `None` to handle every expired timer.
    pub fn take_expired(&mut self, now: Instant) -> Option<Timer> {
        let t = Timer::ALL
            .into_iter()
            .find(|t| self.get(*t).is_some_and(|at| at <= now))?;
        self.stop(t);
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn next_timeout_is_the_earliest_armed_deadline() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        assert_eq!(table.next_timeout(), None);
        table.set(Timer::Probe, t0 + Duration::from_micros(30));
        table.set(Timer::Retransmit, t0 + Duration::from_micros(50));
        assert_eq!(table.next_timeout(), Some(t0 + Duration::from_micros(30)));
        table.stop(Timer::Probe);
        assert_eq!(table.next_timeout(), Some(t0 + Duration::from_micros(50)));
        table.set(Timer::Retransmit, t0 + Duration::from_micros(10));
        assert_eq!(
            table.next_timeout(),
            Some(t0 + Duration::from_micros(10)),
            "re-arming moves it"
        );
    }

    #[test]
    fn expired_timers_are_taken_once_and_disarmed() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        table.set(Timer::Rnr, t0 + Duration::from_micros(5));
        table.set(Timer::Retransmit, t0 + Duration::from_micros(5));
        table.set(Timer::Probe, t0 + Duration::from_micros(100));
        assert_eq!(table.take_expired(t0), None);
        let now = t0 + Duration::from_micros(5);
        assert_eq!(table.take_expired(now), Some(Timer::Retransmit));
        assert_eq!(table.take_expired(now), Some(Timer::Rnr));
        assert_eq!(table.take_expired(now), None);
        assert!(table.is_armed(Timer::Probe) && !table.is_armed(Timer::Rnr));
    }
}
