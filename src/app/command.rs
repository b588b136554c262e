//! The built-in JSON commands: what a text message means when it is a JSON
//! object with a known `type`, and the replies they get. Anything else is
//! not a command (and is echoed).
//!
//! ```text
//! {"type":"ping","payload":P}                  -> {"type":"pong","payload":P,"ts":<unix ms>}
//! {"type":"join","room":"r"}                   -> {"type":"joined","room":"r"}
//! {"type":"leave","room":"r"}                  -> {"type":"left","room":"r"}
//! {"type":"publish","room":"r","data":D}       -> members: {"type":"message","room":"r","data":D}
//! {"type":"publish",...,"echo":false}          -> the same, not to the sender
//! {"type":"broadcast","data":D}                -> every connection: {"type":"broadcast","data":D}
//!                                                 (only with --allow-broadcast)
//! {"type":"broadcast",...,"echo":false}        -> the same, not to the sender
//! {"type":"refresh","token":T}                 -> {"type":"refreshed","exp":<unix s>} (--jwt-key:
//!                                                 a new token for the same user before the old expires)
//! failures                                     -> {"type":"error","error":CODE,"message":TEXT}
//! ```
//!
//! Error codes (the connection stays open after every one):
//!
//! ```text
//! bad_json            a {-message with a "type" that does not parse
//! missing_room        join, leave or publish without a "room"
//! bad_room_name       join or publish: the name is empty or over --max-room-name
//! too_many_rooms      join: already in --max-rooms-per-conn rooms
//! unknown_room        leave: not a member
//! too_large           publish or broadcast: "data" over --max-publish-size (default 1MiB)
//! broadcast_disabled  broadcast without --allow-broadcast
//! forbidden           join, publish or broadcast: the connection's token does not allow it
//! missing_token       refresh without a "token"
//! jwt_off             refresh on a server without --jwt-key
//! closing             refresh on a connection already closing
//! not_newer           refresh: its exp is no later than the token in use
//! expired, bad_signature, other_user, ...
//!                     refresh: the new token failed its check (the reasons
//!                     of wsloop_auth_refused_total); then 1008 "token refused"
//! ```
//!
//! A refused publish or broadcast (`bad_room_name` on a publish,
//! `too_large`, `broadcast_disabled`, `forbidden`) counts in
//! `wsloop_publish_refused_total{reason}`, the code as the reason.

use std::borrow::Cow;
use std::fmt::Write;

use serde::Deserialize;
use serde_json::value::RawValue;

/// A recognised command.
#[derive(Debug)]
pub enum Command<'a> {
    /// Answer with a pong carrying `payload`.
    Ping {
        /// Any JSON value, echoed verbatim.
        payload: Option<&'a RawValue>,
    },
    /// Join a room.
    Join {
        /// The room.
        room: Cow<'a, str>,
    },
    /// Leave a room.
    Leave {
        /// The room.
        room: Cow<'a, str>,
    },
    /// Send `data` to every member of a room.
    Publish {
        /// The room.
        room: Cow<'a, str>,
        /// Any JSON value, forwarded verbatim.
        data: Option<&'a RawValue>,
        /// Whether the sender gets its own copy (default true).
        echo: bool,
    },
    /// Send `data` to every connection of the server.
    Broadcast {
        /// Any JSON value, forwarded verbatim.
        data: Option<&'a RawValue>,
        /// Whether the sender gets its own copy (default true).
        echo: bool,
    },
    /// Replace the connection's token with a fresh one.
    Refresh {
        /// The new token.
        token: Cow<'a, str>,
    },
}

/// What a text message is.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A command.
    Command(Command<'a>),
    /// It tried to be a command and failed: reply with this error.
    Invalid {
        /// A stable code.
        code: &'static str,
        /// Words for a person.
        message: String,
    },
    /// Not a command: echo it.
    NotACommand,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    echo: Option<bool>,
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
}

/// Classifies a text message. Only text that starts with `{` is parsed.
pub fn parse<'a>(text: &'a str) -> Parsed<'a> {
    if !text.trim_start().starts_with('{') {
        return Parsed::NotACommand;
    }
    let raw: Raw<'_> = match serde_json::from_str(text) {
        Ok(raw) => raw,
        Err(e) if text.contains("\"type\"") => {
            return Parsed::Invalid { code: "bad_json", message: format!("invalid JSON: {e}") }
        }
        Err(_) => return Parsed::NotACommand,
    };
    let Some(kind) = raw.kind else { return Parsed::NotACommand };
    let needs_room = |room: Option<Cow<'a, str>>| -> Result<Cow<'a, str>, Parsed<'a>> {
        room.ok_or_else(|| Parsed::Invalid { code: "missing_room", message: format!("'{kind}' needs a \"room\"") })
    };
    let command = match kind.as_ref() {
        "ping" => Command::Ping { payload: raw.payload },
        "join" => match needs_room(raw.room) {
            Ok(room) => Command::Join { room },
            Err(e) => return e,
        },
        "leave" => match needs_room(raw.room) {
            Ok(room) => Command::Leave { room },
            Err(e) => return e,
        },
        "publish" => match needs_room(raw.room) {
            Ok(room) => Command::Publish { room, data: raw.data, echo: raw.echo.unwrap_or(true) },
            Err(e) => return e,
        },
        "broadcast" => Command::Broadcast { data: raw.data, echo: raw.echo.unwrap_or(true) },
        "refresh" => match raw.token {
            Some(token) => Command::Refresh { token },
            None => {
                let message = "'refresh' needs a \"token\"".to_string();
                return Parsed::Invalid { code: "missing_token", message };
            }
        },
        _ => return Parsed::NotACommand,
    };
    Parsed::Command(command)
}

