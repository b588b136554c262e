//! The built-in application: echo every message, answer the JSON ping of a
//! typical load test, and run the room commands (see [`command`]).
//!
//! Only a text message that starts with `{` is parsed, so plain echo
//! traffic pays one byte comparison for all of this.
//!
//! A client's publish is copied to every member (a broadcast, to every
//! connection), so what a client may fan out is bounded apart from what it
//! may send: [`PublishPolicy`] caps the size of a publish and keeps
//! broadcasts off unless asked for. A refusal is an error reply (the
//! connection stays) and counts in [`PublishRefusals`].

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;

use crate::server::handler::{PublishRefusal, PublishRefusals};
use crate::server::{Ctx, Handler, Message, RoomError};

use super::command::{self, Command, Parsed};

/// The default largest publish, in bytes (`--max-publish-size`): far below
/// the 64 MiB a message may be, since each one is owed to every member.
pub const DEFAULT_MAX_PUBLISH_SIZE: usize = 1 << 20;

/// A reply buffer that grew past this (a large publish) is let go after
/// use, so an idle loop does not keep a publish's worth of memory.
const KEEP_REPLY_CAPACITY: usize = 64 * 1024;

/// What clients of [`EchoApp`] may fan out. The Rust API
/// ([`Ctx::publish_text`], [`Ctx::broadcast_text`]) is not bound by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishPolicy {
    /// Largest `data` a publish or broadcast may carry: its JSON text as
    /// sent, in bytes (each member gets that plus the room name and about
    /// 40 bytes of envelope). Past it, the `too_large` error.
    pub max_size: usize,
    /// Whether clients may send `{"type":"broadcast"}` to every connection
    /// of the server; if not, the `broadcast_disabled` error.
    pub allow_broadcast: bool,
}

impl Default for PublishPolicy {
    fn default() -> Self {
        PublishPolicy { max_size: DEFAULT_MAX_PUBLISH_SIZE, allow_broadcast: false }
    }
}

/// A refused publish: why, and words for a person.
type Refused = (PublishRefusal, String);

/// Echo, ping/pong and rooms. One per event loop; keeps a reusable reply buffer.
#[derive(Debug, Default)]
pub struct EchoApp {
    reply: String,
    policy: PublishPolicy,
    refused: Arc<PublishRefusals>,
}

impl EchoApp {
    /// A new instance under the default [`PublishPolicy`], counting its
    /// refusals on its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// An instance under `policy`, counting refusals in `refused` (shared
    /// by the instances of every loop and the metrics).
    pub fn with_policy(policy: PublishPolicy, refused: Arc<PublishRefusals>) -> Self {
        EchoApp { reply: String::new(), policy, refused }
    }

    fn run(&mut self, ctx: &mut Ctx<'_>, cmd: Command<'_>) {
        match cmd {
            Command::Ping { payload } => {
                let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
                command::pong(&mut self.reply, payload, ts);
            }
            Command::Join { room } => match ctx.join(&room) {
                Ok(()) => command::room_ack(&mut self.reply, "joined", &room),
                Err(e) => room_error(&mut self.reply, e),
            },
            Command::Leave { room } => match ctx.leave(&room) {
                Ok(()) => command::room_ack(&mut self.reply, "left", &room),
                Err(e) => room_error(&mut self.reply, e),
            },
            Command::Publish { room, data, echo } => match self.publish(ctx, &room, data, echo) {
                Ok(()) => return self.done(),
                Err((why, message)) => self.refuse(why, &message),
            },
            Command::Broadcast { data, echo } => match self.broadcast(ctx, data, echo) {
                Ok(()) => return self.done(),
                Err((why, message)) => self.refuse(why, &message),
            },
            Command::Refresh { token } => match ctx.refresh(token.as_bytes()) {
                Ok(expires) => command::refreshed(&mut self.reply, expires),
                Err(e) if e.should_close() => {
                    // A refused token cost a signature check: one per connection.
                    command::error(&mut self.reply, e.label(), "the token was refused; closing");
                    ctx.send_text(&self.reply);
                    ctx.close(1008, "token refused");
                    return self.done();
                }
                Err(e) => command::error(&mut self.reply, e.label(), "the token was refused; the old one stays"),
            },
        }
        ctx.send_text(&self.reply);
        self.done();
    }

