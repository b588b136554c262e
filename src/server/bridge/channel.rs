//! A room's Redis channel name, made so that no two (prefix, room) pairs
//! share a channel.
//!
//! The prefix must end with `:`, and the room's name is written after it
//! with every `%` as `%25` and every `:` as `%3A`. The written name holds
//! no `:`, so a channel's last `:` ends its prefix: the prefix and the
//! room are read back from the channel alone, and two hosts with different
//! prefixes never meet on one channel (room `tenant2:lobby` under
//! `wsloop:room:` is `wsloop:room:tenant2%3Alobby`, not room `lobby` under
//! `wsloop:room:tenant2:`). A room without `%` or `:` keeps its plain name
//! (`wsloop:room:lobby`), as before this scheme.

use std::fmt;

/// What a prefix ends with, and what a written room name never holds.
pub const SEPARATOR: char = ':';

/// Why a prefix cannot name channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixError(String);

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the channel prefix {:?} must end with '{SEPARATOR}' (e.g. \"wsloop:room:\")", self.0)
    }
}

impl std::error::Error for PrefixError {}

/// Checks that `prefix` ends with [`SEPARATOR`].
pub fn check_prefix(prefix: &str) -> Result<(), PrefixError> {
    if prefix.ends_with(SEPARATOR) {
        Ok(())
    } else {
        Err(PrefixError(prefix.to_string()))
    }
}

/// Writes `room`'s channel under `prefix` into `out` (cleared first).
pub fn write(out: &mut String, prefix: &str, room: &str) {
    out.clear();
    out.reserve(prefix.len() + encoded_len(room));
    out.push_str(prefix);
    for c in room.chars() {
        match c {
            '%' => out.push_str("%25"),
            SEPARATOR => out.push_str("%3A"),
            c => out.push(c),
        }
    }
}

/// The admin API's control channel under `prefix` (`prefix + ":admin"`):
/// no room's channel, since a room's own `:` is always written `%3A`.
pub fn admin(prefix: &str) -> String {
    format!("{prefix}{SEPARATOR}admin")
}

/// Bytes `room` takes in a channel name.
pub fn encoded_len(room: &str) -> usize {
    room.len() + 2 * room.bytes().filter(|&b| b == b'%' || b == SEPARATOR as u8).count()
}

/// The room whose channel under `prefix` is `channel`; `None` when it is
/// no such channel (another prefix, or a name [`write`] never writes).
pub fn room_of(prefix: &str, channel: &str) -> Option<String> {
    let written = channel.strip_prefix(prefix)?;
    if written.contains(SEPARATOR) {
        return None;
    }
    let mut room = String::with_capacity(written.len());
    let mut rest = written;
    while let Some(at) = rest.find('%') {
        room.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("%25") => room.push('%'),
            Some("%3A") => room.push(SEPARATOR),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    room.push_str(rest);
    Some(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(prefix: &str, room: &str) -> String {
        let mut out = String::from("left over");
        write(&mut out, prefix, room);
        assert_eq!(out.len(), prefix.len() + encoded_len(room));
        out
    }

    #[test]
    fn plain_names_keep_their_channel_and_separators_are_written_out() {
        assert_eq!(channel("wsloop:room:", "lobby"), "wsloop:room:lobby");
        assert_eq!(channel("wsloop:room:", "news.*"), "wsloop:room:news.*");
        assert_eq!(channel("wsloop:room:", "tenant2:lobby"), "wsloop:room:tenant2%3Alobby");
        assert_eq!(channel("wsloop:room:", "100%:x"), "wsloop:room:100%25%3Ax");
        assert_eq!(channel("p:", "é:ü"), "p:é%3Aü");
    }

    #[test]
    fn the_issue_case_no_longer_collides() {
        assert_ne!(channel("wsloop:room:", "tenant2:lobby"), channel("wsloop:room:tenant2:", "lobby"));
    }

    #[test]
    fn no_two_prefix_room_pairs_share_a_channel() {
        let prefixes = ["a:", "a:b:", "a:b%3A:", ":", "::", "wsloop:room:", "wsloop:room:tenant2:"];
        let rooms = ["", "b", "b:", ":b", "b:c", "%", "%3A", "%253A", "b%3Ac", "lobby", "tenant2:lobby", "::"];
        let mut seen = std::collections::HashMap::new();
        for p in prefixes {
            for r in rooms {
                let c = channel(p, r);
                if let Some(first) = seen.insert(c.clone(), (p, r)) {
                    panic!("{first:?} and {:?} share {c:?}", (p, r));
                }
                assert_eq!(room_of(p, &c).as_deref(), Some(r), "{c}");
                // Read under any other prefix, it is no room of theirs.
                for other in prefixes.iter().filter(|&&o| o != p) {
                    assert_eq!(room_of(other, &c), None, "{c} read under {other}");
                }
            }
        }
    }

    #[test]
    fn the_admin_channel_is_no_room_of_any_prefix() {
        assert_eq!(admin("wsloop:room:"), "wsloop:room::admin");
        for p in ["wsloop:room:", "a:", ":"] {
            assert_eq!(room_of(p, &admin(p)), None);
            assert_ne!(admin(p), channel(p, ":admin"));
        }
    }

    #[test]
    fn channels_no_writer_makes_are_no_room() {
        for c in ["x:a:b", "x:%", "x:%2", "x:%3a", "x:%41", "y:a"] {
            assert_eq!(room_of("x:", c), None, "{c}");
        }
    }

    #[test]
    fn a_prefix_must_end_with_the_separator() {
        assert!(check_prefix("wsloop:room:").is_ok());
        assert!(check_prefix(":").is_ok());
        for bad in ["", "wsloop:room", "wsloop.room.", "a:b"] {
            let e = check_prefix(bad).unwrap_err();
            assert!(e.to_string().contains("must end with ':'"), "{e}");
        }
    }
}
