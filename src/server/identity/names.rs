//! The user ids a loop's connections hold, each kept once in one byte
//! arena and numbered: a held name costs its bytes, a 12-byte entry and a
//! 4-byte place in the index (at its load factor, ~5-9 bytes), and no
//! allocation of its own, so a loop of distinct users is a few large
//! buffers, not a small allocation per user pinned between the upgrade's
//! short-lived ones.
//!
//! Invariants: an entry with holders names `arena[offset..offset + len]`,
//! copied from a `&str` (so valid UTF-8) and never moved but by
//! [`Names::compact`], which rewrites the offsets with it; the index holds
//! exactly the numbers of held entries, hashed by their names' bytes;
//! `dead` counts the arena bytes of names let go, and the arena is
//! compacted when they pass both the live names and the entries table (a
//! compaction walks both), so it holds at most twice the larger of them
//! (plus [`COMPACT_MIN`]) and no pattern of joins and leaves makes a
//! compaction cost more than the dead bytes it frees. Offsets are `u32`:
//! the live names of one loop are bounded at 4 GiB, past which
//! [`Names::hold`] refuses.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use hashbrown::HashTable;

/// An arena smaller than this is never compacted: moving it saves little.
const COMPACT_MIN: usize = 4096;

/// One number's name and its holders (`holders == 0`: a free number).
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    offset: u32,
    len: u32,
    holders: u32,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct Names {
    arena: Vec<u8>,
    /// By number.
    entries: Vec<Entry>,
    /// Numbers of held entries, found by name.
    index: HashTable<u32>,
    /// Free numbers (entries without holders).
    free: Vec<u32>,
    /// Arena bytes of names no longer held.
    dead: usize,
    /// Hashes names: keyed per table, so nobody can choose colliding ids.
    hasher: RandomState,
}

/// The arena is full: the live names of one loop reached 4 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ArenaFull;

impl Names {
    fn bytes_of(arena: &[u8], entry: Entry) -> &[u8] {
        &arena[entry.offset as usize..(entry.offset + entry.len) as usize]
    }

    /// The number of `name`, held once more (kept if it is new).
    pub(super) fn hold(&mut self, name: &str) -> Result<u32, ArenaFull> {
        let hash = self.hasher.hash_one(name.as_bytes());
        let (arena, entries) = (&self.arena, &self.entries);
        if let Some(&n) = self.index.find(hash, |&n| Self::bytes_of(arena, entries[n as usize]) == name.as_bytes()) {
            self.entries[n as usize].holders += 1;
            return Ok(n);
        }
        if u32::try_from(self.arena.len() + name.len()).is_err() {
            self.compact();
            if u32::try_from(self.arena.len() + name.len()).is_err() {
                return Err(ArenaFull);
            }
        }
        let entry = Entry { offset: self.arena.len() as u32, len: name.len() as u32, holders: 1 };
        self.arena.extend_from_slice(name.as_bytes());
        let n = match self.free.pop() {
            Some(n) => {
                self.entries[n as usize] = entry;
                n
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        };
        let hasher = &self.hasher;
        let (arena, entries) = (&self.arena, &self.entries);
        self.index.insert_unique(hash, n, |&m| hasher.hash_one(Self::bytes_of(arena, entries[m as usize])));
        Ok(n)
    }

    /// One holder of number `n` fewer; the last one frees its name.
    pub(super) fn let_go(&mut self, n: u32) {
        let Some(entry) = self.entries.get_mut(n as usize).filter(|e| e.holders > 0) else {
            debug_assert!(false, "let go of a number nobody holds");
            return;
        };
        entry.holders -= 1;
        if entry.holders > 0 {
            return;
        }
        let entry = *entry;
        let hash = self.hasher.hash_one(Self::bytes_of(&self.arena, entry));
        match self.index.find_entry(hash, |&m| m == n) {
            Ok(found) => drop(found.remove()),
            Err(_) => debug_assert!(false, "a held number is in the index"),
        }
        self.dead += entry.len as usize;
        self.entries[n as usize] = Entry::default();
        self.free.push(n);
        let walked = self.arena.len() - self.dead + self.entries.len() * std::mem::size_of::<Entry>();
        if self.dead > COMPACT_MIN.max(walked) {
            self.compact();
        }
    }

    /// The name of held number `n`.
    pub(super) fn get(&self, n: u32) -> &str {
        debug_assert!(self.entries[n as usize].holders > 0, "a held number");
        // Copied from a &str and moved whole: always UTF-8.
        std::str::from_utf8(Self::bytes_of(&self.arena, self.entries[n as usize])).unwrap_or_default()
    }

    /// The number of `name`, if it is held.
    pub(super) fn find(&self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name.as_bytes());
        self.index.find(hash, |&n| Self::bytes_of(&self.arena, self.entries[n as usize]) == name.as_bytes()).copied()
    }

