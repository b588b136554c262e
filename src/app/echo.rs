//! The built-in application: echo every message, answer the JSON ping of a
//! typical load test, and run the room commands (see [`command`]).
//!
//! Only a text message that starts with `{` is parsed, so plain echo
//! traffic pays one byte comparison for all of this.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::server::{Ctx, Handler, Message, RoomError};

use super::command::{self, Command, Parsed};

/// Echo, ping/pong and rooms. One per event loop; keeps a reusable reply buffer.
#[derive(Debug, Default)]
pub struct EchoApp {
    reply: String,
}

impl EchoApp {
    /// A new instance.
    pub fn new() -> Self {
        Self::default()
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
            Command::Publish { room, data, echo } => {
                command::room_message(&mut self.reply, &room, data);
                match ctx.publish_text(&room, &self.reply, echo) {
                    Ok(()) => return,
                    Err(e) => room_error(&mut self.reply, e),
                }
            }
            Command::Broadcast { data, echo } => {
                command::broadcast_message(&mut self.reply, data);
                ctx.broadcast_text(&self.reply, echo);
                return;
            }
        }
        ctx.send_text(&self.reply);
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
