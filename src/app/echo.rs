//! The built-in application: echo every message, except the JSON ping of a
//! typical load test, which gets a pong with the same payload and the
//! server's clock.
//!
//! `{"type":"ping","payload":P}` -> `{"type":"pong","payload":P,"ts":<unix ms>}`.
//! `P` is copied verbatim (any JSON value); the message is only parsed when
//! it starts with `{`, so plain echo traffic pays one byte comparison.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::server::{Ctx, Handler, Message};

/// A message with a `type`, as far as this app cares.
#[derive(Deserialize)]
struct Typed<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

/// Echo plus JSON ping/pong. One per event loop; keeps a reusable reply buffer.
#[derive(Debug, Default)]
pub struct EchoApp {
    reply: String,
}

impl EchoApp {
    /// A new instance.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pong for `text` if it is a JSON ping, written into `self.reply`.
    fn pong_for(&mut self, text: &str) -> bool {
        if !text.trim_start().starts_with('{') {
            return false;
        }
        let Ok(msg) = serde_json::from_str::<Typed<'_>>(text) else {
            return false;
        };
        if msg.kind != Some("ping") {
            return false;
        }
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let payload = msg.payload.map_or("null", RawValue::get);
        self.reply.clear();
        let _ = write!(
            self.reply,
            r#"{{"type":"pong","payload":{payload},"ts":{ts}}}"#
        );
        true
    }
}

impl Handler for EchoApp {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, message: Message<'_>) {
        match message {
            Message::Text(text) if self.pong_for(text) => {
                ctx.send_text(&self.reply);
            }
            Message::Text(text) => {
                ctx.send_text(text);
            }
            Message::Binary(data) => {
                ctx.send_binary(data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_becomes_pong_with_the_same_payload() {
        let mut app = EchoApp::new();
        assert!(app.pong_for(r#"{"type":"ping","payload":{"n":1,"s":"x"}}"#));
        let v: serde_json::Value = serde_json::from_str(&app.reply).unwrap();
        assert_eq!(v["type"], "pong");
        assert_eq!(v["payload"], serde_json::json!({"n":1,"s":"x"}));
        assert!(v["ts"].as_u64().unwrap() > 1_600_000_000_000);
        assert!(app.pong_for(r#" {"payload":"abc","type":"ping"}"#));
        assert!(app
            .reply
            .starts_with(r#"{"type":"pong","payload":"abc","ts":"#));
    }

    #[test]
    fn everything_else_is_not_a_ping() {
        let mut app = EchoApp::new();
        for text in [
            "ping",
            r#"{"type":"pong"}"#,
            r#"{"type":"ping""#,
            "{not json",
            "[1,2]",
            r#"{"type":5}"#,
        ] {
            assert!(!app.pong_for(text), "{text}");
        }
    }
}