    /// Moves the held names to the front of a new arena, in number order,
    /// leaving out the dead ones. Numbers (and so the index) do not change.
    fn compact(&mut self) {
        let live = self.arena.len() - self.dead;
        let mut arena = Vec::with_capacity(live);
        for entry in self.entries.iter_mut().filter(|e| e.holders > 0) {
            let from = entry.offset as usize..(entry.offset + entry.len) as usize;
            entry.offset = arena.len() as u32;
            arena.extend_from_slice(&self.arena[from]);
        }
        debug_assert_eq!(arena.len(), live, "dead bytes were counted right");
        self.arena = arena;
        self.dead = 0;
    }

    /// Gives back what a shrunk loop no longer needs: dead names, free
    /// numbers at the end, and every table's room past what is held.
    pub(super) fn shrink(&mut self) {
        self.compact();
        let held = self.entries.iter().rposition(|e| e.holders > 0).map_or(0, |i| i + 1);
        self.entries.truncate(held);
        self.entries.shrink_to_fit();
        self.free.retain(|&n| (n as usize) < held);
        self.free.shrink_to_fit();
        let (hasher, arena, entries) = (&self.hasher, &self.arena, &self.entries);
        self.index.shrink_to_fit(|&m| hasher.hash_one(Self::bytes_of(arena, entries[m as usize])));
    }

    /// Distinct names held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// Numbers in the entries table, held or free.
    #[cfg(test)]
    pub(super) fn numbers(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_kept_once_and_forgotten_with_its_last_holder() {
        let mut names = Names::default();
        let alice = names.hold("alice").unwrap();
        assert_eq!(names.hold("alice"), Ok(alice));
        let bob = names.hold("bob").unwrap();
        assert_ne!(alice, bob);
        assert_eq!((names.get(alice), names.get(bob), names.len()), ("alice", "bob", 2));
        assert_eq!((names.find("alice"), names.find("carol")), (Some(alice), None));
        names.let_go(alice);
        assert_eq!(names.find("alice"), Some(alice), "one holder left");
        names.let_go(alice);
        assert_eq!((names.find("alice"), names.len()), (None, 1));
        assert_eq!(names.hold("carol"), Ok(alice), "the free number is reused");
        assert_eq!((names.get(alice), names.get(bob)), ("carol", "bob"));
    }

    #[test]
    fn names_let_go_are_compacted_away_and_the_others_keep_their_numbers() {
        let mut names = Names::default();
        let held: Vec<(String, u32)> = (0..2000)
            .map(|i| {
                // Long enough that the names, not the entries, are most of
                // what a compaction walks.
                let name = format!("user-{i}-ü-{}", "x".repeat(56));
                let n = names.hold(&name).unwrap();
                (name, n)
            })
            .collect();
        let peak = names.arena.len();
        for (_, n) in held.iter().filter(|(_, n)| n % 4 != 0) {
            names.let_go(*n);
        }
        assert!(names.arena.len() < peak, "compacted once most were let go");
        assert!(names.dead <= names.arena.len() - names.dead + names.entries.len() * 12, "dead bytes bounded");
        let reused = names.hold("new after the compaction").unwrap();
        assert!(reused % 4 != 0, "a freed number is reused");
        assert_eq!(
            (names.get(reused), names.find("new after the compaction")),
            ("new after the compaction", Some(reused))
        );
        names.let_go(reused);
        assert_eq!(names.find("new after the compaction"), None);
        for (name, n) in held.iter().filter(|(_, n)| n % 4 == 0) {
            assert_eq!((names.get(*n), names.find(name)), (name.as_str(), Some(*n)));
        }
        for (name, _) in held.iter().filter(|(_, n)| n % 4 != 0) {
            assert_eq!(names.find(name), None);
        }
        names.shrink();
        assert_eq!((names.dead, names.len()), (0, 500));
        assert_eq!(names.arena.len(), held.iter().filter(|(_, n)| n % 4 == 0).map(|(s, _)| s.len()).sum::<usize>());
        for (name, n) in held.iter().filter(|(_, n)| n % 4 == 0) {
            assert_eq!(names.get(*n), name);
            names.let_go(*n);
        }
        names.shrink();
        assert_eq!((names.arena.capacity(), names.entries.len(), names.free.len(), names.len()), (0, 0, 0, 0));
    }

    #[test]
    fn empty_and_prefix_names_are_told_apart() {
        let mut names = Names::default();
        let (ab, a, empty) = (names.hold("ab").unwrap(), names.hold("a").unwrap(), names.hold("").unwrap());
        assert_eq!((names.get(ab), names.get(a), names.get(empty)), ("ab", "a", ""));
        assert_eq!(names.len(), 3);
    }
}
