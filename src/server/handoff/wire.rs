//! The hand-off's messages on the Unix socket, and the descriptors that
//! travel with them (SCM_RIGHTS).
//!
//! ```text
//! length (u32, of what follows) | kind (1) | descriptors (u16) | body
//! ```
//!
//! A message's descriptors are sent with its bytes, at most
//! [`MAX_FDS_PER_SEND`] per `sendmsg` (the kernel's SCM_MAX_FD is 253). The
//! reader keeps every descriptor that arrives in a queue and hands a
//! message the count it names once its bytes are whole: descriptors cannot
//! arrive later than the bytes they were sent with, so the queue always
//! holds them by then. Lengths are bounded by [`MAX_MESSAGE`].

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Bytes one message may carry: a batch of connections with their unsent
/// and unread bytes fits many times over.
pub(crate) const MAX_MESSAGE: usize = 256 << 20;
/// Descriptors one `sendmsg` carries at most.
pub(crate) const MAX_FDS_PER_SEND: usize = 200;
/// Descriptors one message may name.
const MAX_FDS_PER_MESSAGE: usize = 4096;
/// Bytes of an answer from the new process.
const MAX_ANSWER: usize = 4096;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Old -> new: the format, the old loop count, the listening address.
    Hello = 1,
    /// New -> old: the format is readable; go on.
    Ready = 2,
    /// New -> old: it cannot take over (the reason, UTF-8).
    Refuse = 3,
    /// Old -> new: the listening sockets (descriptors only).
    Listeners = 4,
    /// Old -> new: a batch of connections (count, records; descriptors).
    Conns = 5,
    /// Old -> new: everything is sent (the count).
    Done = 6,
    /// New -> old: every connection was adopted (the count).
    Adopted = 7,
    /// Old -> new: the Redis cut's marker token (empty: no cut) and the
    /// rooms with members here (each u16 length + UTF-8).
    Rooms = 8,
    /// New -> old: subscribed to those rooms and the marker (1) or not (0).
    Subscribed = 9,
    /// Old -> new: the connections are the new process's now; the old one
    /// will never take them back (the point of no return).
    Commit = 10,
}

impl Kind {
    fn of(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Ready,
            3 => Kind::Refuse,
            4 => Kind::Listeners,
            5 => Kind::Conns,
            6 => Kind::Done,
            7 => Kind::Adopted,
            8 => Kind::Rooms,
            9 => Kind::Subscribed,
            10 => Kind::Commit,
            _ => return None,
        })
    }
}

/// One message as read.
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) kind: Kind,
    pub(crate) body: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// One end of the hand-off socket.
pub(crate) struct Link {
    stream: UnixStream,
    /// Descriptors received ahead of the messages that name them.
    fds: VecDeque<OwnedFd>,
}

impl Link {
    pub(crate) fn new(stream: UnixStream) -> Link {
        Link { stream, fds: VecDeque::new() }
    }

    /// Bounds how long a read or write may wait.
    pub(crate) fn set_timeout(&self, d: Option<std::time::Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(d)?;
        self.stream.set_write_timeout(d)
    }

