//! What a verified token lets its connection do with rooms: the rooms it
//! may join, the rooms it may publish to, and whether it may broadcast to
//! everyone. Read from the token's `wsloop` claim:
//!
//! ```json
//! {"sub": "alice", "exp": 1796083200,
//!  "wsloop": {"join": ["chat:*", "user:{sub}"], "publish": ["chat:*"], "broadcast": false}}
//! ```
//!
//! A pattern is a room name, or a prefix ending in `*` (`chat:*`, or `*`
//! for every room); `{sub}` anywhere stands for the connection's own user
//! id, so one set of rights serves every user (and is stored once per
//! loop, however many connections hold it). A token without the claim may
//! do none of the three: rights are granted, never assumed.
//!
//! Bounds (a token is signed by the service, but the service may be
//! careless): at most [`MAX_PATTERNS`] patterns per list, each at most
//! [`MAX_PATTERN_LEN`] bytes, at most one `*`, and only at the end, never
//! right after `{sub}` (`user:{sub}*` would let user `al` into
//! `user:alice`).
//!
//! A user id is matched as text, so one user's id cannot reach into
//! another's rooms: an id holding a character that follows `{sub}` in any
//! pattern of a list (a separator) gets nothing from that list's `{sub}`
//! patterns (with `user:{sub}` and `user:{sub}:*`, user `bob:x` gets
//! neither `user:bob:x`, which is `bob`'s room `x`, nor
//! `user:bob:x:inbox`). Patterns whose fixed parts are prefixes of one
//! another (`dm:{sub}`, `dm:admin-{sub}`) can still name one room for two
//! users; that is the issuer's choice of names.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Patterns in one list (`join` or `publish`) at most.
pub const MAX_PATTERNS: usize = 64;

/// Bytes in one pattern at most.
pub const MAX_PATTERN_LEN: usize = 256;

/// What a connection may do with rooms. Equal rights compare equal, so a
/// loop keeps each distinct set once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rights {
    /// Rooms it may join.
    #[serde(default)]
    pub join: Vec<String>,
    /// Rooms it may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Whether it may send to every connection.
    #[serde(default)]
    pub broadcast: bool,
}

/// Why a token's rights cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RightsError {
    /// A list holds more than [`MAX_PATTERNS`] patterns.
    TooMany,
    /// A pattern is empty, longer than [`MAX_PATTERN_LEN`], has a `*`
    /// anywhere but at its end, or right after `{sub}`.
    BadPattern(String),
}

impl fmt::Display for RightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RightsError::TooMany => write!(f, "more than {MAX_PATTERNS} room patterns in one list"),
            RightsError::BadPattern(p) => {
                let shown: String = p.chars().take(40).collect();
                write!(f, "room pattern {shown:?}: empty, too long, or a '*' before its end")
            }
        }
    }
}

impl std::error::Error for RightsError {}

impl Rights {
    /// Every right: what a connection has when identities are off.
    pub fn all() -> Self {
        Rights { join: vec!["*".into()], publish: vec!["*".into()], broadcast: true }
    }

    /// The rights, if every pattern is within the bounds.
    pub fn checked(self) -> Result<Self, RightsError> {
        for list in [&self.join, &self.publish] {
            if list.len() > MAX_PATTERNS {
                return Err(RightsError::TooMany);
            }
            if let Some(bad) = list.iter().find(|p| !pattern_is_valid(p)) {
                return Err(RightsError::BadPattern(bad.clone()));
            }
        }
        Ok(self)
    }

    /// True if user `sub` may join `room`.
    pub fn may_join(&self, sub: &str, room: &str) -> bool {
        list_matches(&self.join, sub, room)
    }

    /// True if user `sub` may publish to `room`.
    pub fn may_publish(&self, sub: &str, room: &str) -> bool {
        list_matches(&self.publish, sub, room)
    }
}

fn pattern_is_valid(p: &str) -> bool {
    let star = p.find('*');
    !p.is_empty()
        && p.len() <= MAX_PATTERN_LEN
        && star.is_none_or(|at| at == p.len() - 1)
        && !p.contains(concat!("{sub}", "*"))
}

/// Whether a pattern of `list` names `room` for user `sub`. An id that
/// holds a character which follows `{sub}` in any pattern of the list
/// (its separators) matches none of the list's `{sub}` patterns: with
/// `user:{sub}` and `user:{sub}:*`, user `bob:x` would otherwise be given
/// `user:bob:x`, which is also `bob`'s room `x`.
fn list_matches(list: &[String], sub: &str, room: &str) -> bool {
    let separated =
        |p: &String| p.match_indices("{sub}").any(|(at, _)| separator_after(p, at).is_some_and(|c| sub.contains(c)));
    let bars_sub = list.iter().any(separated);
    list.iter().any(|p| !(bars_sub && p.contains("{sub}")) && pattern_matches(p, sub, room))
}

/// The character after the `{sub}` at `at` in `pattern`, unless another
/// `{sub}` follows at once.
fn separator_after(pattern: &str, at: usize) -> Option<char> {
    let rest = &pattern[at + "{sub}".len()..];
    if rest.starts_with("{sub}") {
        return None;
    }
    rest.chars().next().filter(|&c| c != '*')
}

