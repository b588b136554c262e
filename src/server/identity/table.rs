//! Each loop's table of who its connections are: per slot, 12 bytes (a
//! user number, a rights number, the token's expiry); the user ids (in one
//! byte arena, [`Names`]) and the sets of rights are interned, each kept
//! once however many connections share it and forgotten with the last. A
//! loop with identities off never grows it.
//!
//! Invariants: a slot holds an identity from [`Identities::attach`] until
//! [`Identities::detach`]; every interned user and rights set is counted
//! once per slot that names it; the per-user cap (`UserCounts`) is charged
//! exactly while a slot holds the user. Expiries are found by a sweep that
//! runs only once the earliest one is due (no heap: no bytes per
//! connection beyond the 12).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use super::names::Names;
use super::per_user::UserCounts;
use super::rights::Rights;
use super::verify::{Rejection, Verified};

/// A slot without an identity.
const NOBODY: u32 = u32::MAX;

/// One slot's identity, by number.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The interned user, or [`NOBODY`].
    user: u32,
    /// The interned rights.
    rights: u32,
    /// The token's `exp`, seconds since the Unix epoch (saturated);
    /// [`ASKED_TO_LEAVE`] once its expiry was acted on.
    expires: u32,
}

const EMPTY: Entry = Entry { user: NOBODY, rights: 0, expires: 0 };

/// The expiry of a connection asked to leave for its expired token: in the
/// past (its rights are gone) and skipped by the sweep; it keeps its user
/// (and its place under the per-user cap) until it is removed.
const ASKED_TO_LEAVE: u32 = 0;

/// Values kept once each, counted by holder, numbered while held.
#[derive(Debug)]
struct Interner<T: ?Sized + Hash + Eq> {
    numbers: HashMap<Arc<T>, u32>,
    /// By number: the value and its holders (`None`: a free number).
    values: Vec<Option<(Arc<T>, u32)>>,
    free: Vec<u32>,
}

impl<T: ?Sized + Hash + Eq> Default for Interner<T> {
    fn default() -> Self {
        Interner { numbers: HashMap::new(), values: Vec::new(), free: Vec::new() }
    }
}

impl<T: ?Sized + Hash + Eq> Interner<T> {
    /// The number of `value` with one more holder; `make` builds it the
    /// first time.
    fn hold(&mut self, value: &T, make: impl FnOnce() -> Arc<T>) -> u32 {
        if let Some(&n) = self.numbers.get(value) {
            if let Some((_, holders)) = &mut self.values[n as usize] {
                *holders += 1;
            }
            return n;
        }
        let value = make();
        let n = match self.free.pop() {
            Some(n) => n,
            None => {
                self.values.push(None);
                (self.values.len() - 1) as u32
            }
        };
        self.values[n as usize] = Some((Arc::clone(&value), 1));
        self.numbers.insert(value, n);
        n
    }

    /// One holder of number `n` fewer; the last one frees it.
    fn let_go(&mut self, n: u32) {
        let Some(Some((value, holders))) = self.values.get_mut(n as usize) else {
            debug_assert!(false, "let go of a number nobody holds");
            return;
        };
        *holders -= 1;
        if *holders == 0 {
            self.numbers.remove(&**value);
            self.values[n as usize] = None;
            self.free.push(n);
        }
    }

    /// Drops the free numbers at the end and the capacity past what is
    /// held.
    fn shrink(&mut self) {
        let held = self.values.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
        self.values.truncate(held);
        self.values.shrink_to_fit();
        self.free.retain(|&n| (n as usize) < held);
        self.free.shrink_to_fit();
        self.numbers.shrink_to_fit();
    }

