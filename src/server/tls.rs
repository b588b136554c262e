//! TLS (`wss://`) inside the event loop, sans-io: rustls' unbuffered API,
//! driven by the loop like the WebSocket session is. Ciphertext the loop
//! read goes in (`TlsConn::unseal`) and comes out as plaintext appended to
//! the connection's input buffer; output the loop corked goes in
//! (`TlsConn::seal`) and comes out as records in the loop's one sealing
//! buffer, written by the same one write as ever. No thread, no task, and
//! no buffer per connection while idle: rustls keeps only the session's
//! keys and state (a partial record waits in `pending`, empty otherwise).
//!
//! [`TlsCerts`] holds the certificate and key the server presents, and
//! reloads them on SIGHUP: a new handshake takes the newest, open
//! connections keep what they started with.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};

/// Why a certificate or key cannot be used; each names its flag and file.
#[derive(Debug)]
pub enum TlsConfigError {
    /// The certificate file could not be read or parsed.
    Cert(PathBuf, String),
    /// The key file could not be read or parsed.
    Key(PathBuf, String),
    /// rustls refused the pair (the key does not match the certificate, say).
    Rejected(PathBuf, PathBuf, String),
}

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsConfigError::Cert(p, why) => write!(f, "--tls-cert {}: {why}", p.display()),
            TlsConfigError::Key(p, why) => write!(f, "--tls-key {}: {why}", p.display()),
            TlsConfigError::Rejected(cert, key, why) => {
                write!(f, "--tls-cert {} with --tls-key {}: {why}", cert.display(), key.display())
            }
        }
    }
}

impl std::error::Error for TlsConfigError {}