/// Appends `s` as a JSON string.
fn json_str(out: &mut String, s: &str) {
    // Serialising a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// `{"type":"pong","payload":P,"ts":TS}`.
pub fn pong(out: &mut String, payload: Option<&RawValue>, ts_ms: u128) {
    out.clear();
    let payload = payload.map_or("null", RawValue::get);
    let _ = write!(out, r#"{{"type":"pong","payload":{payload},"ts":{ts_ms}}}"#);
}

/// `{"type":KIND,"room":R}` (joined, left).
pub fn room_ack(out: &mut String, kind: &str, room: &str) {
    out.clear();
    let _ = write!(out, r#"{{"type":"{kind}","room":"#);
    json_str(out, room);
    out.push('}');
}

/// `{"type":"message","room":R,"data":D}`.
pub fn room_message(out: &mut String, room: &str, data: Option<&RawValue>) {
    out.clear();
    out.push_str(r#"{"type":"message","room":"#);
    json_str(out, room);
    let _ = write!(out, r#","data":{}}}"#, data.map_or("null", RawValue::get));
}

/// `{"type":"refreshed","exp":EXP}`.
pub fn refreshed(out: &mut String, expires: u64) {
    out.clear();
    let _ = write!(out, r#"{{"type":"refreshed","exp":{expires}}}"#);
}

/// `{"type":"broadcast","data":D}`.
pub fn broadcast_message(out: &mut String, data: Option<&RawValue>) {
    out.clear();
    let _ = write!(out, r#"{{"type":"broadcast","data":{}}}"#, data.map_or("null", RawValue::get));
}

/// `{"type":"error","error":CODE,"message":TEXT}`.
pub fn error(out: &mut String, code: &str, message: &str) {
    out.clear();
    let _ = write!(out, r#"{{"type":"error","error":"{code}","message":"#);
    json_str(out, message);
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(text: &str) -> Command<'_> {
        match parse(text) {
            Parsed::Command(c) => c,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn commands() {
        assert!(
            matches!(command(r#"{"type":"ping","payload":{"a":1}}"#), Command::Ping { payload: Some(p) } if p.get() == r#"{"a":1}"#)
        );
        assert!(matches!(command(r#"{"type":"join","room":"r"}"#), Command::Join { room } if room == "r"));
        assert!(matches!(command(r#" {"room":"r\u00e9","type":"leave"}"#), Command::Leave { room } if room == "ré"));
        match command(r#"{"type":"publish","room":"r","data":[1,"x"],"echo":false}"#) {
            Command::Publish { room, data, echo } => {
                assert_eq!((room.as_ref(), data.unwrap().get(), echo), ("r", r#"[1,"x"]"#, false));
            }
            other => panic!("{other:?}"),
        }
        match command(r#"{"type":"broadcast","data":{"n":1},"echo":false}"#) {
            Command::Broadcast { data, echo } => assert_eq!((data.unwrap().get(), echo), (r#"{"n":1}"#, false)),
            other => panic!("{other:?}"),
        }
        let mut out = String::new();
        broadcast_message(&mut out, serde_json::from_str::<&RawValue>("[1]").ok());
        assert_eq!(out, r#"{"type":"broadcast","data":[1]}"#);
    }

    #[test]
    fn not_commands_are_echoed() {
        for text in ["hello", "[1,2]", "{not json", r#"{"kind":"x"}"#, r#"{"type":"other","room":"r"}"#, ""] {
            assert!(matches!(parse(text), Parsed::NotACommand), "{text}");
        }
    }

    #[test]
    fn broken_commands_are_errors() {
        assert!(matches!(parse(r#"{"type":"join","room":}"#), Parsed::Invalid { code: "bad_json", .. }));
        assert!(matches!(parse(r#"{"type":"join"}"#), Parsed::Invalid { code: "missing_room", .. }));
        assert!(matches!(parse(r#"{"type":"publish","room":5}"#), Parsed::Invalid { code: "bad_json", .. }));
    }

    #[test]
    fn replies_are_valid_json() {
        let mut out = String::new();
        room_message(&mut out, "r\"1", RawValue::from_string("{\"k\":[1]}".into()).ok().as_deref());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["room"].as_str(), v["data"]["k"][0].as_i64()),
            (Some("message"), Some("r\"1"), Some(1))
        );
        error(&mut out, "unknown_room", "not a \"member\"");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["error"], "unknown_room");
        room_ack(&mut out, "joined", "lobby");
        assert_eq!(out, r#"{"type":"joined","room":"lobby"}"#);
        pong(&mut out, None, 5);
        assert_eq!(out, r#"{"type":"pong","payload":null,"ts":5}"#);
    }
}
