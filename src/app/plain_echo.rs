//! The plainest application: every message goes back as it came, nothing
//! is parsed. For conformance runs and for measuring the engine alone.

use crate::server::{Ctx, Handler, Message};

/// Echo only. Holds nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainEcho;

impl Handler for PlainEcho {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, message: Message<'_>) {
        match message {
            Message::Text(text) => ctx.send_text(text),
            Message::Binary(data) => ctx.send_binary(data),
        };
    }
}