    fn get(&self, n: u32) -> &T {
        match &self.values[n as usize] {
            Some((value, _)) => value,
            None => unreachable!("a held number is always set"),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.numbers.len()
    }
}

/// A connection's identity, borrowed from its loop's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User<'a> {
    /// The user id (the token's `sub`).
    pub id: &'a str,
    /// What it may do with rooms.
    pub rights: &'a Rights,
    /// When its token expires, seconds since the Unix epoch; 0 once the
    /// connection was asked to leave for an expired token (its rights
    /// have ended).
    pub expires: u64,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Identities {
    by_slot: Vec<Entry>,
    users: Names,
    rights: Interner<Rights>,
    /// The earliest expiry of any slot (`u32::MAX`: none).
    next_expiry: u32,
    /// `--max-conns-per-user`, process-wide; `None` when off.
    per_user: Option<Arc<UserCounts>>,
}

impl Identities {
    /// An empty table charging `per_user` (if a cap is on).
    pub(crate) fn new(per_user: Option<Arc<UserCounts>>) -> Self {
        Identities { next_expiry: u32::MAX, per_user, ..Identities::default() }
    }

    /// Gives `slot` the identity `verified`; refused (nothing kept) if its
    /// user holds the most connections allowed already, or the loop's user
    /// ids reached their bound (4 GiB).
    pub(crate) fn attach(&mut self, slot: usize, verified: &Verified) -> Result<(), Rejection> {
        debug_assert!(self.get(slot).is_none(), "a slot gets one identity");
        if let Some(per_user) = &self.per_user {
            if !per_user.admit(&verified.sub) {
                return Err(Rejection::UserLimit);
            }
        }
        self.keep(slot, verified).inspect_err(|_| self.uncharge(&verified.sub))
    }

    /// Gives `slot` the identity a live hand-off carried: charged to the
    /// per-user cap but never refused by it (the connection was admitted
    /// once; refusing it now would drop it). Only a loop whose user ids
    /// reached their bound keeps none (the connection, lacking one, is
    /// then asked to leave).
    pub(crate) fn attach_carried(&mut self, slot: usize, verified: &Verified) {
        debug_assert!(self.get(slot).is_none(), "a slot gets one identity");
        if let Some(per_user) = &self.per_user {
            per_user.charge(&verified.sub);
        }
        let _ = self.keep(slot, verified).inspect_err(|_| self.uncharge(&verified.sub));
    }

    fn uncharge(&self, user: &str) {
        if let Some(per_user) = &self.per_user {
            per_user.release(user);
        }
    }

    /// `slot`'s token expired and it was asked to leave: its rights end
    /// now, the sweep passes it by.
    pub(crate) fn asked_to_leave(&mut self, slot: usize) {
        if let Some(entry) = self.by_slot.get_mut(slot).filter(|e| e.user != NOBODY) {
            entry.expires = ASKED_TO_LEAVE;
        }
    }

    fn keep(&mut self, slot: usize, verified: &Verified) -> Result<(), Rejection> {
        let user = self.users.hold(&verified.sub).map_err(|_| Rejection::UserLimit)?;
        if self.by_slot.len() <= slot {
            self.by_slot.resize(slot + 1, EMPTY);
        }
        self.by_slot[slot] = self.entry(user, verified);
        Ok(())
    }

    fn entry(&mut self, user: u32, verified: &Verified) -> Entry {
        let rights = self.rights.hold(&verified.rights, || Arc::new(verified.rights.clone()));
        // An exp of 0 (1970) is expired, not "asked to leave".
        let expires = u32::try_from(verified.expires).unwrap_or(u32::MAX).max(ASKED_TO_LEAVE + 1);
        self.next_expiry = self.next_expiry.min(expires);
        Entry { user, rights, expires }
    }

    /// Replaces `slot`'s rights and expiry with a new token's for the same
    /// user ([`Rejection::OtherUser`] otherwise, nothing changed).
    pub(crate) fn refresh(&mut self, slot: usize, verified: &Verified) -> Result<(), Rejection> {
        let Some(&old) = self.by_slot.get(slot).filter(|e| e.user != NOBODY) else {
            return Err(Rejection::OtherUser);
        };
        if self.users.get(old.user) != verified.sub {
            return Err(Rejection::OtherUser);
        }
        let entry = self.entry(old.user, verified);
        self.rights.let_go(old.rights);
        self.by_slot[slot] = entry;
        Ok(())
    }

