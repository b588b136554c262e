//! The io_uring driver's ring, apart from the engine: setting it up, finding
//! out whether this kernel can run it at all ([`probe`]), what a completion
//! is about (`user_data`: operation, slot, generation), the provided-buffer
//! ring receives land in, and the sends in flight whose bytes the kernel
//! may still read. `driver/uring/mod.rs` maps its completions onto the
//! engine.
//!
//! Memory: an idle connection holds nothing here. A receive buffer is
//! taken by the kernel only when bytes arrive and is handed back as soon as
//! the protocol has consumed them (a partial frame is copied out), so the
//! ring is sized by the receives completing in one pass, not by
//! connections: it starts at `ServerConfig::uring_buffers` ([`FIRST_BUFFERS`]
//! by default) and grows by as many again
//! after a pass in which the kernel found it dry (`-ENOBUFS`, counted; the
//! receive is armed again and nothing is lost), up to [`RING_ENTRIES`].
//! Each buffer used costs RSS for the pages written into it, so growth is
//! at most one step per pass. A send's bytes live in [`Sending`] only until
//! its completion: a connection's own bytes in one buffer, or a chain whose
//! shared frames (a room publish) are referenced, never copied per member.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring, Probe};

// The generation bits `user_data` keeps: 28, so that the operation fits
// (the engine's generations are 28 bits for this reason).
use crate::runtime::Chain;
use crate::server::engine::table::GENERATION_MASK;

/// Submission queue entries; a pass that queues more submits early.
/// (64 bytes each, and every one is written in turn: they count in RSS.)
const SQ_ENTRIES: u32 = 1024;
/// Completion queue entries, sized explicitly: a pass completes about one
/// receive per connection with input and one send per connection owed. Past
/// it the kernel keeps completions on an overflow list (NODROP) until there
/// is room; only what it cannot allocate is lost, and counted.
const CQ_ENTRIES: u32 = 8192;
/// The provided-buffer ring's entries (a power of two): the most buffers
/// it can ever hold (32 MiB of 16 KiB buffers, were every byte written).
pub const RING_ENTRIES: u16 = 2048;
/// Buffers provided at start by default; enough for a quiet loop.
pub const FIRST_BUFFERS: usize = 64;
/// Input completions (receives, accepts) one pass handles at most; send
/// completions, only bookkeeping, do not count (see [`Ring::completions`]).
pub const PER_PASS: usize = 1024;
/// The buffer group receives pick from.
const BUFFER_GROUP: u16 = 0;

/// What a completion is about: the top four bits of its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The listener's multishot accept.
    Accept = 1,
    /// The inbox eventfd's read.
    Wake = 2,
    /// A connection's multishot receive.
    Recv = 3,
    /// A connection's send.
    Send = 4,
    /// A cancellation we asked for; nothing to do when it completes.
    Cancel = 5,
}

/// Packs an operation with the connection (slot and generation) it is for.
/// A completion for an earlier occupant of a reused slot is recognised by
/// its generation, as epoll's stale events are by their token.
#[inline]
pub fn user_data(op: Op, slot: u32, generation: u32) -> u64 {
    (op as u64) << 60 | ((generation & GENERATION_MASK) as u64) << 32 | slot as u64
}

/// The operation, slot and (28-bit) generation `user_data` was made from.
#[inline]
pub fn parse_user_data(data: u64) -> (Option<Op>, u32, u32) {
    let op = match data >> 60 {
        1 => Some(Op::Accept),
        2 => Some(Op::Wake),
        3 => Some(Op::Recv),
        4 => Some(Op::Send),
        5 => Some(Op::Cancel),
        _ => None,
    };
    (op, data as u32, (data >> 32) as u32 & GENERATION_MASK)
}

/// Why io_uring cannot be used here, in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Finds out whether this kernel runs the driver: io_uring not disabled or
/// blocked (seccomp, `kernel.io_uring_disabled`), every opcode it submits
/// offered, and a multishot receive into a provided-buffer ring actually
/// working on a socket pair (opcodes alone do not say so: multishot receive
/// came in 6.0).
///
/// It runs on a thread of its own that ends with it: a thread that has
/// used io_uring can be sent task-work notifications that interrupt its
/// blocking calls (EINTR on a socket read with a timeout), and the caller's
/// thread should not become one.
pub fn probe() -> Result<(), Unavailable> {
    std::thread::spawn(probe_here).join().unwrap_or_else(|_| Err(Unavailable("the io_uring probe panicked".into())))
}

