//! A socket's state behind a lock that the service thread never waits for.
//!
//! The service thread acts on a socket's events (completions, its UDP socket) only to keep
//! the readiness descriptor up to date while no call is in the socket. If it waited for
//! the lock, a call spinning in the socket would wait in turn whenever the service thread
//! holds it, and on a busy machine the service thread may lose its CPU while holding it:
//! the call then waits a whole time slice of another process (milliseconds). So the
//! service thread only marks the work pending and takes the lock if it is free; otherwise
//! whoever holds it does the work as it unlocks. Nor does it act while a caller is in the
//! socket ([`Shared::enter`]): a call makes the socket's progress itself, and the last one
//! out does the work left to it.
//!
//! Nor are a socket's CQs armed for the service thread while a program calls into the
//! socket in a loop ([`Calls`]): it takes what arrives itself, and armed CQs would wake
//! the service thread at every arrival, to compete with it for the CPU and the lock.

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering, fence};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::service::{QUIET_TIMER, service};

/// How long after a socket's last call the service thread arms its CQs (see [`Calls`]).
const QUIET: Duration = Duration::from_millis(1);

/// When a socket's calls come, so that its CQs are armed for the service thread only once
/// they stop. A call that returns leaves them as they are: a program that calls in a loop
/// takes what arrives itself. A call that sleeps arms them first, as rsocket's do; so do
/// `rpoll` and [`sync_ready`](crate::RsStream::sync_ready) before the program sleeps on
/// the descriptor. Otherwise, [`QUIET`] after the last call, a service timer arms them,
/// so that the descriptor is kept up to date for a program that went to sleep in
/// `poll(2)` without saying so: it sees an arrival that late, at worst.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    token: u64,
    /// When the last call returned; `None` while a caller sleeps or once quiet.
    last: Option<Instant>,
    /// When the timer set by [`Calls::watch`] fires.
    timer: Option<Instant>,
    /// Callers asleep on the socket's events: while there are, every pass of progress
    /// arms the CQs again, or a sleeper could miss what another thread's pass took.
    sleepers: u32,
}

impl Calls {
    /// The socket's service token, for its timers.
    pub(crate) fn set_token(&mut self, token: u64) {
        self.token = token;
    }

    /// A call returns.
    pub(crate) fn returned(&mut self) {
        self.last = Some(Instant::now());
        self.watch();
    }

    /// No call is coming for now (a caller sleeps, or the socket closes): the CQs are to
    /// be armed.
    pub(crate) fn sleeping(&mut self) {
        self.last = None;
    }

    /// A caller is about to sleep on the socket's events (before it arms them).
    pub(crate) fn sleep_begins(&mut self) {
        self.sleepers += 1;
        self.last = None;
    }

    /// A sleeper woke.
    pub(crate) fn sleep_ends(&mut self) {
        self.sleepers = self.sleepers.saturating_sub(1);
    }

    /// Progress must arm the CQs: someone sleeps on them.
    pub(crate) fn must_arm(&self) -> bool {
        self.sleepers > 0
    }

    /// Calls are coming: the CQs are to stay unarmed. While they are, makes sure a
    /// service timer looks again once they may have stopped.
    pub(crate) fn active(&mut self) -> bool {
        if self.sleepers > 0 {
            return false;
        }
        let Some(last) = self.last else {
            return false;
        };
        if last.elapsed() >= QUIET {
            self.last = None;
            return false;
        }
        self.watch();
        true
    }

    fn watch(&mut self) {
        let Some(last) = self.last else { return };
        if self.timer.is_some_and(|at| at > Instant::now()) {
            return;
        }
        let at = last + QUIET;
        if let Ok(svc) = service() {
            svc.schedule(self.token | QUIET_TIMER, at);
            self.timer = Some(at);
        }
    }
}

/// State the service thread drives: takes what arrived and updates the readiness
/// descriptor.
pub(crate) trait Drive {
    fn drive(&mut self);
}

pub(crate) struct Shared<T: Drive> {
    state: Mutex<T>,
    /// The service thread saw an event that nobody has driven the state for yet.
    pending: AtomicBool,
    /// Callers in the socket (see [`Shared::enter`]).
    callers: AtomicU32,
}

impl<T: Drive> Shared<T> {
    pub(crate) fn new(state: T) -> Shared<T> {
        Shared {
            state: Mutex::new(state),
            pending: AtomicBool::new(false),
            callers: AtomicU32::new(0),
        }
    }