    /// Takes `slot`'s identity away (a no-op if it has none).
    pub(crate) fn detach(&mut self, slot: usize) {
        let Some(entry) = self.by_slot.get_mut(slot) else { return };
        let old = std::mem::replace(entry, EMPTY);
        if old.user == NOBODY {
            return;
        }
        if let Some(per_user) = &self.per_user {
            per_user.release(self.users.get(old.user));
        }
        self.users.let_go(old.user);
        self.rights.let_go(old.rights);
    }

    /// `slot`'s identity, if it has one.
    pub(crate) fn get(&self, slot: usize) -> Option<User<'_>> {
        let entry = self.by_slot.get(slot).filter(|e| e.user != NOBODY)?;
        Some(User {
            id: self.users.get(entry.user),
            rights: self.rights.get(entry.rights),
            expires: entry.expires as u64,
        })
    }

    /// Appends the slots whose token has expired by `now` (seconds since
    /// the Unix epoch) to `out`. Walks the table only once the earliest
    /// expiry is due, then learns the next one.
    pub(crate) fn expired(&mut self, now: u64, out: &mut Vec<u32>) {
        if now < self.next_expiry as u64 {
            return;
        }
        let mut next = u32::MAX;
        for (slot, entry) in self.by_slot.iter().enumerate() {
            if entry.user == NOBODY || entry.expires == ASKED_TO_LEAVE {
                continue;
            }
            if entry.expires as u64 <= now {
                out.push(slot as u32);
            } else {
                next = next.min(entry.expires);
            }
        }
        self.next_expiry = next;
    }