fn probe_here() -> Result<(), Unavailable> {
    let no = |why: String| Err(Unavailable(why));
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if v.trim() == "2" {
            return no("kernel.io_uring_disabled = 2".into());
        }
    }
    let mut ring = match Ring::new(64, 1) {
        Ok(r) => r,
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => return no("this kernel has no io_uring".into()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            return no(format!("io_uring is not permitted here (seccomp or kernel.io_uring_disabled): {e}"))
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return no(format!("the kernel's io_uring lacks a setup flag or the buffer ring (Linux 6.1+): {e}"))
        }
        Err(e) => return no(format!("io_uring setup failed: {e}")),
    };
    if let Err(e) = ring.enable() {
        return no(format!("cannot enable an io_uring: {e}"));
    }
    if !ring.ring.params().is_feature_ext_arg() || !ring.ring.params().is_feature_nodrop() {
        return no("the kernel's io_uring is too old (needs EXT_ARG and NODROP)".into());
    }
    let mut ops = Probe::new();
    if let Err(e) = ring.ring.submitter().register_probe(&mut ops) {
        return no(format!("cannot probe io_uring opcodes: {e}"));
    }
    let needed = [
        ("ACCEPT", opcode::AcceptMulti::CODE),
        ("RECV", opcode::RecvMulti::CODE),
        ("SEND", opcode::Send::CODE),
        ("SENDMSG", opcode::SendMsg::CODE),
        ("READ", opcode::Read::CODE),
        ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
    ];
    if let Some((name, _)) = needed.iter().find(|(_, code)| !ops.is_supported(*code)) {
        return no(format!("the kernel lacks IORING_OP_{name}"));
    }
    multishot_receive_works(&mut ring).map_err(|e| Unavailable(format!("multishot receive does not work: {e}")))
}

/// Receives one byte through a multishot receive into the provided ring.
fn multishot_receive_works(ring: &mut Ring) -> io::Result<()> {
    let (a, b) = std::os::unix::net::UnixStream::pair()?;
    ring.recv(std::os::fd::AsRawFd::as_raw_fd(&a), 0, 0);
    io::Write::write_all(&mut &b, b"x")?;
    let mut done = Vec::new();
    ring.submit_and_wait(Duration::from_secs(1))?;
    ring.completions(&mut done);
    let &(_, res, flags) = done.first().ok_or_else(|| io::Error::other("no completion within 1 s"))?;
    let result = if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else if !cqueue::more(flags) || cqueue::buffer_select(flags).is_none() {
        Err(io::Error::other("the receive did not stay armed in a provided buffer"))
    } else {
        Ok(())
    };
    // Ends the receive (EOF) before the ring goes.
    drop((a, b));
    ring.submit_and_wait(Duration::from_secs(1))?;
    result
}

/// The buffers receives land in: a ring shared with the kernel (entries of
/// address, length and id) and the memory behind it, provided in chunks.
pub struct BufRing {
    /// The entries, `RING_ENTRIES` of them, page-aligned (mmap).
    entries: *mut BufRingEntry,
    ring_entries: u16,
    /// Our copy of the tail; published to the kernel after each change.
    tail: u16,
    buf_size: usize,
    /// Each buffer's address, by buffer id.
    addrs: Vec<*mut u8>,
    /// The memory behind `addrs`, in the chunks it was allocated in.
    chunks: Vec<Box<[u8]>>,
    registered: bool,
}

impl BufRing {
    /// Registers a ring of `ring_entries` and provides `first` buffers of
    /// `buf_size` bytes.
    fn new(ring: &IoUring, buf_size: usize, first: usize) -> io::Result<Self> {
        let ring_entries = RING_ENTRIES;
        let bytes = ring_entries as usize * std::mem::size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping, checked below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut bufs = BufRing {
            entries: map.cast(),
            ring_entries,
            tail: 0,
            buf_size,
            addrs: Vec::new(),
            chunks: Vec::new(),
            registered: false,
        };
        // SAFETY: the mapping is page-aligned, zeroed, `ring_entries` long,
        // and lives until `Drop` (after `unregister`).
        unsafe { ring.submitter().register_buf_ring_with_flags(map as u64, ring_entries, BUFFER_GROUP, 0)? };
        bufs.registered = true;
        bufs.grow(first);
        Ok(bufs)
    }

    /// Buffers provided so far.
    pub fn provided(&self) -> usize {
        self.addrs.len()
    }

