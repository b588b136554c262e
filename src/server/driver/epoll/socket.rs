//! The epoll driver's socket calls: reads into a buffer's spare capacity
//! ([`recv_into`]) and corked writes behind a backlog ([`write_parts`]),
//! which keeps a large shared frame the kernel did not take by reference.

use std::collections::HashMap;
use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;

use crate::runtime::{BufferPool, Chain};

use crate::server::engine::conn::Conn;
use crate::server::engine::transport::Part;
use crate::server::life::{io_reason, CloseReason};
use crate::server::stats::{Counter, LoopStats};

/// Reads from `socket` into the spare capacity of `buf` (which must have
/// some), without zeroing it first.
pub(super) fn recv_into(socket: &mio::net::TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    debug_assert!(!spare.is_empty());
    // SAFETY: recv writes at most `spare.len()` bytes at the pointer, all
    // inside `buf`'s allocation, and we extend `len` by exactly the count
    // it reports written, so no uninitialised byte becomes visible.
    let n = unsafe { libc::recv(socket.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: see above; n <= spare.len().
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Slices one `writev` takes at most (plus the backlog): 64 frames owed
/// to one member in one pass go out in one call.
const MAX_IOV: usize = 64;

/// The connections whose backlog holds shared frames (by slot): their
/// whole backlog is a [`Chain`] here, and their `wbuf` is empty. Only
/// connections that left a large shared frame unsent are in it, so an
/// idle connection pays nothing for it.
pub(super) type Chains = HashMap<u32, Chain>;

/// Writes `parts`, in order, after any backlog, in as few `write`/`writev`
/// calls as the kernel allows (the parts are shared frames: nothing is
/// copied unless the kernel leaves it unsent, and a large shared frame not
/// even then). What it does not take is queued: in a pooled buffer, or in
/// the connection's chain once a shared frame is left (the pooled buffer
/// goes back to the pool once drained). Returns how many bytes of the
/// backlog that was there before are still unsent: the measure of a slow
/// consumer, judged before `parts` count.
pub(super) fn write_parts(
    conn: &mut Conn,
    chains: &mut Chains,
    slot: u32,
    parts: &[Part<'_>],
    pool: &mut BufferPool,
    stats: &LoopStats,
) -> Result<usize, CloseReason> {
    if !chains.is_empty() {
        if let Some(chain) = chains.get_mut(&slot) {
            let shared_before = chain.shared_len();
            let result = write_chained(conn, chain, parts, stats);
            move_gauge(&stats.shared_backlog_bytes, shared_before, chain.shared_len());
            if chain.is_empty() {
                chains.remove(&slot);
            }
            return result;
        }
    }
    if let ([one], true) = (parts, conn.wbuf.is_empty()) {
        return write_alone(conn, chains, slot, *one, pool, stats);
    }
    let backlog_before = conn.wbuf.len();
    let (result, sent_new, part, offset) = write_behind(&conn.socket, &mut conn.wbuf, parts, stats);
    // What is left of the earlier backlog: `parts` are only queued behind it.
    let earlier_unsent = if sent_new { 0 } else { conn.wbuf.len() };
    let spilled =
        result.is_ok() && part < parts.len() && queue_unsent(conn, chains, slot, &parts[part..], offset, pool, stats);
    if conn.wbuf.is_empty() && conn.wbuf.capacity() > 0 {
        pool.give(std::mem::take(&mut conn.wbuf));
    }
    let backlog_after = conn.wbuf.len() + if spilled { chains.get(&slot).map_or(0, Chain::len) } else { 0 };
    move_gauge(&stats.backlog_bytes, backlog_before, backlog_after);
    result.map(|()| earlier_unsent)
}

/// The hot path of [`write_parts`]: one part (a pass's replies) and no
/// backlog, so one `write` and nothing to account for unless the kernel
/// leaves some of it (then it is queued). No earlier backlog: returns 0.
fn write_alone(
    conn: &mut Conn,
    chains: &mut Chains,
    slot: u32,
    part: Part<'_>,
    pool: &mut BufferPool,
    stats: &LoopStats,
) -> Result<usize, CloseReason> {
    let bytes = part.bytes();
    let mut sent = 0;
    while sent < bytes.len() {
        match conn.socket.write(&bytes[sent..]) {
            Ok(0) => return Err(CloseReason::PeerGone),
            Ok(n) => {
                stats.bytes_sent.add(n as u64);
                sent += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                queue_unsent(conn, chains, slot, &[part], sent, pool, stats);
                stats.backlog_bytes.add((bytes.len() - sent) as u64);
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_reason(&e)),
        }
    }
    Ok(0)
}

/// [`write_parts`] for a connection whose backlog is a chain: the chain
/// and the parts drain as one, the rest of the parts joining the chain.
fn write_chained(
    conn: &mut Conn,
    chain: &mut Chain,
    parts: &[Part<'_>],
    stats: &LoopStats,
) -> Result<usize, CloseReason> {
    debug_assert!(conn.wbuf.is_empty(), "a chained backlog is all in the chain");
    let backlog_before = chain.len();
    let (result, sent_new, part, offset) = write_behind(&conn.socket, chain, parts, stats);
    let earlier_unsent = if sent_new { 0 } else { chain.len() };
    if result.is_ok() {
        for (i, p) in parts.iter().enumerate().skip(part) {
            chain_part(chain, *p, if i == part { offset } else { 0 });
        }
    }
    move_gauge(&stats.backlog_bytes, backlog_before, chain.len());
    result.map(|()| earlier_unsent)
}

/// Bytes queued before the parts a write brings: a pooled buffer of the
/// connection's own bytes, or a chain that also holds shared frames.
trait Backlog {
    /// Unsent bytes.
    fn len(&self) -> usize;
    /// Fills `iov` from the start with the unsent bytes; returns how many
    /// slices it filled and whether that is all of them (only then may the
    /// parts follow in the same `writev`).
    fn fill<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> (usize, bool);
    /// Forgets the first `n` bytes: the kernel took them.
    fn consume(&mut self, n: usize);
}

impl Backlog for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }

    fn fill<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> (usize, bool) {
        if self.is_empty() {
            return (0, true);
        }
        iov[0] = IoSlice::new(self);
        (1, true)
    }

    fn consume(&mut self, n: usize) {
        self.drain(..n);
    }
}

impl Backlog for Chain {
    fn len(&self) -> usize {
        Chain::len(self)
    }

    fn fill<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> (usize, bool) {
        let n = Chain::fill(self, iov);
        (n, n == self.chunk_count())
    }

    fn consume(&mut self, n: usize) {
        Chain::consume(self, n)
    }
}

/// Writes `backlog` and then `parts` in as few `write`/`writev` calls as
/// the kernel allows, until it takes no more. Returns how that ended,
/// whether any byte of `parts` went, and the first unsent byte of `parts`
/// (a part and an offset in it).
fn write_behind<B: Backlog>(
    socket: &mio::net::TcpStream,
    backlog: &mut B,
    parts: &[Part<'_>],
    stats: &LoopStats,
) -> (Result<(), CloseReason>, bool, usize, usize) {
    let (mut part, mut offset) = (0, 0);
    let mut sent_new = false;
    let result = loop {
        (part, offset) = skip_empty(parts, part, offset);
        let queued = backlog.len();
        if queued == 0 && part == parts.len() {
            break Ok(());
        }
        let written = match (queued, &parts[part..]) {
            (0, [one]) => (&*socket).write(&one.bytes()[offset..]),
            _ => write_gathered(socket, &*backlog, &parts[part..], offset),
        };
        match written {
            Ok(0) => break Err(CloseReason::PeerGone),
            Ok(n) => {
                stats.bytes_sent.add(n as u64);
                let from_queue = n.min(queued);
                backlog.consume(from_queue);
                sent_new |= n > from_queue;
                (part, offset) = advance(parts, part, offset, n - from_queue);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(io_reason(&e)),
        }
    };
    (result, sent_new, part, offset)
}

/// Adds a part (from `offset`) to a chain: by reference if shared and
/// large, else copied.
fn chain_part(chain: &mut Chain, part: Part<'_>, offset: usize) {
    match part {
        Part::Copy(bytes) => chain.push_own(&bytes[offset..]),
        Part::Share(frame) => chain.push_shared(frame, offset),
    }
}

/// Moves a gauge from `before` to `after`.
fn move_gauge(gauge: &Counter, before: usize, after: usize) {
    if after >= before {
        gauge.add((after - before) as u64);
    } else {
        gauge.sub((before - after) as u64);
    }
}

/// One `writev` of the backlog (up to [`MAX_IOV`] slices of it) and, if
/// all of it fitted, parts to fill the rest, the first from `offset`.
fn write_gathered<B: Backlog>(
    socket: &mio::net::TcpStream,
    backlog: &B,
    parts: &[Part<'_>],
    offset: usize,
) -> io::Result<usize> {
    let mut iov = [IoSlice::new(&[]); MAX_IOV + 1];
    let (mut n, whole) = backlog.fill(&mut iov[..MAX_IOV]);
    // The parts follow only a backlog that went in whole: the bytes the
    // kernel takes are the backlog's first, then the parts'.
    if whole {
        for (i, p) in parts.iter().take(MAX_IOV + 1 - n).enumerate() {
            iov[n] = IoSlice::new(if i == 0 { &p.bytes()[offset..] } else { p.bytes() });
            n += 1;
        }
    }
    (&*socket).write_vectored(&iov[..n])
}

/// The first position at or after (`part`, `offset`) with a byte to send.
fn skip_empty(parts: &[Part<'_>], mut part: usize, mut offset: usize) -> (usize, usize) {
    while part < parts.len() && offset == parts[part].bytes().len() {
        (part, offset) = (part + 1, 0);
    }
    (part, offset)
}

/// The position `n` bytes after (`part`, `offset`) in `parts`.
fn advance(parts: &[Part<'_>], mut part: usize, mut offset: usize, mut n: usize) -> (usize, usize) {
    while n > 0 {
        let step = n.min(parts[part].bytes().len() - offset);
        offset += step;
        n -= step;
        if offset == parts[part].bytes().len() {
            (part, offset) = (part + 1, 0);
        }
    }
    (part, offset)
}

/// Queues what the kernel left unsent (the rest of the first part from
/// `offset`, then whole ones) behind the connection's backlog: copied into
/// `wbuf` (a pooled buffer if it has none), or, if a large shared frame is
/// among them, into a chain that takes `wbuf` over and keeps the frames by
/// reference (counted in the shared-backlog gauge). True if it made a chain.
fn queue_unsent(
    conn: &mut Conn,
    chains: &mut Chains,
    slot: u32,
    rest: &[Part<'_>],
    offset: usize,
    pool: &mut BufferPool,
    stats: &LoopStats,
) -> bool {
    let shares = rest.iter().enumerate().any(|(i, p)| p.shares_from(if i == 0 { offset } else { 0 }));
    if shares {
        let mut chain = Chain::default();
        let wbuf = std::mem::take(&mut conn.wbuf);
        if wbuf.capacity() > 0 {
            // Its bytes join the chain; the pooled buffer goes back (a
            // pooled buffer must always be given back, or the pool's count
            // of buffers in use, which the memory budget reads, drifts).
            chain.push_own(&wbuf);
            pool.give(wbuf);
        }
        for (i, p) in rest.iter().enumerate() {
            chain_part(&mut chain, *p, if i == 0 { offset } else { 0 });
        }
        stats.shared_backlog_bytes.add(chain.shared_len() as u64);
        chains.insert(slot, chain);
        return true;
    }
    if conn.wbuf.capacity() == 0 {
        conn.wbuf = pool.take();
    }
    for (i, p) in rest.iter().enumerate() {
        conn.wbuf.extend_from_slice(&p.bytes()[if i == 0 { offset } else { 0 }..]);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A connection over loopback whose send side fills quickly, and its peer.
    fn small_window_pair() -> (Conn, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        peer.set_recv_buffer_size(4096).unwrap();
        peer.connect(&listener.local_addr().unwrap().into()).unwrap();
        let (server, _) = listener.accept().unwrap();
        socket2::SockRef::from(&server).set_send_buffer_size(4096).unwrap();
        server.set_nonblocking(true).unwrap();
        (Conn::new(mio::net::TcpStream::from_std(server), 1), peer.into())
    }

    #[test]
    fn a_chain_of_more_chunks_than_one_writev_takes_keeps_every_byte_in_order() {
        use std::io::Read;
        let (mut conn, mut peer) = small_window_pair();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let (mut chains, mut pool, stats) = (Chains::new(), BufferPool::new(16 * 1024, 4), LoopStats::default());
        // 100 shared frames: far more than MAX_IOV chunks left unsent.
        let frames: Vec<Bytes> =
            (0..100u32).map(|i| Bytes::from(vec![i as u8; crate::runtime::chain::SHARE_MIN + i as usize])).collect();
        let parts: Vec<Part<'_>> = frames.iter().map(Part::Share).collect();
        write_parts(&mut conn, &mut chains, 0, &parts, &mut pool, &stats).unwrap();
        assert!(chains.get(&0).is_some_and(|c| c.chunk_count() > MAX_IOV), "the test needs a long chain");
        // Now room for all of it at once: one writev may take every chunk
        // it was given and some of what follows them.
        socket2::SockRef::from(&conn.socket).set_send_buffer_size(4 << 20).unwrap();
        let mut want: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 8192];
        // The peer reads a little, then the connection writes a reply of
        // its own behind the chain, again and again.
        for i in 0..2000 {
            let n = peer.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            let reply = format!("reply {i};");
            want.extend_from_slice(reply.as_bytes());
            write_parts(&mut conn, &mut chains, 0, &[Part::Copy(reply.as_bytes())], &mut pool, &stats).unwrap();
            if chains.is_empty() && conn.wbuf.is_empty() {
                break;
            }
        }
        while got.len() < want.len() {
            let n = peer.read(&mut buf).unwrap();
            assert!(n > 0, "the peer got {} of {} bytes", got.len(), want.len());
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == want, "bytes out of order or lost (got {} of {})", got.len(), want.len());
        assert_eq!(stats.backlog_bytes.get(), 0);
        assert_eq!(stats.shared_backlog_bytes.get(), 0);
        assert_eq!(pool.in_use(), 0, "every pooled buffer went back");
    }

    #[test]
    fn advance_walks_across_parts_and_stops_at_part_ends() {
        let parts = [Part::Copy(b"abc"), Part::Copy(b""), Part::Copy(b"defg")];
        assert_eq!(advance(&parts, 0, 0, 0), (0, 0));
        assert_eq!(advance(&parts, 0, 0, 2), (0, 2));
        // Ending exactly on a part's end moves to the next part.
        assert_eq!(advance(&parts, 0, 0, 3), (1, 0));
        assert_eq!(advance(&parts, 0, 1, 4), (2, 2));
        assert_eq!(advance(&parts, 2, 2, 2), (3, 0));
    }
}
