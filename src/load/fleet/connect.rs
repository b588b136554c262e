//! How a connection joins the fleet: a non-blocking connect from the next
//! source address, registered with the poll under its slot and generation,
//! with a deadline for the whole way to the 101; once the socket is
//! connected, the upgrade request (offering permessage-deflate if asked).

use std::time::Instant;

use mio::net::TcpStream;
use mio::Interest;
use rustls::ClientConnection;

use crate::runtime::{token, TimerLink};
use crate::ws::client::{generate_key, write_request_offering};
use crate::ws::extension::CLIENT_OFFER;
use crate::ws::Session;

use super::client::{Client, InFlight, State};
use super::socket::{connect_error_reason, open_socket};
use super::waiting::Lost;
use super::Fleet;

impl Fleet<'_> {
    /// Opens one more connection (a failure to is counted, not returned).
    pub(crate) fn open_one(&mut self) {
        self.open(None);
    }

    /// Opens a connection, a new one or the `retry` of a lost one (a
    /// failure to is counted, and a retry waits for its next).
    pub(super) fn open(&mut self, retry: Option<Box<Lost>>) {
        let (socket, tls, generation) = match self.start_connect() {
            Ok(started) => started,
            Err(reason) => {
                return match retry {
                    Some(lost) => self.retry_failed(*lost, reason),
                    None => self.tally.count_failure(reason),
                }
            }
        };
        let slot = self.table.insert(Client {
            socket,
            tls,
            state: State::Connecting,
            session: Session::client(),
            key: generate_key(),
            started: Instant::now(),
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            assembly: Vec::new(),
            in_flight: InFlight::default(),
            generation,
            timer: TimerLink::default(),
            retry,
        });
        self.tally.live += 1;
        let deadline = self.wheel.now() + self.wheel.ticks(self.cfg.connect_timeout);
        self.wheel.schedule(&mut self.table, slot as u32, deadline);
    }

    /// A non-blocking connect from the next source address, registered
    /// under the next free slot and a new generation, with its TLS session
    /// for `wss://`; the report's reason if it cannot start.
    fn start_connect(&mut self) -> Result<(TcpStream, Option<Box<ClientConnection>>, u32), &'static str> {
        let source = if self.cfg.source_ips.is_empty() {
            None
        } else {
            self.next_source = (self.next_source + 1) % self.cfg.source_ips.len();
            Some(self.cfg.source_ips[self.next_source])
        };
        let mut socket = open_socket(self.cfg.target, source).map_err(|e| connect_error_reason(&e))?;
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let token = token(self.table.vacant_key(), generation);
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.poll.registry().register(&mut socket, token, interest).map_err(|e| connect_error_reason(&e))?;
        let tls = match &self.cfg.tls {
            None => None,
            Some(t) => {
                let mut session = ClientConnection::new(t.config.clone(), t.server_name.clone())
                    .map_err(|e| super::super::tls::failure_reason(&e))?;
                // What is sent is bounded by the plan (depth, sizes);
                // rustls' default cap would refuse bytes mid-message.
                session.set_buffer_limit(None);
                Some(Box::new(session))
            }
        };
        Ok((socket, tls, generation))
    }

    /// The socket in `slot` can take bytes: once connected, the upgrade
    /// request goes out; then whatever is waiting.
    pub(super) fn on_writable(&mut self, slot: usize) {
        if self.table[slot].state == State::Connecting {
            let c = &mut self.table[slot];
            match c.socket.take_error() {
                Ok(Some(e)) | Err(e) => return self.fail(slot, connect_error_reason(&e)),
                Ok(None) => {}
            }
            if c.socket.peer_addr().is_err() {
                return; // not connected yet
            }
            let offer = self.cfg.compression.then_some(CLIENT_OFFER);
            write_request_offering(&mut self.out, &self.cfg.host, &self.cfg.path, &c.key, offer);
            c.state = State::Handshaking;
        }
        self.flush(slot);
    }
}
