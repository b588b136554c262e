//! The epoll driver's socket calls: reads into a buffer's spare capacity
//! ([`recv_into`]) and corked writes behind a backlog ([`write_parts`]).

use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;

use crate::runtime::BufferPool;

use crate::server::engine::conn::Conn;
use crate::server::life::{io_reason, CloseReason};
use crate::server::stats::LoopStats;

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

/// Writes `parts`, in order, after any backlog, in as few `write`/`writev`
/// calls as the kernel allows (the parts are shared frames: nothing is
/// copied unless the kernel leaves it unsent). What it does not take is
/// queued in a pooled buffer, which goes back to the pool once drained.
/// Returns how many bytes of the backlog that was there before are still
/// unsent: the measure of a slow consumer, judged before `parts` count.
pub(super) fn write_parts(
    conn: &mut Conn,
    parts: &[&[u8]],
    pool: &mut BufferPool,
    stats: &LoopStats,
) -> Result<usize, CloseReason> {
    if let ([one], true) = (parts, conn.wbuf.is_empty()) {
        return write_alone(conn, one, pool, stats);
    }
    let backlog_before = conn.wbuf.len();
    // The first unsent byte of `parts`: a part and an offset in it.
    let (mut part, mut offset) = (0, 0);
    let mut sent_new = false;
    let result = loop {
        while part < parts.len() && offset == parts[part].len() {
            (part, offset) = (part + 1, 0);
        }
        let queued = conn.wbuf.len();
        if queued == 0 && part == parts.len() {
            break Ok(());
        }
        let written = match (queued, &parts[part..]) {
            (0, [one]) => conn.socket.write(&one[offset..]),
            _ => write_gathered(conn, &parts[part..], offset),
        };
        match written {
            Ok(0) => break Err(CloseReason::PeerGone),
            Ok(n) => {
                stats.bytes_sent.add(n as u64);
                let from_queue = n.min(queued);
                conn.wbuf.drain(..from_queue);
                sent_new |= n > from_queue;
                (part, offset) = advance(parts, part, offset, n - from_queue);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(io_reason(&e)),
        }
    };
    // What is left of the earlier backlog: `parts` are only queued behind it.
    let earlier_unsent = if sent_new { 0 } else { conn.wbuf.len() };
    if result.is_ok() && part < parts.len() {
        queue_unsent(conn, &parts[part][offset..], &parts[part + 1..], pool);
    }
    if conn.wbuf.is_empty() && conn.wbuf.capacity() > 0 {
        pool.give(std::mem::take(&mut conn.wbuf));
    }
    let backlog_after = conn.wbuf.len();
    if backlog_after >= backlog_before {
        stats.backlog_bytes.add((backlog_after - backlog_before) as u64);
    } else {
        stats.backlog_bytes.sub((backlog_before - backlog_after) as u64);
    }
    result.map(|()| earlier_unsent)
}

/// The hot path of [`write_parts`]: one part (a pass's replies) and no
/// backlog, so one `write` and nothing to account for unless the kernel
/// leaves some of it (then it is queued). No earlier backlog: returns 0.
fn write_alone(conn: &mut Conn, bytes: &[u8], pool: &mut BufferPool, stats: &LoopStats) -> Result<usize, CloseReason> {
    let mut sent = 0;
    while sent < bytes.len() {
        match conn.socket.write(&bytes[sent..]) {
            Ok(0) => return Err(CloseReason::PeerGone),
            Ok(n) => {
                stats.bytes_sent.add(n as u64);
                sent += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                queue_unsent(conn, &bytes[sent..], &[], pool);
                stats.backlog_bytes.add((bytes.len() - sent) as u64);
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_reason(&e)),
        }
    }
    Ok(0)
}

/// One `writev` of the backlog (if any) and then up to [`MAX_IOV`] parts,
/// the first from `offset`.
fn write_gathered(conn: &mut Conn, parts: &[&[u8]], offset: usize) -> io::Result<usize> {
    let mut iov = [IoSlice::new(&[]); MAX_IOV + 1];
    let mut n = 0;
    if !conn.wbuf.is_empty() {
        iov[0] = IoSlice::new(&conn.wbuf);
        n = 1;
    }
    for (i, p) in parts.iter().take(MAX_IOV).enumerate() {
        iov[n] = IoSlice::new(if i == 0 { &p[offset..] } else { p });
        n += 1;
    }
    conn.socket.write_vectored(&iov[..n])
}

/// The position `n` bytes after (`part`, `offset`) in `parts`.
fn advance(parts: &[&[u8]], mut part: usize, mut offset: usize, mut n: usize) -> (usize, usize) {
    while n > 0 {
        let step = n.min(parts[part].len() - offset);
        offset += step;
        n -= step;
        if offset == parts[part].len() {
            (part, offset) = (part + 1, 0);
        }
    }
    (part, offset)
}

/// Copies what the kernel left unsent (the rest of one part, then whole
/// ones) into the connection's backlog, taking a pooled buffer if it has
/// none.
fn queue_unsent(conn: &mut Conn, first: &[u8], rest: &[&[u8]], pool: &mut BufferPool) {
    if conn.wbuf.capacity() == 0 {
        conn.wbuf = pool.take();
    }
    conn.wbuf.extend_from_slice(first);
    for p in rest {
        conn.wbuf.extend_from_slice(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_walks_across_parts_and_stops_at_part_ends() {
        let parts: [&[u8]; 3] = [b"abc", b"", b"defg"];
        assert_eq!(advance(&parts, 0, 0, 0), (0, 0));
        assert_eq!(advance(&parts, 0, 0, 2), (0, 2));
        // Ending exactly on a part's end moves to the next part.
        assert_eq!(advance(&parts, 0, 0, 3), (1, 0));
        assert_eq!(advance(&parts, 0, 1, 4), (2, 2));
        assert_eq!(advance(&parts, 2, 2, 2), (3, 0));
    }
}