/// Reads a PEM certificate chain and key into a server configuration:
/// TLS 1.3 and 1.2, ALPN `http/1.1`, no client certificates.
pub(crate) fn load_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let pem_error = |e: rustls::pki_types::pem::Error| match e {
        rustls::pki_types::pem::Error::Io(e) => format!("cannot read it: {e}"),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of that kind in it".to_string(),
        other => format!("not valid PEM: {other}"),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|items| items.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsConfigError::Cert(cert.into(), pem_error(e)))?;
    if chain.is_empty() {
        return Err(TlsConfigError::Cert(cert.into(), "no certificate in it".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsConfigError::Key(key.into(), pem_error(e)))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsConfigError::Rejected(cert.into(), key.into(), e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| TlsConfigError::Rejected(cert.into(), key.into(), e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server's certificate and key, shared by every loop and replaced
/// whole on reload. A loop checks `generation` (one relaxed load) when it
/// accepts, and takes the new configuration only when it changed.
#[derive(Debug)]
pub struct TlsCerts {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<rustls::ServerConfig>>,
    generation: AtomicU64,
}

impl TlsCerts {
    /// Loads the pair at start; an error names the file at fault.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsConfigError> {
        let config = load_config(cert, key)?;
        Ok(TlsCerts { cert: cert.into(), key: key.into(), current: RwLock::new(config), generation: AtomicU64::new(0) })
    }

    /// Reads the files again. On success new handshakes use them; on error
    /// the old pair stays in use and the error says why.
    pub fn reload(&self) -> Result<(), TlsConfigError> {
        let config = load_config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// How many reloads have succeeded.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The configuration new handshakes use.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A loop's view of [`TlsCerts`]: the configuration it last took, renewed
/// when a reload has happened since.
#[derive(Debug)]
pub(crate) struct TlsAcceptor {
    certs: Arc<TlsCerts>,
    seen: u64,
    config: Arc<rustls::ServerConfig>,
}

impl TlsAcceptor {
    /// A loop's acceptor over the shared certificates.
    pub(crate) fn new(certs: Arc<TlsCerts>) -> Self {
        let (seen, config) = (certs.generation(), certs.current());
        TlsAcceptor { certs, seen, config }
    }

    /// A TLS session for a connection just accepted.
    pub(crate) fn accept(&mut self, now: Instant) -> Result<TlsConn, rustls::Error> {
        let generation = self.certs.generation();
        if generation != self.seen {
            (self.seen, self.config) = (generation, self.certs.current());
        }
        let session = UnbufferedServerConnection::new(self.config.clone())?;
        Ok(TlsConn { session, pending: Vec::new(), phase: TlsPhase::Handshaking { since: now } })
    }
}

/// Where a connection's TLS is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsPhase {
    /// Keys not yet agreed, since `since`.
    Handshaking {
        /// When the connection was accepted.
        since: Instant,
    },
    /// Application data flows.
    Established,
    /// The peer said close_notify: no more input will come.
    PeerClosed,
    /// It failed (counted once, when it did).
    Failed,
}

/// Why TLS failed on a connection: the `reason` of
/// `wsloop_tls_handshake_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// Plain HTTP (a `ws://` upgrade, say) sent to the TLS port; answered
    /// with a plain-text 400.
    PlainHttp,
    /// Bytes that are not TLS records.
    Malformed,
    /// No protocol version, cipher suite or ALPN protocol in common.
    Incompatible,
    /// The peer sent a fatal alert (it did not trust our certificate, say).
    AlertReceived,
    /// The peer broke the protocol (a bad record, a failed decryption).
    Protocol,
    /// The handshake did not finish within the handshake timeout.
    Timeout,
    /// The peer closed or reset the connection mid-handshake.
    Closed,
    /// Anything else rustls reports.
    Other,
}

impl TlsFailure {
    /// Every failure, in counter order (declaration order: counters index
    /// by discriminant).
    pub const ALL: [TlsFailure; 8] = [
        TlsFailure::PlainHttp,
        TlsFailure::Malformed,
        TlsFailure::Incompatible,
        TlsFailure::AlertReceived,
        TlsFailure::Protocol,
        TlsFailure::Timeout,
        TlsFailure::Closed,
        TlsFailure::Other,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            TlsFailure::PlainHttp => "plain_http",
            TlsFailure::Malformed => "malformed",
            TlsFailure::Incompatible => "incompatible",
            TlsFailure::AlertReceived => "alert",
            TlsFailure::Protocol => "protocol",
            TlsFailure::Timeout => "timeout",
            TlsFailure::Closed => "closed",
            TlsFailure::Other => "other",
        }
    }

    fn of(e: &rustls::Error) -> TlsFailure {
        match e {
            rustls::Error::InvalidMessage(_) => TlsFailure::Malformed,
            rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => TlsFailure::Incompatible,
            rustls::Error::AlertReceived(_) => TlsFailure::AlertReceived,
            rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. }
            | rustls::Error::PeerMisbehaved(_)
            | rustls::Error::DecryptError => TlsFailure::Protocol,
            _ => TlsFailure::Other,
        }
    }
}

/// What one `TlsConn::unseal` call amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Unsealed {
    /// The handshake finished in this call: how long it took.
    pub handshake_done: Option<Duration>,
    /// The peer's close_notify arrived: treat as end of input.
    pub peer_closed: bool,
}

/// A failure and whether it happened during the handshake (it counts as a
/// failed handshake) or after it (the connection just ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TlsError {
    /// What went wrong.
    pub failure: TlsFailure,
    /// True if the keys were not agreed yet.
    pub in_handshake: bool,
}

/// A reply for plain HTTP on the TLS port, in the clear.
const PLAIN_HTTP_REPLY: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 44\r\nConnection: close\r\n\r\nthis port speaks TLS: connect with wss://\r\n\r\n";

/// Records of at most this much plaintext (TLS's own limit).
const MAX_FRAGMENT: usize = 16 * 1024;
/// Bytes a record adds around its plaintext at most (header, tag, type).
const RECORD_OVERHEAD: usize = 5 + 16 + 1 + 256;

/// One connection's TLS: the rustls session (keys and state) and a partial
/// record, if the last read ended inside one.
pub(crate) struct TlsConn {
    session: UnbufferedServerConnection,
    /// Ciphertext of a record not yet whole; zero capacity when none.
    pending: Vec<u8>,
    phase: TlsPhase,
}