    /// Provides `more` new buffers (fewer at the ring's size); false if the
    /// ring is full already.
    pub fn grow(&mut self, more: usize) -> bool {
        let more = more.min(self.ring_entries as usize - self.addrs.len());
        if more == 0 {
            return false;
        }
        // Zeroed memory is mapped lazily: a buffer costs RSS only once the
        // kernel has written into it, one page at a time.
        let mut chunk = vec![0u8; more * self.buf_size].into_boxed_slice();
        let base = chunk.as_mut_ptr();
        for i in 0..more {
            let bid = self.addrs.len() as u16;
            // SAFETY: `i * buf_size` is inside the chunk.
            self.addrs.push(unsafe { base.add(i * self.buf_size) });
            self.provide(bid);
        }
        self.chunks.push(chunk);
        true
    }

    /// Gives the pages of every buffer back to the system (their contents
    /// are meaningless until the kernel fills one again, which maps fresh
    /// zeroed pages). A buffer costs RSS once the kernel has written into
    /// it, and after a storm most never are again: this is what returns
    /// them after a ramp-down.
    ///
    /// Only between passes, with every buffer back in the ring (each is
    /// handed back in the pass that received it). The kernel writes into a
    /// provided buffer only while this thread is inside `io_uring_enter`
    /// (the ring is single-issuer with deferred task work), so none is
    /// being written while the pages go.
    pub fn release_pages(&mut self) {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        for chunk in &mut self.chunks {
            let start = chunk.as_mut_ptr() as usize;
            let first = start.next_multiple_of(page);
            let end = (start + chunk.len()) / page * page;
            if end > first {
                // SAFETY: [first, end) lies inside the chunk, which we own
                // and nothing reads until the kernel refills a buffer.
                unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED) };
            }
        }
    }

    /// Hands buffer `bid` (back) to the kernel.
    pub fn provide(&mut self, bid: u16) {
        let index = (self.tail & (self.ring_entries - 1)) as usize;
        // SAFETY: `index` is within the mapping; the kernel reads entries
        // only below the tail we publish after writing this one.
        unsafe {
            let entry = &mut *self.entries.add(index);
            entry.set_addr(self.addrs[bid as usize] as u64);
            entry.set_len(self.buf_size as u32);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field overlays the first entry's reserved bytes,
        // which the kernel never reads as part of an entry.
        unsafe {
            let tail = BufRingEntry::tail(self.entries) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// The first `len` bytes of buffer `bid`, which the kernel filled and
    /// has not been handed back yet.
    ///
    /// # Safety
    /// `bid` must come from a completion and not be provided again while
    /// the slice lives; nothing else may hold a slice of the same buffer.
    pub unsafe fn filled<'a>(&self, bid: u16, len: usize) -> &'a mut [u8] {
        debug_assert!(len <= self.buf_size);
        std::slice::from_raw_parts_mut(self.addrs[bid as usize], len)
    }

    fn unregister(&mut self, ring: &IoUring) {
        if self.registered {
            let _ = ring.submitter().unregister_buf_ring(BUFFER_GROUP);
            self.registered = false;
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        let bytes = self.ring_entries as usize * std::mem::size_of::<BufRingEntry>();
        // SAFETY: the mapping made in `new`; the ring that used it is gone
        // or has unregistered it.
        unsafe { libc::munmap(self.entries.cast(), bytes) };
    }
}

/// iovecs one `sendmsg` of a chain takes at most; the rest goes in the
/// next, at the completion.
const MAX_IOV: usize = 64;

/// A send in flight: the kernel may read its bytes until its completion
/// comes, so they stay here, untouched, until then.
#[derive(Debug)]
pub enum Sending {
    /// The connection's own bytes, of which the kernel took `sent`.
    Flat {
        /// What was handed to the kernel.
        buf: Vec<u8>,
        /// How much of it the kernel has taken so far.
        sent: usize,
    },
    /// Own bytes and shared frames (by reference), sent with `sendmsg`
    /// over iovecs into the chain; the chain forgets what the kernel took.
    Chain {
        /// What is left to send.
        chain: Chain,
        /// The iovecs of the `sendmsg` in flight, into `chain`.
        iov: Box<[libc::iovec; MAX_IOV]>,
        /// Its header, pointing at `iov`.
        msg: Box<libc::msghdr>,
    },
}

impl Sending {
    /// Bytes the kernel has not taken.
    pub fn unsent(&self) -> usize {
        match self {
            Sending::Flat { buf, sent } => buf.len() - sent,
            Sending::Chain { chain, .. } => chain.len(),
        }
    }

    /// Appends the unsent bytes, in order, to `out`.
    pub fn copy_to(&self, out: &mut Vec<u8>) {
        match self {
            Sending::Flat { buf, sent } => out.extend_from_slice(&buf[*sent..]),
            Sending::Chain { chain, .. } => chain.copy_to(out),
        }
    }

    /// Unsent bytes held by reference (shared frames).
    pub fn shared_len(&self) -> usize {
        match self {
            Sending::Flat { .. } => 0,
            Sending::Chain { chain, .. } => chain.shared_len(),
        }
    }

    /// The kernel took `n` more bytes; true if some are left to send.
    pub fn advance(&mut self, n: usize) -> bool {
        match self {
            Sending::Flat { sent, .. } => *sent += n,
            Sending::Chain { chain, .. } => chain.consume(n),
        }
        self.unsent() > 0
    }

    /// The submission that sends the unsent rest (for a chain, its first
    /// [`MAX_IOV`] chunks, the iovecs filled here).
    fn entry(&mut self, fd: RawFd) -> squeue::Entry {
        match self {
            Sending::Flat { buf, sent } => {
                let rest = &buf[*sent..];
                opcode::Send::new(Fd(fd), rest.as_ptr(), rest.len() as u32).build()
            }
            Sending::Chain { chain, iov, msg } => {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let n = chain.fill(&mut slices);
                for (v, s) in iov.iter_mut().zip(&slices[..n]) {
                    *v = libc::iovec { iov_base: s.as_ptr() as *mut libc::c_void, iov_len: s.len() };
                }
                msg.msg_iov = iov.as_mut_ptr();
                msg.msg_iovlen = n as _;
                opcode::SendMsg::new(Fd(fd), &**msg as *const libc::msghdr).build()
            }
        }
    }
}

/// One loop's ring: the queues, the receive buffers, the sends in flight.
pub struct Ring {
    // Declared first: dropped (and the kernel's use of what follows ended)
    // before the buffers below are freed.
    ring: IoUring,
    /// Where receives land.
    pub bufs: BufRing,
    /// Sends in flight, by `user_data`: a closed connection's stay until
    /// their completion (the kernel may still read them).
    pub sending: HashMap<u64, Sending>,
    /// The eventfd's 8-byte counter, read in place by the `Wake` read.
    wake_buf: Box<u64>,
    /// Completions the kernel could not post (lost), as it counts them.
    pub overflowed: u32,
}

// SAFETY: the raw pointers in `BufRing` point into memory the ring owns;
// a `Ring` is moved to its loop's thread once and used there only.
unsafe impl Send for Ring {}

impl Ring {
    /// A ring for one loop, receives in `buf_size` buffers, `first` of them
    /// to start with (at least one). Made disabled,
    /// and enabled by [`enable`](Self::enable) on the thread that becomes
    /// its only submitter (the loop's, which also makes it).
    pub fn new(buf_size: usize, first: usize) -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_r_disabled()
            .build(SQ_ENTRIES)?;
        let bufs = BufRing::new(&ring, buf_size, first.max(1))?;
        Ok(Ring { ring, bufs, sending: HashMap::new(), wake_buf: Box::new(0), overflowed: 0 })
    }

    /// Enables the ring for the calling thread.
    pub fn enable(&self) -> io::Result<()> {
        self.ring.submitter().register_enable_rings()
    }

    /// Queues `entry`, submitting what is queued first if the queue is full.
    ///
    /// # Safety
    /// Whatever memory `entry` points at must stay valid until its
    /// completion.
    unsafe fn push(&mut self, entry: squeue::Entry) {
        loop {
            if self.ring.submission().push(&entry).is_ok() {
                return;
            }
            if let Err(e) = self.ring.submit() {
                log::warn!("io_uring submit failed: {e}");
            }
        }
    }

    /// Arms the listener's multishot accept.
    pub fn accept(&mut self, listener: RawFd) {
        let entry = opcode::AcceptMulti::new(Fd(listener)).flags(libc::SOCK_CLOEXEC).build();
        // SAFETY: no memory is attached.
        unsafe { self.push(entry.user_data(user_data(Op::Accept, 0, 0))) };
    }

    /// Arms the read of the inbox eventfd's counter.
    pub fn read_wake(&mut self, eventfd: RawFd) {
        let ptr = (&mut *self.wake_buf as *mut u64).cast::<u8>();
        let entry = opcode::Read::new(Fd(eventfd), ptr, 8).build();
        // SAFETY: `wake_buf` is boxed and lives as long as the ring.
        unsafe { self.push(entry.user_data(user_data(Op::Wake, 0, 0))) };
    }

    /// Arms a connection's multishot receive.
    pub fn recv(&mut self, fd: RawFd, slot: u32, generation: u32) {
        let entry = opcode::RecvMulti::new(Fd(fd), BUFFER_GROUP).build();
        // SAFETY: it writes only into provided buffers, owned by `bufs`.
        unsafe { self.push(entry.user_data(user_data(Op::Recv, slot, generation))) };
    }

    /// Sends `buf` (from the start) for a connection; it stays in
    /// [`sending`](Self::sending) until its completion.
    pub fn send(&mut self, fd: RawFd, slot: u32, generation: u32, buf: Vec<u8>) {
        self.start(fd, slot, generation, Sending::Flat { buf, sent: 0 });
    }

    /// Sends `chain` for a connection, its shared frames by reference; it
    /// stays in [`sending`](Self::sending) until its completion.
    pub fn send_chain(&mut self, fd: RawFd, slot: u32, generation: u32, chain: Chain) {
        // SAFETY: an all-zero msghdr is a valid empty one.
        let msg = Box::new(unsafe { std::mem::zeroed::<libc::msghdr>() });
        let iov = Box::new([libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_IOV]);
        self.start(fd, slot, generation, Sending::Chain { chain, iov, msg });
    }

    fn start(&mut self, fd: RawFd, slot: u32, generation: u32, sending: Sending) {
        let key = user_data(Op::Send, slot, generation);
        debug_assert!(!self.sending.contains_key(&key), "one send in flight per connection");
        self.sending.insert(key, sending);
        self.resend(fd, key);
    }

    /// (Re)submits the unsent rest of the send `key`.
    pub fn resend(&mut self, fd: RawFd, key: u64) {
        let Some(s) = self.sending.get_mut(&key) else { return };
        let entry = s.entry(fd);
        // SAFETY: the bytes (a Vec's heap buffer, a chain's chunks) and the
        // boxed iovecs and header stay in `sending`, unmoved (moving the
        // entry moves none of them) and untouched, until this send's
        // completion.
        unsafe { self.push(entry.user_data(key)) };
    }

    /// Asks the kernel to cancel the operation `target`.
    pub fn cancel(&mut self, target: u64) {
        let entry = opcode::AsyncCancel::new(target).build();
        // SAFETY: no memory is attached.
        unsafe { self.push(entry.user_data(user_data(Op::Cancel, 0, 0))) };
    }

    /// True if nothing is queued for submission (all of it reached the
    /// kernel).
    pub fn all_submitted(&mut self) -> bool {
        self.ring.submission().is_empty()
    }

    /// Submits everything queued in one `io_uring_enter` and waits up to
    /// `timeout` for a completion (not at all when zero).
    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        let ts = Timespec::from(timeout);
        match self.ring.submitter().submit_with_args(1, &SubmitArgs::new().timespec(&ts)) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Takes the completions posted so far (user_data, result, flags), up
    /// to [`PER_PASS`] of input (receives, accepts); the rest wait for the
    /// next pass, so that the replies to the first do not wait behind
    /// thousands of others (epoll takes at most as many events per wait).
    /// Send completions are taken however many come before them: a room
    /// publish to 10,000 members posts 10,000, and a publisher's next
    /// message queued behind them must not wait passes for its turn (epoll
    /// gets no event for a send at all). Notes any the kernel dropped.
    pub fn completions(&mut self, into: &mut Vec<(u64, i32, u32)>) {
        let mut cq = self.ring.completion();
        self.overflowed = cq.overflow();
        let mut input = 0;
        for c in &mut cq {
            into.push((c.user_data(), c.result(), c.flags()));
            if !matches!(parse_user_data(c.user_data()).0, Some(Op::Send | Op::Cancel)) {
                input += 1;
                if input == PER_PASS {
                    break;
                }
            }
        }
    }

    /// Bytes of the send in flight for `key` that the kernel has not taken.
    pub fn unsent(&self, key: u64) -> usize {
        self.sending.get(&key).map_or(0, Sending::unsent)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        self.bufs.unregister(&self.ring);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips_and_masks_the_generation() {
        for (op, slot, generation) in [(Op::Recv, 0, 0), (Op::Send, 123_456, 7), (Op::Accept, u32::MAX, u32::MAX)] {
            let (o, s, g) = parse_user_data(user_data(op, slot, generation));
            assert_eq!((o, s, g), (Some(op), slot, generation & GENERATION_MASK));
        }
        // A generation 2^28 later is (deliberately) the same one: the
        // engine's generations wrap at 2^28.
        assert_eq!(parse_user_data(user_data(Op::Recv, 1, 5 + (1 << 28))).2, 5);
        assert_eq!(parse_user_data(0).0, None);
    }

    #[test]
    fn the_probe_answers_in_one_line() {
        // Either works here or says why; both are one line.
        if let Err(e) = probe() {
            assert!(!e.0.contains('\n'), "{e}");
        }
    }
}