    /// Sends a message with `fds`, which stay open here (the peer gets its
    /// own copies).
    pub(crate) fn send(&mut self, kind: Kind, body: &[u8], fds: &[RawFd]) -> io::Result<()> {
        if body.len() + 3 > MAX_MESSAGE || fds.len() > MAX_FDS_PER_MESSAGE {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "hand-off message too large"));
        }
        let mut head = Vec::with_capacity(7);
        head.extend_from_slice(&((body.len() + 3) as u32).to_le_bytes());
        head.push(kind as u8);
        head.extend_from_slice(&(fds.len() as u16).to_le_bytes());
        let mut pending: Vec<&[u8]> = vec![&head, body];
        let mut fds = fds;
        while pending.iter().any(|p| !p.is_empty()) || !fds.is_empty() {
            let batch = &fds[..fds.len().min(MAX_FDS_PER_SEND)];
            // While more batches remain, each sendmsg carries one byte with
            // its descriptors, so every batch has bytes of its own to ride on.
            let limit = if fds.len() > batch.len() { 1 } else { usize::MAX };
            let iov = slices_up_to(&pending, limit);
            if iov.is_empty() {
                // More descriptors than bytes to carry them.
                return Err(io::Error::other("hand-off: descriptors without bytes to carry them"));
            }
            let cmsg = [ControlMessage::ScmRights(batch)];
            let cmsgs: &[ControlMessage<'_>] = if batch.is_empty() { &[] } else { &cmsg };
            let sent = sendmsg::<()>(self.stream.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
                .map_err(io::Error::from)?;
            if sent == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "hand-off socket closed"));
            }
            fds = &fds[batch.len()..];
            consume(&mut pending, sent);
        }
        Ok(())
    }

    /// Reads the next message (blocking, within the timeout).
    pub(crate) fn recv(&mut self) -> io::Result<Message> {
        self.recv_within(MAX_MESSAGE, MAX_FDS_PER_MESSAGE)
    }

    /// Reads an answer (Ready, Refuse, Subscribed, Adopted): small, and
    /// never with descriptors.
    pub(crate) fn recv_answer(&mut self) -> io::Result<Message> {
        self.recv_within(MAX_ANSWER, 0)
    }

    fn recv_within(&mut self, max_len: usize, max_fds: usize) -> io::Result<Message> {
        let mut head = [0u8; 7];
        self.read_exact(&mut head)?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = Kind::of(head[4]).ok_or_else(|| bad("unknown message kind"))?;
        let nfds = u16::from_le_bytes([head[5], head[6]]) as usize;
        if !(3..=max_len).contains(&len) || nfds > max_fds {
            return Err(bad("message length or descriptor count out of bounds"));
        }
        let mut body = vec![0u8; len - 3];
        self.read_exact(&mut body)?;
        // Descriptors come with the bytes of their own message, and a
        // message is read to its end only: exactly its own are queued.
        if self.fds.len() != nfds {
            return Err(bad("a message's descriptors are not the ones that came with it"));
        }
        let fds = self.fds.drain(..nfds).collect();
        Ok(Message { kind, body, fds })
    }

    /// Fills `buf`, keeping every descriptor that arrives on the way.
    fn read_exact(&mut self, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.recv_some(buf)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "hand-off socket closed"));
            }
            buf = &mut buf[n..];
        }
        Ok(())
    }

    fn recv_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS_PER_SEND]);
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<()>(self.stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(io::Error::from)?;
        let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
        for cmsg in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                // SAFETY: the kernel installed these descriptors for us.
                self.fds.extend(fds.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        if truncated {
            return Err(bad("descriptors were cut off in transit"));
        }
        Ok(msg.bytes)
    }
}

/// At most `limit` bytes of `pending`, in order, as slices for `sendmsg`.
fn slices_up_to<'a>(pending: &[&'a [u8]], limit: usize) -> Vec<IoSlice<'a>> {
    let mut left = limit;
    let mut out = Vec::new();
    for p in pending.iter().filter(|p| !p.is_empty()) {
        if left == 0 {
            break;
        }
        let n = p.len().min(left);
        out.push(IoSlice::new(&p[..n]));
        left -= n;
    }
    out
}

/// Drops `n` sent bytes off the front of `pending`.
fn consume(pending: &mut [&[u8]], mut n: usize) {
    for p in pending.iter_mut() {
        let k = n.min(p.len());
        *p = &p[k..];
        n -= k;
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("hand-off: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_with_more_descriptors_than_one_send_carries_arrives_whole() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut tx, mut rx) = (Link::new(a), Link::new(b));
        let files: Vec<std::fs::File> = (0..450).map(|_| std::fs::File::open("/dev/null").unwrap()).collect();
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let body = vec![7u8; 100_000];
        let sender = std::thread::spawn(move || {
            tx.send(Kind::Conns, &body, &raw).unwrap();
            tx.send(Kind::Done, b"", &[]).unwrap();
            files
        });
        let m = rx.recv().unwrap();
        assert_eq!((m.kind, m.body.len(), m.fds.len()), (Kind::Conns, 100_000, 450));
        assert!(m.body.iter().all(|&b| b == 7));
        assert_eq!(rx.recv().unwrap().kind, Kind::Done);
        drop(sender.join().unwrap());
    }

    #[test]
    fn a_bad_head_is_an_error_not_an_allocation() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut rx = Link::new(b);
        use std::io::Write;
        // 4 GiB claimed.
        a.write_all(&[0xff, 0xff, 0xff, 0xff, 5, 0, 0]).unwrap();
        assert_eq!(rx.recv().unwrap_err().kind(), io::ErrorKind::InvalidData);
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut rx = Link::new(b);
        a.write_all(&[3, 0, 0, 0, 99, 0, 0]).unwrap();
        assert_eq!(rx.recv().unwrap_err().kind(), io::ErrorKind::InvalidData);
        // Descriptors named that never came.
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut rx = Link::new(b);
        a.write_all(&[3, 0, 0, 0, 5, 2, 0]).unwrap();
        assert_eq!(rx.recv().unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
