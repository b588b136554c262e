//! Fixed-size reusable buffers, one pool per event loop (no lock).
//!
//! A connection holds a buffer only while it has a partial frame to keep
//! or unsent bytes to queue; an idle connection holds none. Buffers that
//! grew past the pool's size (a large frame) are freed rather than kept,
//! and at most `max_idle` buffers wait in the pool, so the pool's memory is
//! bounded by `max_idle * buf_size` whatever the traffic was.

/// A per-loop stack of cleared, same-capacity `Vec<u8>` buffers.
#[derive(Debug)]
pub struct BufferPool {
    idle: Vec<Vec<u8>>,
    buf_size: usize,
    max_idle: usize,
    in_use: usize,
}

impl BufferPool {
    /// A pool of `buf_size`-byte buffers keeping at most `max_idle` spare.
    pub fn new(buf_size: usize, max_idle: usize) -> Self {
        BufferPool { idle: Vec::new(), buf_size: buf_size.max(64), max_idle, in_use: 0 }
    }

    /// The capacity of a pooled buffer.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// An empty buffer with at least `buf_size` capacity.
    #[inline]
    pub fn take(&mut self) -> Vec<u8> {
        self.in_use += 1;
        self.idle.pop().unwrap_or_else(|| Vec::with_capacity(self.buf_size))
    }

    /// Returns a buffer taken from this pool. One that grew is freed, and so
    /// is one that would take the pool past `max_idle`.
    #[inline]
    pub fn give(&mut self, mut buf: Vec<u8>) {
        debug_assert!(self.in_use > 0, "gave back a buffer that was never taken");
        self.in_use -= 1;
        if buf.capacity() == self.buf_size && self.idle.len() < self.max_idle {
            buf.clear();
            self.idle.push(buf);
        }
    }

    /// Frees spare buffers past `keep` (a loop whose crowd has gone).
    pub fn trim(&mut self, keep: usize) {
        self.idle.truncate(keep);
        self.idle.shrink_to_fit();
    }

    /// Buffers held by connections now.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Buffers waiting in the pool now.
    pub fn idle(&self) -> usize {
        self.idle.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_bounds() {
        let mut pool = BufferPool::new(1024, 2);
        let a = pool.take();
        let ptr = a.as_ptr();
        assert_eq!((a.capacity(), pool.in_use()), (1024, 1));
        pool.give(a);
        let b = pool.take();
        assert_eq!(b.as_ptr(), ptr, "the same buffer comes back");
        let c = pool.take();
        let d = pool.take();
        pool.give(b);
        pool.give(c);
        pool.give(d);
        assert_eq!((pool.in_use(), pool.idle()), (0, 2), "at most max_idle are kept");
    }

    #[test]
    fn grown_buffers_are_freed() {
        let mut pool = BufferPool::new(1024, 8);
        let mut a = pool.take();
        a.reserve(1 << 20);
        pool.give(a);
        assert_eq!(pool.idle(), 0);
    }
}