    /// Publishes a client's `data` to `room`, if the policy and the room
    /// limits allow it.
    fn publish(&mut self, ctx: &mut Ctx<'_>, room: &str, data: Option<&RawValue>, echo: bool) -> Result<(), Refused> {
        self.vet(data, false)?;
        let bad_name = |e: RoomError| match e {
            RoomError::Forbidden => (PublishRefusal::Forbidden, e.to_string()),
            _ => (PublishRefusal::BadRoomName, e.to_string()),
        };
        // Checked before the message is built: a name may be as long as a message.
        ctx.check_publish(room).map_err(bad_name)?;
        command::room_message(&mut self.reply, room, data);
        ctx.publish_text(room, &self.reply, echo).map_err(bad_name)
    }

    /// Broadcasts a client's `data` to every connection, if the policy allows it.
    fn broadcast(&mut self, ctx: &mut Ctx<'_>, data: Option<&RawValue>, echo: bool) -> Result<(), Refused> {
        self.vet(data, true)?;
        ctx.check_broadcast().map_err(|e| (PublishRefusal::Forbidden, e.to_string()))?;
        command::broadcast_message(&mut self.reply, data);
        ctx.broadcast_text(&self.reply, echo).map_err(|e| (PublishRefusal::Forbidden, e.to_string()))
    }

    /// Whether the policy lets a client fan `data` out (to every
    /// connection if `broadcast`); if not, why, and words for a person.
    fn vet(&self, data: Option<&RawValue>, broadcast: bool) -> Result<(), Refused> {
        if broadcast && !self.policy.allow_broadcast {
            let message = "broadcasts from clients are off on this server (--allow-broadcast turns them on)";
            return Err((PublishRefusal::BroadcastDisabled, message.to_string()));
        }
        let size = data.map_or(0, |d| d.get().len());
        if size > self.policy.max_size {
            let message = format!("data is {size} bytes, over the publish limit of {} bytes", self.policy.max_size);
            return Err((PublishRefusal::TooLarge, message));
        }
        Ok(())
    }

    /// Counts a refused publish and puts its error reply in the buffer.
    fn refuse(&mut self, why: PublishRefusal, message: &str) {
        self.refused.count(why);
        command::error(&mut self.reply, why.label(), message);
    }

    /// After a command: a buffer that a large publish grew is let go.
    fn done(&mut self) {
        if self.reply.capacity() > KEEP_REPLY_CAPACITY {
            self.reply = String::new();
        }
    }
}

fn room_error(out: &mut String, e: RoomError) {
    command::error(out, e.label(), &e.to_string());
}

