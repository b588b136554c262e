//! Room membership of one event loop: which of this loop's connections are
//! in which room. Each loop keeps its own; a publish reaches the other
//! loops through their inboxes, so nothing here is shared or locked.
//!
//! A connection that is in no room costs nothing here; one that is in
//! rooms has a small list of room ids, so closing it leaves every room in
//! O(rooms it was in).
//!
//! With a Redis bridge, a room's birth and death on this loop are reported
//! to the process-wide [`Directory`], which keeps Redis subscribed to the
//! rooms that have members somewhere in the process.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use slab::Slab;

use super::directory::Directory;

/// Limits on what a connection may do with rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomLimits {
    /// Longest room name, in bytes.
    pub max_name_len: usize,
    /// Rooms one connection may be in at once.
    pub max_rooms_per_conn: usize,
}

impl RoomLimits {
    /// Whether a room may be called `name`: not empty, at most
    /// `max_name_len` bytes. Join and publish both ask here, so a name no
    /// connection can join is never published to (nor sent to Redis).
    pub fn check_name(&self, name: &str) -> Result<(), RoomError> {
        if name.is_empty() || name.len() > self.max_name_len {
            return Err(RoomError::BadName);
        }
        Ok(())
    }
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits { max_name_len: 128, max_rooms_per_conn: 64 }
    }
}

/// Why a room operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomError {
    /// The name is empty or longer than the limit.
    BadName,
    /// The connection is already in as many rooms as allowed.
    TooManyRooms,
    /// Leave (or publish-only check) on a room the connection is not in.
    NotMember,
    /// The connection's rights (its token's claims) do not allow it.
    Forbidden,
}

impl RoomError {
    /// A stable label for replies and logs.
    pub fn label(self) -> &'static str {
        match self {
            RoomError::BadName => "bad_room_name",
            RoomError::TooManyRooms => "too_many_rooms",
            RoomError::NotMember => "unknown_room",
            RoomError::Forbidden => "forbidden",
        }
    }
}

impl fmt::Display for RoomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoomError::BadName => "room name empty or too long",
            RoomError::TooManyRooms => "too many rooms for this connection",
            RoomError::NotMember => "not a member of that room",
            RoomError::Forbidden => "not allowed by the connection's token",
        })
    }
}

impl std::error::Error for RoomError {}

#[derive(Debug)]
struct Room {
    name: Arc<str>,
    members: HashSet<u32>,
}

/// One loop's rooms.
#[derive(Debug, Default)]
pub struct Rooms {
    ids: HashMap<Arc<str>, usize>,
    rooms: Slab<Room>,
    of_conn: HashMap<u32, Vec<usize>>,
    members: usize,
    /// Told when a room appears on or leaves this loop.
    directory: Option<Arc<Directory>>,
}

impl Rooms {
    /// A loop's rooms, reporting to `directory` when there is one.
    pub fn new(directory: Option<Arc<Directory>>) -> Rooms {
        Rooms { directory, ..Rooms::default() }
    }

    /// Puts connection `slot` in room `name`. Joining a room twice is not
    /// an error (and not counted twice).
    pub fn join(&mut self, slot: u32, name: &str, limits: &RoomLimits) -> Result<(), RoomError> {
        limits.check_name(name)?;
        let mine = self.of_conn.get(&slot).map_or(0, Vec::len);
        let id = match self.ids.get(name) {
            Some(&id) if self.rooms[id].members.contains(&slot) => return Ok(()),
            Some(&id) => id,
            None => {
                if mine >= limits.max_rooms_per_conn {
                    return Err(RoomError::TooManyRooms);
                }
                let name: Arc<str> = name.into();
                let id = self.rooms.insert(Room { name: name.clone(), members: HashSet::new() });
                if let Some(directory) = &self.directory {
                    directory.opened(&name);
                }
                self.ids.insert(name, id);
                id
            }
        };
        if mine >= limits.max_rooms_per_conn {
            return Err(RoomError::TooManyRooms);
        }
        self.rooms[id].members.insert(slot);
        self.of_conn.entry(slot).or_default().push(id);
        self.members += 1;
        Ok(())
    }

    /// Takes connection `slot` out of room `name`.
    pub fn leave(&mut self, slot: u32, name: &str) -> Result<(), RoomError> {
        let id = *self.ids.get(name).ok_or(RoomError::NotMember)?;
        if !self.rooms[id].members.contains(&slot) {
            return Err(RoomError::NotMember);
        }
        if let Some(list) = self.of_conn.get_mut(&slot) {
            list.retain(|r| *r != id);
            if list.is_empty() {
                self.of_conn.remove(&slot);
            }
        }
        self.drop_member(id, slot);
        Ok(())
    }

    /// Takes a closing connection out of every room it is in.
    pub fn remove_conn(&mut self, slot: u32) {
        if let Some(list) = self.of_conn.remove(&slot) {
            for id in list {
                self.drop_member(id, slot);
            }
        }
    }

    fn drop_member(&mut self, id: usize, slot: u32) {
        let room = &mut self.rooms[id];
        if room.members.remove(&slot) {
            self.members -= 1;
        }
        if room.members.is_empty() {
            let room = self.rooms.remove(id);
            self.ids.remove(&room.name);
            if let Some(directory) = &self.directory {
                directory.closed(&room.name);
            }
        }
    }

