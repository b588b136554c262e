//! A chat on wsloop's public API: nicknames, one room, a member list that
//! every event loop shares. Used by `main.rs` and by tests/chat_example.rs.
//!
//! Protocol (JSON text messages):
//!
//! ```text
//! -> {"type":"hello","nick":"alice"}   <- {"type":"welcome","nick":"alice","members":["alice","bob"]}
//!                                       others <- {"type":"joined","nick":"alice"}
//! -> {"type":"say","text":"hi"}        everyone <- {"type":"said","nick":"alice","text":"hi"}
//! -> {"type":"who"}                    <- {"type":"members","members":["alice","bob"]}
//!    (alice disconnects)               others <- {"type":"left","nick":"alice"}
//! errors: <- {"type":"error","error":"bad_request"|"bad_nick"|"nick_taken"|"already_named"|"no_nick","message":...}
//! ```
//!
//! With JWT identities on (the server's `--jwt-key`; `main.rs` takes a key
//! file), a member's name is its token's `sub`: `{"type":"hello"}` needs no
//! nick, and one that names another is refused (`not_your_name`). Its token
//! must allow joining and publishing to the room `chat`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Deserialize;
use serde_json::json;
use wsloop::server::{CloseCtx, CloseReason, ConnId, Ctx, Handler, Message};

/// The one room everybody who said hello is in.
const ROOM: &str = "chat";
/// Longest nickname, in characters.
const MAX_NICK: usize = 32;

/// Who is in the chat: nickname <-> connection, across every loop. Taken
/// only on hello, who and close, never per message said.
#[derive(Debug, Default)]
pub struct Members {
    by_nick: BTreeMap<String, ConnId>,
    by_conn: BTreeMap<ConnId, String>,
}

/// A request from a client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Request {
    Hello {
        #[serde(default)]
        nick: Option<String>,
    },
    Say {
        text: String,
    },
    Who,
}

/// One per event loop; all share the member list.
pub struct ChatApp {
    members: Arc<Mutex<Members>>,
}

impl ChatApp {
    /// A handler over the shared member list.
    pub fn new(members: Arc<Mutex<Members>>) -> Self {
        ChatApp { members }
    }

    fn members(&self) -> MutexGuard<'_, Members> {
        // A panic elsewhere leaves the list as it was: keep serving.
        self.members.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The name a hello asks for: the token's user id when there is one
    /// (a nick may only repeat it), else the nick given.
    fn name(ctx: &Ctx<'_>, nick: Option<String>) -> Result<String, (&'static str, String)> {
        match (ctx.user(), nick) {
            (Some(user), Some(nick)) if nick != user.id => {
                Err(("not_your_name", format!("your token names you {}", user.id)))
            }
            (Some(user), _) => Ok(user.id.to_owned()),
            (None, Some(nick)) => Ok(nick),
            (None, None) => Err(("bad_nick", "say hello with a nick".to_owned())),
        }
    }

    fn hello(&mut self, ctx: &mut Ctx<'_>, nick: Option<String>) {
        let nick = match Self::name(ctx, nick) {
            Ok(nick) => nick,
            Err((code, message)) => return error(ctx, code, &message),
        };
        if nick.is_empty() || nick.chars().count() > MAX_NICK || nick.chars().any(char::is_control) {
            return error(ctx, "bad_nick", &format!("a nickname has 1 to {MAX_NICK} printable characters"));
        }
        let list = {
            let mut members = self.members();
            if members.by_conn.contains_key(&ctx.id()) {
                return error(ctx, "already_named", "you said hello already");
            }
            if members.by_nick.contains_key(&nick) {
                return error(ctx, "nick_taken", &format!("{nick} is taken"));
            }
            members.by_nick.insert(nick.clone(), ctx.id());
            members.by_conn.insert(ctx.id(), nick.clone());
            members.by_nick.keys().cloned().collect::<Vec<_>>()
        };
        if let Err(e) = ctx.join(ROOM) {
            // Not in the room: not in the chat either.
            let mut members = self.members();
            members.by_nick.remove(&nick);
            members.by_conn.remove(&ctx.id());
            drop(members);
            return error(ctx, "room", &e.to_string());
        }
        ctx.send_text(&json!({"type": "welcome", "nick": nick, "members": list}).to_string());
        if let Err(e) = ctx.publish_text(ROOM, &json!({"type": "joined", "nick": nick}).to_string(), false) {
            error(ctx, "room", &e.to_string());
        }
    }
}

fn error(ctx: &mut Ctx<'_>, code: &str, message: &str) {
    ctx.send_text(&json!({"type": "error", "error": code, "message": message}).to_string());
}

impl Handler for ChatApp {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, message: Message<'_>) {
        let Message::Text(text) = message else {
            return error(ctx, "bad_request", "this chat speaks JSON text messages");
        };
        match serde_json::from_str::<Request>(text) {
            Err(e) => error(ctx, "bad_request", &e.to_string()),
            Ok(Request::Hello { nick }) => self.hello(ctx, nick),
            Ok(Request::Say { text }) => {
                let nick = self.members().by_conn.get(&ctx.id()).cloned();
                match nick {
                    None => error(ctx, "no_nick", "say hello first"),
                    Some(nick) => {
                        let said = json!({"type": "said", "nick": nick, "text": text}).to_string();
                        if let Err(e) = ctx.publish_text(ROOM, &said, true) {
                            error(ctx, "room", &e.to_string());
                        }
                    }
                }
            }
            Ok(Request::Who) => {
                let list: Vec<String> = self.members().by_nick.keys().cloned().collect();
                ctx.send_text(&json!({"type": "members", "members": list}).to_string());
            }
        }
    }

    /// A live hand-off carries the nickname to the new process.
    fn on_handoff(&mut self, id: ConnId) -> Vec<u8> {
        let mut members = self.members();
        let nick = members.by_conn.remove(&id);
        if let Some(nick) = &nick {
            members.by_nick.remove(nick);
        }
        nick.map(String::into_bytes).unwrap_or_default()
    }

    /// ... where the connection, under its new id, has it again.
    fn on_adopt(&mut self, id: ConnId, carried: &[u8]) {
        let Ok(nick) = std::str::from_utf8(carried) else { return };
        if nick.is_empty() || nick.chars().count() > MAX_NICK {
            return;
        }
        let mut members = self.members();
        members.by_nick.insert(nick.to_owned(), id);
        members.by_conn.insert(id, nick.to_owned());
    }

    fn on_close(&mut self, ctx: &mut CloseCtx<'_>, _reason: CloseReason) {
        let gone = {
            let mut members = self.members();
            let nick = members.by_conn.remove(&ctx.id());
            if let Some(nick) = &nick {
                members.by_nick.remove(nick);
            }
            nick
        };
        if let Some(nick) = gone {
            ctx.publish_text(ROOM, &json!({"type": "left", "nick": nick}).to_string());
        }
    }
}
