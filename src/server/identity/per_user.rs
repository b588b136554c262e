//! `--max-conns-per-user`: how many connections one user id may hold open
//! in this process, across every loop. Touched at upgrade and at close
//! only (never per message), in shards each behind its own lock so loops
//! upgrading at once rarely wait on one another. A user with no connection
//! left is forgotten, so the table holds only users who are connected.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// Shards of the table.
const SHARDS: usize = 16;

/// The process-wide count of each connected user's connections.
#[derive(Debug)]
pub(crate) struct UserCounts {
    /// Connections one user may hold; at least 1.
    max: u32,
    shards: Vec<Mutex<HashMap<Arc<str>, u32>>>,
}

impl UserCounts {
    /// A table enforcing `max` connections per user.
    pub(crate) fn new(max: u32) -> Self {
        debug_assert!(max > 0, "a cap of 0 is no cap: build no table");
        UserCounts { max, shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    fn shard(&self, user: &str) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, u32>> {
        let mut h = DefaultHasher::new();
        user.hash(&mut h);
        let shard = &self.shards[h.finish() as usize % SHARDS];
        shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one more connection of `user`, or false (and counts nothing)
    /// if it holds the most it may already.
    pub(crate) fn admit(&self, user: &str) -> bool {
        let mut shard = self.shard(user);
        match shard.get_mut(user) {
            Some(n) if *n >= self.max => false,
            Some(n) => {
                *n += 1;
                true
            }
            None => {
                shard.insert(Arc::from(user), 1);
                true
            }
        }
    }

    /// Counts one more connection of `user` whatever it holds (one carried
    /// over by a live hand-off, admitted once already).
    pub(crate) fn charge(&self, user: &str) {
        let mut shard = self.shard(user);
        match shard.get_mut(user) {
            Some(n) => *n += 1,
            None => {
                shard.insert(Arc::from(user), 1);
            }
        }
    }

    /// One connection of `user` is gone.
    pub(crate) fn release(&self, user: &str) {
        let mut shard = self.shard(user);
        match shard.get_mut(user) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                shard.remove(user);
            }
            None => debug_assert!(false, "released a user that holds no connection"),
        }
    }

    /// Connections `user` holds now.
    #[cfg(test)]
    pub(crate) fn held(&self, user: &str) -> u32 {
        self.shard(user).get(user).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_holds_at_most_its_cap_and_is_forgotten_when_gone() {
        let counts = UserCounts::new(2);
        assert!(counts.admit("alice") && counts.admit("alice"));
        assert!(!counts.admit("alice"), "third refused");
        assert!(counts.admit("bob"), "others unaffected");
        counts.release("alice");
        assert!(counts.admit("alice"), "a slot came free");
        for _ in 0..2 {
            counts.release("alice");
        }
        counts.release("bob");
        assert_eq!((counts.held("alice"), counts.held("bob")), (0, 0));
        assert!(counts.shards.iter().all(|s| s.lock().unwrap().is_empty()), "nobody left in the table");
    }
}