    /// Locks the state; unlocking drives it if the service thread left that to us.
    pub(crate) fn lock(&self) -> Locked<'_, T> {
        Locked {
            shared: self,
            guard: ManuallyDrop::new(self.state.lock()),
        }
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.state.get_mut()
    }

    /// A caller is in the socket until the guard drops: one that makes the socket's
    /// progress itself, spinning or waiting, so that the service thread need not.
    pub(crate) fn enter(&self) -> Caller<'_, T> {
        self.arrive();
        Caller(self)
    }

    /// [`enter`](Self::enter) without a guard: [`depart`](Self::depart) ends it.
    pub(crate) fn arrive(&self) {
        self.callers.fetch_add(1, Ordering::SeqCst);
    }

    /// A caller leaves; the last one out does the work the service thread left.
    pub(crate) fn depart(&self) {
        if self.callers.fetch_sub(1, Ordering::SeqCst) == 1 {
            fence(Ordering::SeqCst);
            self.settle();
        }
    }

    /// The service thread's call for an event: drives the state now if no caller is in
    /// the socket and the lock is free; otherwise leaves that to the last caller out or
    /// the lock's holder.
    pub(crate) fn service(&self) {
        self.pending.store(true, Ordering::SeqCst);
        // Pairs with the fences in `Locked::drop` and `Caller::drop`: either we see the
        // lock free and no caller in, or the holder or the caller, leaving, sees
        // `pending`.
        fence(Ordering::SeqCst);
        if self.callers.load(Ordering::SeqCst) == 0 {
            self.settle();
        }
    }

    /// Drives the state while work is pending and the lock is free.
    fn settle(&self) {
        while self.pending.load(Ordering::SeqCst) {
            let Some(mut state) = self.state.try_lock() else {
                return;
            };
            if self.pending.swap(false, Ordering::SeqCst) {
                state.drive();
            }
        }
    }
}

/// A caller in the socket (see [`Shared::enter`]).
pub(crate) struct Caller<'a, T: Drive>(&'a Shared<T>);

impl<T: Drive> Drop for Caller<'_, T> {
    fn drop(&mut self) {
        self.0.depart();
    }
}

/// The locked state.
pub(crate) struct Locked<'a, T: Drive> {
    shared: &'a Shared<T>,
    guard: ManuallyDrop<MutexGuard<'a, T>>,
}

impl<T: Drive> Deref for Locked<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: Drive> DerefMut for Locked<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T: Drive> Drop for Locked<'_, T> {
    fn drop(&mut self) {
        // SAFETY: dropped once, here, and never used after.
        unsafe { ManuallyDrop::drop(&mut self.guard) };
        fence(Ordering::SeqCst);
        self.shared.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Default)]
    struct Count(u32);

    impl Drive for Count {
        fn drive(&mut self) {
            self.0 += 1;
        }
    }

    #[test]
    fn a_free_lock_is_driven_at_once() {
        let s = Shared::new(Count::default());
        s.service();
        assert_eq!(s.lock().0, 1);
    }

    #[test]
    fn a_held_lock_is_driven_by_its_holder_as_it_unlocks() {
        let s = Shared::new(Count::default());
        let held = s.lock();
        s.service();
        assert_eq!(held.0, 0, "the service thread did not wait for the lock");
        drop(held);
        assert_eq!(s.lock().0, 1);
    }

    #[test]
    fn an_event_while_a_caller_is_in_is_driven_as_it_leaves() {
        let s = Shared::new(Count::default());
        let caller = s.enter();
        s.service();
        assert_eq!(
            s.lock().0,
            0,
            "the service thread left the caller's socket alone"
        );
        drop(caller);
        assert_eq!(s.lock().0, 1);
    }

    #[test]
    fn no_event_is_lost_between_threads() {
        // Every event the service thread sees is driven by the time both threads are
        // done, however the two interleave.
        let s = Arc::new(Shared::new(Count::default()));
        let events = 20_000;
        let app = {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..events {
                    let _c = (i % 2 == 0).then(|| s.enter());
                    let _g = s.lock();
                }
            })
        };
        for _ in 0..events {
            s.service();
        }
        app.join().unwrap();
        assert!(
            !s.pending.load(Ordering::SeqCst),
            "an event was left pending"
        );
        let driven = s.lock().0;
        assert!(driven >= 1 && driven <= events);
    }
}
