//! What the fleet sends: messages are appended to the shared `out` buffer,
//! then `flush` hands it to one connection's socket (through TLS when
//! there is TLS), keeping what the socket would not take in the
//! connection's backlog. A write error loses the connection.

use std::io::Write;

use super::socket::Wrote;
use super::Fleet;

impl Fleet<'_> {
    /// Appends one message for the connection in `slot`, compressed if
    /// agreed, uncounted (a join, say); false if it cannot be sent.
    pub(crate) fn write(&mut self, slot: usize, op: u8, payload: &[u8]) -> bool {
        self.codecs.write(slot, &self.table[slot].session, &mut self.out, op, payload)
    }

    /// Appends one message for the connection in `slot`, counted as sent.
    pub(crate) fn send(&mut self, slot: usize, op: u8, payload: &[u8]) {
        if self.write(slot, op, payload) {
            self.tally.sent(payload.len());
        }
    }

    /// Writes what was appended after the connection's backlog; drops the
    /// connection on error (so `slot` may be empty after).
    pub(crate) fn flush(&mut self, slot: usize) {
        let c = &mut self.table[slot];
        if let Some(tls) = &mut c.tls {
            // Before the handshake is done rustls keeps the plaintext.
            if !self.out.is_empty() {
                // Without a buffer limit rustls takes every byte.
                let taken = tls.writer().write_all(&self.out);
                debug_assert!(taken.is_ok(), "rustls refused plaintext: {taken:?}");
                self.out.clear();
            }
            while tls.wants_write() {
                match Wrote::of(tls.write_tls(&mut c.socket)) {
                    Wrote::Bytes(_) | Wrote::Again => {}
                    Wrote::Blocked => break,
                    Wrote::Failed(reason) => return self.lost(slot, reason),
                }
            }
            return;
        }
        c.wbuf.extend_from_slice(&self.out);
        self.out.clear();
        let mut written = 0;
        while written < c.wbuf.len() {
            match Wrote::of(c.socket.write(&c.wbuf[written..])) {
                Wrote::Bytes(n) => written += n,
                Wrote::Again => {}
                Wrote::Blocked => break,
                Wrote::Failed(reason) => return self.lost(slot, reason),
            }
        }
        c.wbuf.drain(..written);
        if c.wbuf.is_empty() && c.wbuf.capacity() > 4096 {
            c.wbuf = Vec::new();
        }
    }
}
