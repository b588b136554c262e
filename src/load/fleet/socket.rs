//! The socket calls a client connection makes, apart from what the fleet
//! does with their results: opening a non-blocking connect, reading TLS
//! records, and naming what an error means for the connection (the names
//! are the report's failure reasons).

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;

/// The report's name for a socket error.
pub(super) fn connect_error_reason(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => "refused",
        Some(libc::ETIMEDOUT) => "timeout",
        Some(libc::ECONNRESET) | Some(libc::EPIPE) => "reset",
        Some(libc::EADDRNOTAVAIL) => "no_local_ports",
        Some(libc::EMFILE) | Some(libc::ENFILE) => "client_fd_limit",
        _ => "connect_error",
    }
}

/// What a non-blocking write's result means to the loop writing.
pub(super) enum Wrote {
    /// It took this many bytes.
    Bytes(usize),
    /// The socket is full (or not connected yet): wait for a writable event.
    Blocked,
    /// Interrupted: try again.
    Again,
    /// The connection is broken, for this reason.
    Failed(&'static str),
}

impl Wrote {
    pub(super) fn of(result: io::Result<usize>) -> Wrote {
        match result {
            Ok(n) => Wrote::Bytes(n),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected) => Wrote::Blocked,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Wrote::Again,
            Err(e) => Wrote::Failed(connect_error_reason(&e)),
        }
    }
}

/// Why a TLS read gave no plaintext.
pub(super) enum TlsRead {
    /// The socket's error (`WouldBlock` included).
    Io(io::Error),
    /// The server closed the connection (FIN, or close_notify).
    Eof,
    /// The records were bad.
    Tls(rustls::Error),
}

/// Reads records off `socket` into `tls` and its plaintext into `rbuf`;
/// the ciphertext bytes read.
pub(super) fn read_tls(
    tls: &mut rustls::ClientConnection,
    socket: &mut TcpStream,
    rbuf: &mut Vec<u8>,
) -> Result<usize, TlsRead> {
    let n = match tls.read_tls(socket) {
        Ok(0) => return Err(TlsRead::Eof),
        Ok(n) => n,
        Err(e) => return Err(TlsRead::Io(e)),
    };
    let state = tls.process_new_packets().map_err(TlsRead::Tls)?;
    let mut plain = state.plaintext_bytes_to_read();
    while plain > 0 {
        let start = rbuf.len();
        rbuf.resize(start + plain, 0);
        let got = tls.reader().read(&mut rbuf[start..]).unwrap_or(0);
        rbuf.truncate(start + got);
        if got == 0 {
            break;
        }
        plain -= got;
    }
    if state.peer_has_closed() && rbuf.is_empty() {
        return Err(TlsRead::Eof);
    }
    Ok(n)
}

/// Opens a non-blocking connection to `target` from `source`.
pub(super) fn open_socket(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        // Let connect() pick the port per destination, so one source address
        // serves far more than 64k connections across destinations.
        let on: libc::c_int = 1;
        // SAFETY: a valid fd and a pointer to a live c_int of the right size.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}