impl fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConn").field("pending", &self.pending.len()).field("phase", &self.phase).finish()
    }
}

impl TlsConn {
    /// Where it is.
    #[cfg(test)]
    pub(crate) fn phase(&self) -> TlsPhase {
        self.phase
    }

    /// True until the keys are agreed (and it has not failed).
    pub(crate) fn is_handshaking(&self) -> bool {
        matches!(self.phase, TlsPhase::Handshaking { .. })
    }

    /// Bytes of a partial record held (for the pool gauge and tests).
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Keeps ciphertext unprocessed for the next [`unseal`](Self::unseal)
    /// (a handshake turn put off to a later pass).
    pub(crate) fn defer(&mut self, cipher: &[u8]) {
        self.pending.extend_from_slice(cipher);
    }

    /// Marks a failure that the loop saw rather than rustls (a timeout, a
    /// peer gone mid-handshake); returns it if it is the first.
    pub(crate) fn fail(&mut self, failure: TlsFailure) -> Option<TlsFailure> {
        let first = self.is_handshaking();
        self.phase = TlsPhase::Failed;
        first.then_some(failure)
    }

    /// Feeds ciphertext the loop read: application data is appended to
    /// `plain`, handshake records and alerts to `sealed` (the caller writes
    /// them). A partial record is kept for the next call.
    pub(crate) fn unseal(
        &mut self,
        cipher: &mut [u8],
        plain: &mut Vec<u8>,
        sealed: &mut Vec<u8>,
    ) -> Result<Unsealed, TlsError> {
        if self.phase == TlsPhase::Failed || self.phase == TlsPhase::PeerClosed {
            return Ok(Unsealed { peer_closed: self.phase == TlsPhase::PeerClosed, ..Unsealed::default() });
        }
        let first = if self.pending.is_empty() { cipher.first() } else { self.pending.first() };
        if self.is_handshaking() && first.is_some_and(u8::is_ascii_uppercase) {
            // "GET /ws HTTP/1.1": a TLS record starts with 0x14-0x18.
            sealed.extend_from_slice(PLAIN_HTTP_REPLY);
            return Err(self.failed(TlsFailure::PlainHttp));
        }
        let result = if self.pending.is_empty() {
            let (consumed, result) = self.process(cipher, plain, sealed);
            if consumed < cipher.len() && result.is_ok() {
                self.pending.extend_from_slice(&cipher[consumed..]);
            }
            result
        } else {
            let mut input = std::mem::take(&mut self.pending);
            input.extend_from_slice(cipher);
            let (consumed, result) = self.process(&mut input, plain, sealed);
            input.drain(..consumed);
            if !input.is_empty() {
                self.pending = input;
            }
            result
        };
        let mut unsealed = match result {
            Ok(unsealed) => unsealed,
            Err(e) => {
                log::debug!("TLS: {e}");
                self.flush_alerts(sealed);
                return Err(self.failed(TlsFailure::of(&e)));
            }
        };
        if let (TlsPhase::Handshaking { since }, false) = (self.phase, self.session.is_handshaking()) {
            self.phase = TlsPhase::Established;
            unsealed.handshake_done = Some(since.elapsed());
        }
        if unsealed.peer_closed {
            self.phase = TlsPhase::PeerClosed;
        }
        Ok(unsealed)
    }

