//! The epoll driver's socket calls: reads into a buffer's spare capacity
//! (`Conn::read_into`), corked writes behind a backlog, and what a socket
//! error means for the connection. A completion driver (io_uring) replaces
//! this file, not the rules in `life.rs`.

use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;

use crate::runtime::BufferPool;

use super::conn::Conn;
use super::stats::{CloseReason, LoopStats};

impl Conn {
    /// Reads into the spare capacity of `buf` (which must have some),
    /// without zeroing it first.
    pub fn read_into(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let spare = buf.spare_capacity_mut();
        debug_assert!(!spare.is_empty());
        // SAFETY: recv writes at most `spare.len()` bytes at the pointer, all
        // inside `buf`'s allocation, and we extend `len` by exactly the count
        // it reports written, so no uninitialised byte becomes visible.
        let n = unsafe { libc::recv(self.socket.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        // SAFETY: see above; n <= spare.len().
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }
}

/// Writes `out` after any backlog (vectored), queueing what the kernel does
/// not take in a pooled buffer, and giving that buffer back once drained.
/// Returns how many bytes of the backlog that was there before are still
/// unsent: the measure of a slow consumer, judged before `out` is counted.
pub fn write_out(conn: &mut Conn, out: &[u8], pool: &mut BufferPool, stats: &LoopStats) -> Result<usize, CloseReason> {
    if out.is_empty() && conn.wbuf.is_empty() {
        return Ok(0);
    }
    let backlog_before = conn.wbuf.len();
    let mut out_pos = 0;
    let result = loop {
        let queued = conn.wbuf.len();
        if queued == 0 && out_pos == out.len() {
            break Ok(());
        }
        let written = if queued > 0 {
            let slices = [IoSlice::new(&conn.wbuf), IoSlice::new(&out[out_pos..])];
            conn.socket.write_vectored(&slices)
        } else {
            conn.socket.write(&out[out_pos..])
        };
        match written {
            Ok(0) => break Err(CloseReason::PeerGone),
            Ok(n) => {
                stats.bytes_sent.add(n as u64);
                let from_queue = n.min(queued);
                conn.wbuf.drain(..from_queue);
                out_pos += n - from_queue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(io_reason(&e)),
        }
    };
    // What is left of the earlier backlog: `out` is only queued behind it.
    let earlier_unsent = if out_pos > 0 { 0 } else { conn.wbuf.len() };
    if result.is_ok() && out_pos < out.len() {
        if conn.wbuf.capacity() == 0 {
            conn.wbuf = pool.take();
        }
        conn.wbuf.extend_from_slice(&out[out_pos..]);
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

/// The close reason a socket error stands for: the peer went away, or an
/// error of our own.
pub fn io_reason(e: &io::Error) -> CloseReason {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted => {
            CloseReason::PeerGone
        }
        _ => CloseReason::IoError,
    }
}