    /// The members of room `name` on this loop (slots), if any.
    pub fn members(&self, name: &str) -> impl Iterator<Item = u32> + '_ {
        self.ids.get(name).into_iter().flat_map(move |&id| self.rooms[id].members.iter().copied())
    }

    /// The names of the rooms `slot` is a member of.
    pub fn rooms_of(&self, slot: u32) -> Vec<String> {
        let ids = self.of_conn.get(&slot).map_or(&[][..], Vec::as_slice);
        ids.iter().map(|&id| self.rooms[id].name.to_string()).collect()
    }

    /// True if `slot` is in room `name`.
    pub fn is_member(&self, slot: u32, name: &str) -> bool {
        self.ids.get(name).is_some_and(|&id| self.rooms[id].members.contains(&slot))
    }

    /// Frees the table space a crowd of members left behind.
    pub fn shrink_to_fit(&mut self) {
        self.ids.shrink_to_fit();
        self.of_conn.shrink_to_fit();
        self.rooms.shrink_to_fit();
    }

    /// Rooms with at least one member on this loop.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The rooms named after `after` (all, without it): the first `limit`
    /// in name order with their member counts here, and whether there
    /// were more. Answers stay bounded by `limit` however many rooms
    /// there are, and the first `limit` names of every loop are enough to
    /// know the process's first `limit` names and their whole counts.
    pub fn counts(&self, after: Option<&str>, limit: usize) -> (Vec<(Arc<str>, u64)>, bool) {
        let mut rooms: Vec<(&Arc<str>, usize)> = (self.rooms.iter())
            .filter(|(_, room)| after.is_none_or(|a| &*room.name > a))
            .map(|(_, room)| (&room.name, room.members.len()))
            .collect();
        let more = rooms.len() > limit;
        if more {
            rooms.select_nth_unstable_by(limit, |a, b| a.0.cmp(b.0));
            rooms.truncate(limit);
        }
        rooms.sort_unstable_by(|a, b| a.0.cmp(b.0));
        (rooms.into_iter().map(|(name, n)| (name.clone(), n as u64)).collect(), more)
    }

    /// Memberships on this loop.
    pub fn member_count(&self) -> usize {
        self.members
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_leave_close() {
        let limits = RoomLimits::default();
        let mut r = Rooms::default();
        r.join(1, "a", &limits).unwrap();
        r.join(2, "a", &limits).unwrap();
        r.join(2, "a", &limits).unwrap(); // idempotent
        r.join(2, "b", &limits).unwrap();
        assert_eq!((r.room_count(), r.member_count()), (2, 3));
        let mut a: Vec<u32> = r.members("a").collect();
        a.sort();
        assert_eq!(a, [1, 2]);
        r.leave(1, "a").unwrap();
        assert_eq!(r.leave(1, "a"), Err(RoomError::NotMember));
        assert_eq!(r.leave(1, "zzz"), Err(RoomError::NotMember));
        r.remove_conn(2);
        assert_eq!((r.room_count(), r.member_count()), (0, 0));
        assert_eq!(r.members("a").count(), 0);
    }

    #[test]
    fn a_room_is_reported_when_it_appears_and_when_it_empties() {
        let limits = RoomLimits::default();
        let directory = Arc::new(Directory::default());
        let mut r = Rooms::new(Some(directory.clone()));
        let rooms = || {
            let mut names: Vec<String> = directory.snapshot().1.iter().map(|n| n.to_string()).collect();
            names.sort();
            names
        };
        r.join(1, "a", &limits).unwrap();
        r.join(2, "a", &limits).unwrap();
        r.join(2, "b", &limits).unwrap();
        assert_eq!(rooms(), ["a", "b"]);
        let g = directory.generation();
        r.leave(1, "a").unwrap(); // a still has member 2: no change
        assert_eq!(directory.generation(), g);
        r.remove_conn(2);
        assert!(rooms().is_empty());
        // A refused join reports nothing.
        assert_eq!(r.join(3, "", &limits), Err(RoomError::BadName));
        assert!(rooms().is_empty());
    }

    #[test]
    fn counts_are_paged_in_name_order_and_bounded() {
        let limits = RoomLimits::default();
        let mut r = Rooms::default();
        for (slot, room) in [(1, "c"), (2, "a"), (3, "b"), (4, "a"), (5, "d")] {
            r.join(slot, room, &limits).unwrap();
        }
        let named = |v: Vec<(Arc<str>, u64)>| v.into_iter().map(|(n, c)| (n.to_string(), c)).collect::<Vec<_>>();
        let (first, more) = r.counts(None, 2);
        assert_eq!((named(first), more), (vec![("a".into(), 2), ("b".into(), 1)], true));
        let (rest, more) = r.counts(Some("b"), 2);
        assert_eq!((named(rest), more), (vec![("c".into(), 1), ("d".into(), 1)], false));
        assert_eq!(r.counts(Some("d"), 2), (vec![], false));
        assert!(r.counts(None, 0).1);
    }

    #[test]
    fn limits() {
        let limits = RoomLimits { max_name_len: 4, max_rooms_per_conn: 2 };
        let mut r = Rooms::default();
        assert_eq!(r.join(1, "", &limits), Err(RoomError::BadName));
        assert_eq!(r.join(1, "toolong", &limits), Err(RoomError::BadName));
        r.join(1, "a", &limits).unwrap();
        r.join(1, "b", &limits).unwrap();
        assert_eq!(r.join(1, "c", &limits), Err(RoomError::TooManyRooms));
        r.join(2, "c", &limits).unwrap();
        assert_eq!(r.join(1, "c", &limits), Err(RoomError::TooManyRooms));
        assert_eq!(r.room_count(), 3);
    }
}