    /// Runs rustls over `input`; how much of it was used, and the outcome.
    fn process(
        &mut self,
        input: &mut [u8],
        plain: &mut Vec<u8>,
        sealed: &mut Vec<u8>,
    ) -> (usize, Result<Unsealed, rustls::Error>) {
        let mut consumed = 0;
        let mut unsealed = Unsealed::default();
        // Each state is handled and the next asked for; rustls ends with
        // BlockedHandshake (more input needed) or WriteTraffic (all taken).
        // Every record is at least 6 bytes and yields a few states at most,
        // so the bound only guards against a state machine that spins.
        for _ in 0..input.len() + 64 {
            let UnbufferedStatus { discard, state } = self.session.process_tls_records(&mut input[consumed..]);
            let state = match state {
                Ok(state) => state,
                Err(e) => return (consumed + discard, Err(e)),
            };
            let step = match state {
                ConnectionState::ReadTraffic(mut traffic) => loop {
                    match traffic.next_record() {
                        Some(Ok(record)) => plain.extend_from_slice(record.payload),
                        Some(Err(e)) => break Err(e),
                        None => break Ok(true),
                    }
                },
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_into(sealed, |out| encode.encode(out)).map(|()| true)
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    // The records are in `sealed`, which the caller writes.
                    transmit.done();
                    Ok(true)
                }
                ConnectionState::PeerClosed => {
                    unsealed.peer_closed = true;
                    Ok(true)
                }
                ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) | ConnectionState::Closed => {
                    Ok(false)
                }
                // Early data is off (the default); anything new is refused.
                _ => Err(rustls::Error::General("unexpected TLS state".into())),
            };
            consumed += discard;
            match step {
                Ok(true) => continue,
                Ok(false) => return (consumed, Ok(unsealed)),
                Err(e) => return (consumed, Err(e)),
            }
        }
        (consumed, Err(rustls::Error::General("TLS processing did not settle".into())))
    }

    /// Encrypts `parts`, in order, as application data appended to `sealed`.
    pub(crate) fn seal(&mut self, parts: &[&[u8]], sealed: &mut Vec<u8>) -> Result<(), TlsError> {
        for _ in 0..64 {
            let UnbufferedStatus { state, .. } = self.session.process_tls_records(&mut []);
            // Ok(true): sealed; Ok(false): ask again.
            let step = match state {
                Ok(ConnectionState::WriteTraffic(mut traffic)) => parts
                    .iter()
                    .filter(|p| !p.is_empty())
                    .try_for_each(|part| encrypt_into(sealed, part.len(), |out| traffic.encrypt(part, out)))
                    .map(|()| true),
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(sealed, |out| encode.encode(out)).map(|()| false)
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    Ok(false)
                }
                Ok(ConnectionState::PeerClosed) => Ok(false),
                Ok(_) => Err(rustls::Error::General("cannot send: the TLS session is not open".into())),
                Err(e) => Err(e),
            };
            match step {
                Ok(true) => return Ok(()),
                Ok(false) => continue,
                Err(e) => return Err(self.failed_after(e)),
            }
        }
        Err(self.failed_after(rustls::Error::General("TLS sealing did not settle".into())))
    }

    /// Appends a close_notify alert to `sealed` (best effort).
    pub(crate) fn close_notify(&mut self, sealed: &mut Vec<u8>) {
        if let UnbufferedStatus { state: Ok(ConnectionState::WriteTraffic(mut traffic)), .. } =
            self.session.process_tls_records(&mut [])
        {
            let _ = encrypt_into(sealed, 0, |out| traffic.queue_close_notify(out));
        }
    }

    /// Writes out the alert rustls queued for the error it reported.
    fn flush_alerts(&mut self, sealed: &mut Vec<u8>) {
        for _ in 0..8 {
            match self.session.process_tls_records(&mut []).state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    if encode_into(sealed, |out| encode.encode(out)).is_err() {
                        return;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                _ => return,
            }
        }
    }

    fn failed(&mut self, failure: TlsFailure) -> TlsError {
        let in_handshake = self.is_handshaking();
        self.phase = TlsPhase::Failed;
        TlsError { failure, in_handshake }
    }

    fn failed_after(&mut self, e: rustls::Error) -> TlsError {
        log::debug!("TLS: cannot seal: {e}");
        self.failed(TlsFailure::of(&e))
    }
}

/// What a record writer that could not write asks for.
enum Retry {
    /// A buffer of this many bytes.
    Room(usize),
    /// Nothing: there was nothing left to write.
    Nothing,
    /// It failed for good.
    Fail(String),
}