    /// The slots that hold user `id`'s connections (a walk of the table:
    /// for the admin API, not the hot path).
    pub(crate) fn slots_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = u32> + 'a {
        let number = self.users.find(id);
        self.by_slot
            .iter()
            .enumerate()
            .filter(move |(_, e)| number.is_some_and(|n| e.user == n))
            .map(|(slot, _)| slot as u32)
    }

    /// Distinct users with a connection on this loop.
    #[cfg(test)]
    pub(crate) fn users(&self) -> usize {
        self.users.len()
    }

    /// Gives back what a shrunk table no longer needs: the slots past the
    /// last one held, and the interning tables' room past their peak.
    pub(crate) fn release_memory(&mut self) {
        let last = self.by_slot.iter().rposition(|e| e.user != NOBODY).map_or(0, |i| i + 1);
        self.by_slot.truncate(last);
        self.by_slot.shrink_to_fit();
        self.users.shrink();
        self.rights.shrink();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(sub: &str, join: &[&str], expires: u64) -> Verified {
        let rights = Rights { join: join.iter().map(|s| s.to_string()).collect(), ..Rights::default() };
        Verified { sub: sub.into(), expires, rights }
    }

    #[test]
    fn users_and_rights_are_kept_once_and_forgotten_with_the_last_holder() {
        let mut t = Identities::new(None);
        t.attach(0, &verified("alice", &["chat:*"], 100)).unwrap();
        t.attach(5, &verified("alice", &["chat:*"], 200)).unwrap();
        t.attach(2, &verified("bob", &["chat:*"], 300)).unwrap();
        assert_eq!((t.users(), t.rights.len()), (2, 1));
        let alice = t.get(5).unwrap();
        assert_eq!((alice.id, alice.expires), ("alice", 200));
        assert!(alice.rights.may_join(alice.id, "chat:x"));
        assert!(t.get(1).is_none() && t.get(99).is_none());
        assert_eq!(t.slots_of("alice").collect::<Vec<_>>(), [0, 5]);
        assert_eq!(t.slots_of("carol").count(), 0);
        t.detach(0);
        t.detach(0);
        assert_eq!(t.users(), 2);
        t.detach(5);
        assert_eq!(t.users(), 1, "alice forgotten");
        t.detach(2);
        assert_eq!((t.users(), t.rights.len()), (0, 0));
        t.release_memory();
        assert_eq!(t.by_slot.capacity(), 0);
    }

    #[test]
    fn a_refresh_keeps_the_user_and_takes_the_new_rights_and_expiry() {
        let mut t = Identities::new(None);
        t.attach(3, &verified("alice", &["a"], 100)).unwrap();
        assert_eq!(t.refresh(3, &verified("bob", &["b"], 500)), Err(Rejection::OtherUser));
        assert_eq!(t.refresh(4, &verified("alice", &["b"], 500)), Err(Rejection::OtherUser), "no identity");
        t.refresh(3, &verified("alice", &["b"], 500)).unwrap();
        let user = t.get(3).unwrap();
        assert_eq!(user.expires, 500);
        assert!(user.rights.may_join("alice", "b") && !user.rights.may_join("alice", "a"));
        assert_eq!(t.rights.len(), 1, "the old rights were let go");
    }

    #[test]
    fn expiries_are_found_once_due_and_the_next_is_learnt() {
        let mut t = Identities::new(None);
        t.attach(0, &verified("a", &[], 100)).unwrap();
        t.attach(1, &verified("b", &[], 50)).unwrap();
        t.attach(2, &verified("c", &[], u64::MAX)).unwrap();
        let mut out = Vec::new();
        t.expired(49, &mut out);
        assert!(out.is_empty());
        t.expired(50, &mut out);
        assert_eq!(out, [1]);
        assert_eq!(t.next_expiry, 100);
        t.detach(1);
        out.clear();
        t.expired(100, &mut out);
        assert_eq!(out, [0]);
        assert_eq!(t.next_expiry, u32::MAX, "an exp past 2106 saturates");
    }

    #[test]
    fn a_connection_asked_to_leave_keeps_its_user_but_not_its_time() {
        let counts = Arc::new(UserCounts::new(1));
        let mut t = Identities::new(Some(Arc::clone(&counts)));
        t.attach(4, &verified("a", &["x"], 50)).unwrap();
        let mut out = Vec::new();
        t.expired(60, &mut out);
        assert_eq!(out, [4]);
        t.asked_to_leave(4);
        out.clear();
        t.expired(61, &mut out);
        assert!(out.is_empty(), "not found again while it closes");
        assert_eq!((t.get(4).map(|u| u.expires), counts.held("a")), (Some(0), 1), "held until removed");
        t.detach(4);
        assert_eq!(counts.held("a"), 0);
    }

    #[test]
    fn a_shrunk_table_gives_back_its_peak() {
        let mut t = Identities::new(None);
        for slot in 0..100 {
            t.attach(slot, &verified(&format!("u{slot}"), &[], 100)).unwrap();
        }
        for slot in 1..100 {
            t.detach(slot);
        }
        t.release_memory();
        assert_eq!((t.by_slot.len(), t.users.len(), t.users.numbers()), (1, 1, 1));
        t.attach(7, &verified("again", &[], 100)).unwrap();
        assert_eq!(t.get(7).map(|u| u.id), Some("again"));
    }

    #[test]
    fn the_per_user_cap_is_charged_while_a_slot_holds_the_user() {
        let counts = Arc::new(UserCounts::new(1));
        let mut a = Identities::new(Some(Arc::clone(&counts)));
        let mut b = Identities::new(Some(Arc::clone(&counts)));
        a.attach(0, &verified("alice", &[], 100)).unwrap();
        assert_eq!(b.attach(0, &verified("alice", &[], 100)), Err(Rejection::UserLimit), "another loop");
        assert!(b.get(0).is_none());
        a.detach(0);
        b.attach(0, &verified("alice", &[], 100)).unwrap();
        assert_eq!(counts.held("alice"), 1);
    }
}