impl Handler for EchoApp {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, message: Message<'_>) {
        match message {
            Message::Text(text) => match command::parse(text) {
                Parsed::Command(cmd) => self.run(ctx, cmd),
                Parsed::Invalid { code, message } => {
                    command::error(&mut self.reply, code, &message);
                    ctx.send_text(&self.reply);
                }
                Parsed::NotACommand => {
                    ctx.send_text(text);
                }
            },
            Message::Binary(data) => {
                ctx.send_binary(data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::handler::testing::TestConn;
    use crate::server::RoomLimits;

    const LIMITS: RoomLimits = RoomLimits { max_name_len: 16, max_rooms_per_conn: 4 };

    /// An app under `policy`, its counters, and one open connection.
    fn start(policy: PublishPolicy) -> (EchoApp, Arc<PublishRefusals>, TestConn) {
        let refused = Arc::new(PublishRefusals::default());
        (EchoApp::with_policy(policy, refused.clone()), refused, TestConn::open(LIMITS))
    }

    /// Sends `text` as the peer would; the replies it got.
    fn say(app: &mut EchoApp, conn: &mut TestConn, text: &str) -> Vec<serde_json::Value> {
        app.on_message(&mut conn.ctx(), Message::Text(text));
        let parse = |r: String| serde_json::from_str(&r).unwrap_or(serde_json::Value::String(r));
        conn.take_replies().into_iter().map(parse).collect()
    }

    fn error_code(replies: &[serde_json::Value]) -> &str {
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert_eq!(replies[0]["type"], "error", "{replies:?}");
        replies[0]["error"].as_str().unwrap()
    }

    fn counts(refused: &PublishRefusals) -> [u64; 4] {
        PublishRefusal::ALL.map(|r| refused.get(r))
    }

    #[test]
    fn an_oversize_publish_is_refused_and_the_connection_goes_on() {
        let (mut app, refused, mut conn) = start(PublishPolicy { max_size: 10, allow_broadcast: false });
        say(&mut app, &mut conn, r#"{"type":"join","room":"r"}"#);
        // "0123456789" is 12 bytes of JSON text with its quotes: over 10.
        let replies = say(&mut app, &mut conn, r#"{"type":"publish","room":"r","data":"0123456789"}"#);
        assert_eq!(error_code(&replies), "too_large");
        assert!(replies[0]["message"].as_str().unwrap().contains("12 bytes"), "{replies:?}");
        assert!(conn.publishes().is_empty());
        assert_eq!(counts(&refused), [1, 0, 0, 0]);
        // At the limit: published, and the member's own copy comes back.
        let replies = say(&mut app, &mut conn, r#"{"type":"publish","room":"r","data":"01234567"}"#);
        assert_eq!(replies, [serde_json::json!({"type":"message","room":"r","data":"01234567"})]);
        assert_eq!(conn.publishes().len(), 1);
        assert_eq!(say(&mut app, &mut conn, "still here"), [serde_json::json!("still here")]);
        assert_eq!(counts(&refused), [1, 0, 0, 0]);
    }

    #[test]
    fn a_publish_to_a_name_join_refuses_gets_joins_error() {
        let (mut app, refused, mut conn) = start(PublishPolicy::default());
        let huge = "n".repeat(1 << 20);
        for room in ["", "seventeen-bytes!!", huge.as_str()] {
            let publish = serde_json::json!({"type":"publish","room":room,"data":1}).to_string();
            let replies = say(&mut app, &mut conn, &publish);
            assert_eq!(error_code(&replies), "bad_room_name", "{:.20}", room);
            let join = serde_json::json!({"type":"join","room":room}).to_string();
            assert_eq!(error_code(&say(&mut app, &mut conn, &join)), "bad_room_name", "join, as publish");
        }
        assert!(conn.publishes().is_empty());
        assert_eq!(counts(&refused), [0, 3, 0, 0]);
        assert!(app.reply.capacity() <= KEEP_REPLY_CAPACITY, "the long name was never copied into a reply");
    }

    #[test]
    fn broadcasts_are_refused_unless_the_policy_allows_them() {
        let (mut app, refused, mut conn) = start(PublishPolicy::default());
        let replies = say(&mut app, &mut conn, r#"{"type":"broadcast","data":{"n":1}}"#);
        assert_eq!(error_code(&replies), "broadcast_disabled");
        assert!(conn.publishes().is_empty());
        assert_eq!(counts(&refused), [0, 0, 1, 0]);

        let (mut app, refused, mut conn) = start(PublishPolicy { max_size: 8, allow_broadcast: true });
        let replies = say(&mut app, &mut conn, r#"{"type":"broadcast","data":{"n":1}}"#);
        assert_eq!(replies, [serde_json::json!({"type":"broadcast","data":{"n":1}})]);
        assert_eq!(conn.publishes(), [(None, r#"{"type":"broadcast","data":{"n":1}}"#.to_string())]);
        let replies = say(&mut app, &mut conn, r#"{"type":"broadcast","data":"123456789"}"#);
        assert_eq!(error_code(&replies), "too_large");
        assert_eq!(counts(&refused), [1, 0, 0, 0]);
    }

    #[test]
    fn the_default_policy_keeps_broadcasts_off_and_publishes_under_a_mebibyte() {
        let (mut app, refused, mut conn) = start(PublishPolicy::default());
        let at_limit =
            format!(r#"{{"type":"publish","room":"r","echo":false,"data":"{}"}}"#, "x".repeat((1 << 20) - 2));
        assert!(say(&mut app, &mut conn, &at_limit).is_empty(), "published, no reply to a non-member");
        assert!(app.reply.capacity() <= KEEP_REPLY_CAPACITY, "the publish's buffer was let go");
        let over = format!(r#"{{"type":"publish","room":"r","data":"{}"}}"#, "x".repeat((1 << 20) - 1));
        assert_eq!(error_code(&say(&mut app, &mut conn, &over)), "too_large");
        assert_eq!(error_code(&say(&mut app, &mut conn, r#"{"type":"broadcast"}"#)), "broadcast_disabled");
        assert_eq!((conn.publishes().len(), counts(&refused)), (1, [1, 0, 1, 0]));
    }

    #[test]
    fn a_token_bounds_joins_publishes_and_broadcasts_and_a_refresh_replaces_it() {
        use crate::server::identity::{Denied, JwtConfig, Rights, Verified, Verifier};
        use jsonwebtoken::{encode, EncodingKey, Header};
        let secret = "echo-tests-secret-of-32-bytes-or-more";
        let key_file = std::env::temp_dir().join(format!("wsloop-echo-jwt-{}", std::process::id()));
        std::fs::write(&key_file, secret).unwrap();
        let config = JwtConfig { key_file, audience: vec![], issuer: vec![], leeway: std::time::Duration::ZERO };
        let jwt = Arc::new(Verifier::load(config).unwrap());
        let rights =
            Rights { join: vec!["chat:*".into(), "u:{sub}".into()], publish: vec!["chat:*".into()], broadcast: false };
        let alice = Verified { sub: "alice".into(), expires: jsonwebtoken::get_current_timestamp() + 60, rights };
        let policy = PublishPolicy { max_size: 1 << 10, allow_broadcast: true };
        let (mut app, refused, conn) = start(policy);
        let mut conn = conn.with_identity(Arc::clone(&jwt), &alice);
        assert_eq!(say(&mut app, &mut conn, r#"{"type":"join","room":"chat:1"}"#)[0]["type"], "joined");
        assert_eq!(say(&mut app, &mut conn, r#"{"type":"join","room":"u:alice"}"#)[0]["type"], "joined");
        assert_eq!(error_code(&say(&mut app, &mut conn, r#"{"type":"join","room":"u:bob"}"#)), "forbidden");
        assert_eq!(
            error_code(&say(&mut app, &mut conn, r#"{"type":"publish","room":"u:alice","data":1}"#)),
            "forbidden"
        );
        assert_eq!(error_code(&say(&mut app, &mut conn, r#"{"type":"broadcast","data":1}"#)), "forbidden");
        assert!(say(&mut app, &mut conn, r#"{"type":"publish","room":"chat:2","echo":false,"data":1}"#).is_empty());
        assert_eq!(conn.publishes().len(), 1, "only the allowed publish went out");
        assert_eq!(counts(&refused), [0, 0, 0, 2]);
        assert_eq!(
            [jwt.counts.denied(Denied::Join), jwt.counts.denied(Denied::Publish), jwt.counts.denied(Denied::Broadcast)],
            [1, 1, 1]
        );
        // A refresh: same user, fewer rights; the rooms no longer named are left.
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let sign = |claims: serde_json::Value| {
            encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
        };
        let fresh = sign(serde_json::json!({"sub": "alice", "exp": exp, "wsloop": {"join": ["chat:*"]}}));
        let reply = say(&mut app, &mut conn, &format!(r#"{{"type":"refresh","token":"{fresh}"}}"#));
        assert_eq!(reply, [serde_json::json!({"type":"refreshed","exp":exp})]);
        assert_eq!(conn.ctx().user().map(|u| u.expires), Some(exp));
        assert!(conn.ctx().is_member("chat:1") && !conn.ctx().is_member("u:alice"));
        // Turned away before any signature check, the connection kept: a
        // token no newer than the one in use, a missing token.
        let same = sign(serde_json::json!({"sub": "alice", "exp": exp}));
        let reply = say(&mut app, &mut conn, &format!(r#"{{"type":"refresh","token":"{same}"}}"#));
        assert_eq!(error_code(&reply), "not_newer");
        assert_eq!(error_code(&say(&mut app, &mut conn, r#"{"type":"refresh"}"#)), "missing_token");
        let still = conn.ctx().user().map(|u| u.id.to_string());
        assert_eq!(still, Some("alice".into()), "the refused ones changed nothing");
        // A token that fails its check: the error, then 1008.
        let bob = sign(serde_json::json!({"sub": "bob", "exp": exp + 1}));
        app.on_message(&mut conn.ctx(), Message::Text(&format!(r#"{{"type":"refresh","token":"{bob}"}}"#)));
        let replies = conn.take_replies();
        assert_eq!(replies.len(), 2, "{replies:?}");
        assert!(replies[0].contains(r#""error":"other_user""#), "{replies:?}");
        assert!(replies[1].ends_with("token refused"), "a close frame: {replies:?}");
        assert_eq!((jwt.counts.refreshed(true), jwt.counts.refreshed(false)), (1, 2));
        // Closing now: more refreshes are not checked at all.
        let bob2 = sign(serde_json::json!({"sub": "bob", "exp": exp + 2}));
        let refused = conn.ctx().refresh(bob2.as_bytes());
        assert_eq!(refused, Err(crate::server::RefreshError::Closing));
        assert_eq!(jwt.counts.refreshed(false), 2, "nothing checked, nothing counted");
    }
}