/// Lets `write` put records at the end of `sealed`, first with `room`
/// bytes, then with as many as it asks for.
fn write_records(
    sealed: &mut Vec<u8>,
    mut room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Retry>,
) -> Result<(), rustls::Error> {
    let start = sealed.len();
    loop {
        sealed.resize(start + room, 0);
        match write(&mut sealed[start..]) {
            Ok(n) => {
                sealed.truncate(start + n);
                return Ok(());
            }
            Err(Retry::Room(wanted)) if wanted > room => room = wanted,
            Err(Retry::Nothing) => {
                sealed.truncate(start);
                return Ok(());
            }
            Err(Retry::Room(_)) => {
                sealed.truncate(start);
                return Err(rustls::Error::General("TLS asked for less room than it had".into()));
            }
            Err(Retry::Fail(why)) => {
                sealed.truncate(start);
                return Err(rustls::Error::General(why));
            }
        }
    }
}

/// Lets `encode` write a handshake record at the end of `sealed`.
fn encode_into(
    sealed: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), rustls::Error> {
    write_records(sealed, 4096, |out| {
        encode(out).map_err(|e| match e {
            EncodeError::InsufficientSize(s) => Retry::Room(s.required_size),
            EncodeError::AlreadyEncoded => Retry::Nothing,
        })
    })
}