/// Whether `room` is named by `pattern` for user `sub`: `{sub}` stands for
/// the user id, a final `*` for any rest (also none). No allocation: the
/// pattern's literal pieces and the user id are matched in turn.
fn pattern_matches(pattern: &str, sub: &str, room: &str) -> bool {
    let (mut pattern, prefix_only) = match pattern.strip_suffix('*') {
        Some(head) => (head, true),
        None => (pattern, false),
    };
    let mut room = room;
    while let Some(at) = pattern.find("{sub}") {
        let Some(rest) = room.strip_prefix(&pattern[..at]).and_then(|r| r.strip_prefix(sub)) else {
            return false;
        };
        room = rest;
        pattern = &pattern[at + "{sub}".len()..];
        // The id must end where the pattern's next piece starts: an id
        // holding that piece's first character could stand for another's.
        if !pattern.starts_with("{sub}") && pattern.chars().next().is_some_and(|next| sub.contains(next)) {
            return false;
        }
    }
    if prefix_only {
        room.starts_with(pattern)
    } else {
        room == pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_name_rooms_exactly_by_prefix_or_by_user() {
        let cases = [
            ("lobby", "alice", "lobby", true),
            ("lobby", "alice", "lobby2", false),
            ("lobby", "alice", "lobb", false),
            ("chat:*", "alice", "chat:", true),
            ("chat:*", "alice", "chat:rust", true),
            ("chat:*", "alice", "chat", false),
            ("*", "alice", "anything", true),
            ("user:{sub}", "alice", "user:alice", true),
            ("user:{sub}", "alice", "user:alice2", false),
            ("user:{sub}", "alice", "user:bob", false),
            ("user:{sub}:*", "alice", "user:alice:inbox", true),
            ("user:{sub}:*", "alice", "user:alicex:inbox", false),
            ("{sub}/{sub}", "a", "a/a", true),
            ("{sub}/{sub}", "a", "a/b", false),
            // A user id that looks like a pattern is only text.
            ("user:{sub}", "*", "user:*", true),
            ("user:{sub}", "*", "user:bob", false),
            // An id cannot reach into another's rooms: `bob:x` is not
            // `bob` with more, whichever of them asks.
            ("user:{sub}:*", "bob", "user:bob:x:inbox", true),
            ("user:{sub}:*", "bob:x", "user:bob:x:inbox", false),
            ("user:{sub}:*", "bob:x", "user:bob:x:", false),
            ("{sub}/{sub}", "a/b", "a/b/a/b", false),
            ("user:{sub}", "bob:x", "user:bob:x", true),
        ];
        for (pattern, sub, room, expected) in cases {
            assert_eq!(pattern_matches(pattern, sub, room), expected, "{pattern} {sub} {room}");
        }
    }

    #[test]
    fn an_id_holding_a_separator_of_any_pattern_gets_no_sub_room_from_the_list() {
        let rights =
            Rights { join: vec!["user:{sub}".into(), "user:{sub}:*".into(), "lobby".into()], ..Rights::default() };
        assert!(rights.may_join("bob", "user:bob") && rights.may_join("bob", "user:bob:x"));
        // `bob:x` holds the list's separator ':': not `user:bob:x` (bob's room x).
        assert!(!rights.may_join("bob:x", "user:bob:x"));
        assert!(!rights.may_join("bob:x", "user:bob:x:y"));
        assert!(rights.may_join("bob:x", "lobby"), "patterns without {{sub}} still apply");
        // Only `{sub}` is exempt as what follows: another brace is a separator.
        assert!(!pattern_matches("user:{sub}{x*", "a{x", "user:a{x{x1"));
        assert!(pattern_matches("{sub}{sub}", "ab", "abab"));
    }

    #[test]
    fn the_claim_is_read_and_bounded() {
        let rights: Rights =
            serde_json::from_str(r#"{"join":["chat:*","user:{sub}"],"publish":["chat:*"],"broadcast":true}"#).unwrap();
        let rights = rights.checked().unwrap();
        assert!(rights.may_join("bob", "user:bob") && !rights.may_join("bob", "user:alice"));
        assert!(rights.may_publish("bob", "chat:x") && !rights.may_publish("bob", "user:bob"));
        assert!(rights.broadcast);
        let none: Rights = serde_json::from_str("{}").unwrap();
        assert!(!none.may_join("a", "lobby") && !none.may_publish("a", "lobby") && !none.broadcast);
        assert!(serde_json::from_str::<Rights>(r#"{"join":[],"admin":true}"#).is_err(), "unknown fields refused");
        for bad in ["", "a*b", "**", "user:{sub}*", &"x".repeat(MAX_PATTERN_LEN + 1)] {
            let rights = Rights { join: vec![bad.to_string()], ..Rights::default() };
            assert!(matches!(rights.checked(), Err(RightsError::BadPattern(_))), "{bad:?}");
        }
        let many = Rights { publish: vec!["a".into(); MAX_PATTERNS + 1], ..Rights::default() };
        assert_eq!(many.checked(), Err(RightsError::TooMany));
        assert!(Rights::all().may_join("x", "y") && Rights::all().may_publish("x", "") && Rights::all().broadcast);
    }
}
