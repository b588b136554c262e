//! What the fleet reads: a connection's bytes off its socket (through TLS
//! when there is TLS), the server's 101, then frames decoded in place and
//! handed to the script as slices, never copied. The clock for deliveries
//! is read at most once per socket read (`Fleet::read_at_us`).

use std::io::{self, Read};

use crate::ws::client::{parse_response_terms, ClientHandshakeError};
use crate::ws::{Event, Inflation};

use super::super::tls::failure_reason as tls_failure_reason;
use super::client::State;
use super::socket::{connect_error_reason, read_tls, TlsRead};
use super::Fleet;
use super::Script;

/// What a read leaves the read loop to do.
enum Then {
    ReadAgain,
    Stop,
}

/// Where the server's answer to the upgrade stands.
enum Upgrade {
    /// Not all of it is in yet.
    Pending,
    /// The connection is open, and the script has started on it.
    Open,
    /// The connection is gone (refused, or broken as it opened).
    Gone,
}

impl Fleet<'_> {
    /// Reads until the socket is empty. A short read empties it: with edge
    /// triggering, more data brings a new event, so the read that would only
    /// say EAGAIN is skipped (one syscall less per delivery), unless the
    /// event said the peer's FIN is in (`peer_closed`): its EOF must be read.
    pub(super) fn on_readable<S: Script>(&mut self, slot: usize, peer_closed: bool, script: &mut S) {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            self.read_at_us = None;
            let (state, tls) = (self.table[slot].state, self.table[slot].tls.is_some());
            let then = match state {
                State::Connecting => Then::Stop,
                _ if tls => self.read_tls_records(slot, script),
                _ => self.read_plain(slot, &mut chunk, peer_closed, script),
            };
            if let Then::Stop = then {
                return;
            }
        }
    }

    /// One read of a plain socket into `chunk`, then its messages.
    fn read_plain<S: Script>(&mut self, slot: usize, chunk: &mut [u8], peer_closed: bool, script: &mut S) -> Then {
        match self.table[slot].socket.read(chunk) {
            Ok(0) => self.read_eof(slot),
            Ok(n) => {
                self.table[slot].rbuf.extend_from_slice(&chunk[..n]);
                match self.process_input(slot, script) && (n == chunk.len() || peer_closed) {
                    true => Then::ReadAgain,
                    false => Then::Stop,
                }
            }
            Err(e) => self.read_error(slot, e),
        }
    }

    /// One read of TLS records, then the messages in their plaintext.
    fn read_tls_records<S: Script>(&mut self, slot: usize, script: &mut S) -> Then {
        let c = &mut self.table[slot];
        let Some(tls) = c.tls.as_mut() else { return Then::Stop };
        match read_tls(tls, &mut c.socket, &mut c.rbuf) {
            Ok(n) => {
                // The handshake's answers, a close_notify's reply.
                if tls.wants_write() {
                    self.flush(slot);
                    if !self.table.contains(slot) {
                        return Then::Stop;
                    }
                }
                match n == 0 || self.process_input(slot, script) {
                    true => Then::ReadAgain,
                    false => Then::Stop,
                }
            }
            Err(TlsRead::Io(e)) => self.read_error(slot, e),
            Err(TlsRead::Eof) => self.read_eof(slot),
            Err(TlsRead::Tls(e)) => {
                // Our alert goes out first.
                self.flush(slot);
                if self.table.contains(slot) {
                    self.lost(slot, tls_failure_reason(&e));
                }
                Then::Stop
            }
        }
    }

    /// The server's FIN: the end of a close, or the connection lost.
    fn read_eof(&mut self, slot: usize) -> Then {
        match self.table[slot].state {
            State::Draining | State::Closing => self.remove(slot),
            State::Handshaking => self.fail(slot, "reset"),
            _ => self.lost(slot, "dropped"),
        }
        Then::Stop
    }

    /// A read failed: empty for now, try again, or the connection is lost.
    fn read_error(&mut self, slot: usize, e: io::Error) -> Then {
        match e.kind() {
            io::ErrorKind::WouldBlock => Then::Stop,
            io::ErrorKind::Interrupted => Then::ReadAgain,
            _ => {
                self.lost(slot, connect_error_reason(&e));
                Then::Stop
            }
        }
    }

    /// Handles what is buffered; false if the connection is gone.
    fn process_input<S: Script>(&mut self, slot: usize, script: &mut S) -> bool {
        if self.table[slot].state == State::Handshaking {
            match self.read_upgrade(slot, script) {
                Upgrade::Pending => return true,
                Upgrade::Gone => return false,
                Upgrade::Open => {}
            }
        }
        self.decode_messages(slot, script)
    }

    /// Reads the server's answer to the upgrade; once it is a 101, the
    /// connection is open and its script starts.
    fn read_upgrade<S: Script>(&mut self, slot: usize, script: &mut S) -> Upgrade {
        let c = &mut self.table[slot];
        match parse_response_terms(&c.rbuf, &c.key, self.cfg.compression) {
            Ok(None) => Upgrade::Pending,
            Ok(Some(accepted)) => {
                c.rbuf.drain(..accepted.len);
                if let Some(terms) = accepted.deflate {
                    c.session.enable_deflate(&terms);
                    self.codecs.agreed(slot, &terms.mirrored());
                }
                c.state = State::Open;
                self.tally.established(c.started.elapsed());
                if let Some(lost) = c.retry.take() {
                    self.tally.reconnected(lost.since.elapsed());
                }
                self.tally.open += 1;
                // The connect deadline is over; the script may set its own.
                self.wheel.remove(&mut self.table, slot as u32);
                script.on_open(self, slot);
                match self.table.contains(slot) {
                    true => Upgrade::Open,
                    false => Upgrade::Gone,
                }
            }
            Err(ClientHandshakeError::Status(s)) => {
                self.fail(slot, &format!("status_{s}"));
                Upgrade::Gone
            }
            Err(_) => {
                self.fail(slot, "bad_handshake");
                Upgrade::Gone
            }
        }
    }

    /// Decodes the buffered frames and acts on each event; false if the
    /// connection is gone.
    fn decode_messages<S: Script>(&mut self, slot: usize, script: &mut S) -> bool {
        // The buffers leave the client while its events are handled, so a
        // message is handed on as a slice of them, never copied.
        let mut rbuf = std::mem::take(&mut self.table[slot].rbuf);
        let mut assembly = std::mem::take(&mut self.table[slot].assembly);
        let mut inflated = Vec::new();
        let mut pos = 0;
        loop {
            let c = &mut self.table[slot];
            let mut inflater = self.codecs.inflaters.for_conn(slot as u32);
            let inflation =
                c.session.deflate_window().map(|_| Inflation { inflater: &mut inflater, output: &mut inflated });
            let decoded =
                c.session.decode_inflating(&mut rbuf[pos..], &mut assembly, &mut self.out, &self.ws, inflation);
            let d = match decoded {
                Ok(d) => d,
                Err(e) => {
                    self.tally.count_server_close(format!("protocol_{}", e.label()));
                    self.flush(slot);
                    if self.table.contains(slot) {
                        self.remove_counted(slot);
                    }
                    return false;
                }
            };
            pos += d.consumed;
            let Some(event) = d.event else { break };
            match event {
                Event::Text(t) => self.on_message(slot, t.as_bytes(), true, script),
                Event::Binary(b) => self.on_message(slot, b, false, script),
                Event::Close { code, reason } => self.closed_by_server(slot, code, reason),
                Event::Ping(_) | Event::Pong(_) | Event::Upgrade(_) => {}
            }
            if !self.table.contains(slot) {
                return false;
            }
        }
        rbuf.drain(..pos);
        self.table[slot].rbuf = rbuf;
        self.table[slot].assembly = assembly;
        if !self.out.is_empty() {
            self.flush(slot);
        }
        self.table.contains(slot)
    }

    /// A message arrived: counted, and the script's if the connection is
    /// still open (not once it is closing).
    fn on_message<S: Script>(&mut self, slot: usize, payload: &[u8], is_text: bool, script: &mut S) {
        self.tally.received(payload.len());
        if self.table[slot].state == State::Open {
            script.on_message(self, slot, payload, is_text);
        }
    }
}