/// Lets `encrypt` write the records of `len` bytes of plaintext at the end
/// of `sealed`.
fn encrypt_into(
    sealed: &mut Vec<u8>,
    len: usize,
    mut encrypt: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), rustls::Error> {
    let room = len + (len / MAX_FRAGMENT + 1) * RECORD_OVERHEAD;
    write_records(sealed, room, |out| {
        encrypt(out).map_err(|e| match e {
            EncryptError::InsufficientSize(s) => Retry::Room(s.required_size),
            e => Retry::Fail(format!("cannot encrypt: {e}")),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A server configuration and a client that trusts it, from a fresh
    /// throwaway PKI (`tests/make-cert.sh`).
    fn pair() -> (TlsAcceptor, Arc<rustls::ClientConfig>) {
        let dir = std::env::temp_dir().join(format!(
            "wsloop-tls-unit-{}-{}",
            std::process::id(),
            crate::ws::mask::random_u64()
        ));
        let made = std::process::Command::new("tests/make-cert.sh").arg(&dir).status().expect("openssl");
        assert!(made.success());
        let certs = TlsCerts::load(&dir.join("server.pem"), &dir.join("server.key")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let _ = std::fs::remove_dir_all(&dir);
        (TlsAcceptor::new(Arc::new(certs)), Arc::new(client))
    }

    fn client(config: &Arc<rustls::ClientConfig>) -> rustls::ClientConnection {
        rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap()).unwrap()
    }

    /// What the client has to send, as bytes on the wire.
    fn from_client(c: &mut rustls::ClientConnection) -> Vec<u8> {
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        wire
    }

    /// Feeds the client what the server sealed; returns its plaintext.
    fn to_client(c: &mut rustls::ClientConnection, sealed: &[u8]) -> Vec<u8> {
        let (mut input, mut plain) = (sealed, Vec::new());
        while !input.is_empty() {
            c.read_tls(&mut input).unwrap();
            c.process_new_packets().unwrap();
            let _ = c.reader().read_to_end(&mut plain);
        }
        plain
    }

    /// Runs the handshake with the client's bytes cut into `step`-byte
    /// reads; the server's plaintext (what the client sent early).
    fn handshake(server: &mut TlsConn, c: &mut rustls::ClientConnection, step: usize) -> Vec<u8> {
        let mut plain = Vec::new();
        for _ in 0..8 {
            let mut wire = from_client(c);
            let mut sealed = Vec::new();
            for piece in wire.chunks_mut(step) {
                server.unseal(piece, &mut plain, &mut sealed).unwrap();
            }
            to_client(c, &sealed);
            if !server.is_handshaking() && !c.is_handshaking() {
                return plain;
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn records_in_any_pieces_come_out_as_the_same_plaintext_both_ways() {
        let (mut acceptor, config) = pair();
        for step in [1, 7, 100, 1 << 20] {
            let mut c = client(&config);
            let mut server = acceptor.accept(Instant::now()).unwrap();
            // Sent before the handshake finished: rustls holds it till then.
            c.writer().write_all(b"GET /ws HTTP/1.1\r\n").unwrap();
            let mut plain = handshake(&mut server, &mut c, step);
            assert_eq!(server.phase(), TlsPhase::Established);
            // Larger than a record, cut anywhere.
            let big: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
            c.writer().write_all(&big).unwrap();
            let mut wire = from_client(&mut c);
            let mut sealed = Vec::new();
            for piece in wire.chunks_mut(step) {
                server.unseal(piece, &mut plain, &mut sealed).unwrap();
                assert!(server.pending_len() < 17 * 1024, "at most a record waits");
            }
            assert_eq!(server.pending_len(), 0, "step {step}");
            assert_eq!(&plain[..18], b"GET /ws HTTP/1.1\r\n");
            assert_eq!(&plain[18..], &big[..], "step {step}");
            // And back: several parts sealed as one run of records.
            let mut sealed = Vec::new();
            server.seal(&[b"HTTP/1.1 101 ", b"", &big], &mut sealed).unwrap();
            let mut want = b"HTTP/1.1 101 ".to_vec();
            want.extend_from_slice(&big);
            assert_eq!(to_client(&mut c, &sealed), want);
        }
    }

    #[test]
    fn failures_are_listed_in_declaration_order() {
        // Counters index by discriminant.
        for (i, failure) in TlsFailure::ALL.iter().enumerate() {
            assert_eq!(*failure as usize, i, "{failure:?}");
        }
    }

    #[test]
    fn plain_http_gets_a_readable_400_and_garbage_an_alert() {
        let (mut acceptor, _) = pair();
        let mut server = acceptor.accept(Instant::now()).unwrap();
        let (mut plain, mut sealed) = (Vec::new(), Vec::new());
        let err = server.unseal(&mut b"GET /ws HTTP/1.1\r\n".to_vec(), &mut plain, &mut sealed).unwrap_err();
        assert_eq!(err, TlsError { failure: TlsFailure::PlainHttp, in_handshake: true });
        assert!(sealed.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        assert_eq!(server.phase(), TlsPhase::Failed);
        assert_eq!(server.fail(TlsFailure::Timeout), None, "a failure is counted once");

        let mut server = acceptor.accept(Instant::now()).unwrap();
        sealed.clear();
        // A handshake record whose message has no known type.
        let mut garbage = vec![0x16, 0x03, 0x01, 0x00, 0x08, 0xfe, 0, 0, 4, 1, 2, 3, 4];
        let err = server.unseal(&mut garbage, &mut plain, &mut sealed).unwrap_err();
        assert!(err.in_handshake);
        assert_eq!(sealed.first(), Some(&0x15), "an alert record: {sealed:?}");
        assert!(plain.is_empty());
    }

    #[test]
    fn a_deferred_turn_keeps_its_bytes_for_the_next_unseal() {
        let (mut acceptor, config) = pair();
        let mut c = client(&config);
        let mut server = acceptor.accept(Instant::now()).unwrap();
        let hello = from_client(&mut c);
        server.defer(&hello);
        assert_eq!(server.pending_len(), hello.len());
        let (mut plain, mut sealed) = (Vec::new(), Vec::new());
        server.unseal(&mut [], &mut plain, &mut sealed).unwrap();
        assert_eq!(server.pending_len(), 0);
        assert_eq!(sealed.first(), Some(&0x16), "the server's first flight");
        to_client(&mut c, &sealed);
        let mut finished = from_client(&mut c);
        sealed.clear();
        let done = server.unseal(&mut finished, &mut plain, &mut sealed).unwrap();
        assert!(done.handshake_done.is_some());
        // The peer's close_notify ends the input.
        c.send_close_notify();
        let mut bye = from_client(&mut c);
        let closed = server.unseal(&mut bye, &mut plain, &mut sealed).unwrap();
        assert!(closed.peer_closed);
        assert_eq!(server.phase(), TlsPhase::PeerClosed);
    }
}
