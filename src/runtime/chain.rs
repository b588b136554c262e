//! Unsent output that mixes a connection's own bytes with frames shared by
//! many connections, in order. A shared frame the kernel did not take at
//! once stays a reference (a `Bytes` clone: the frame exists once however
//! many members owe it); only a connection's own bytes (replies, TLS
//! records, frames compressed for it alone) are copied in.
//!
//! Shared frames shorter than [`SHARE_MIN`] are copied too: a copy of a
//! few hundred bytes costs less than the reference and the `iovec` it
//! takes to send it, and bounds the chunks a storm of small publishes
//! leaves to one per burst.
//!
//! Size: 48 bytes empty; 40 per chunk (a `Bytes` or a `Vec` and a tag),
//! plus the owned chunks' bytes.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;

/// Shared frames (or their unsent rests) shorter than this are copied
/// rather than referenced.
pub const SHARE_MIN: usize = 1024;

/// One run of bytes in a [`Chain`].
#[derive(Debug)]
enum Chunk {
    /// The connection's own bytes.
    Own(Vec<u8>),
    /// A frame (or its unsent rest) shared with other connections.
    Shared(Bytes),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Own(v) => v,
            Chunk::Shared(b) => b,
        }
    }
}

/// See the module docs. Invariant: `len` is the sum of the chunks' lengths
/// less `head`, the bytes of the first chunk already sent, and `shared`
/// the part of `len` in shared chunks; no chunk is empty.
#[derive(Debug, Default)]
pub struct Chain {
    chunks: VecDeque<Chunk>,
    head: usize,
    len: usize,
    shared: usize,
}

impl Chain {
    /// Unsent bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing is left to send.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Chunks left (each one `iovec` to send).
    #[inline]
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Unsent bytes held by reference: frames other connections share, which
    /// a memory budget counts once, not once per connection.
    #[inline]
    pub fn shared_len(&self) -> usize {
        self.shared
    }

    /// Appends a copy of `bytes`, to the last chunk if it is the
    /// connection's own.
    pub fn push_own(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        if let Some(Chunk::Own(last)) = self.chunks.back_mut() {
            last.extend_from_slice(bytes);
        } else {
            self.chunks.push_back(Chunk::Own(bytes.to_vec()));
        }
    }

    /// Appends `bytes` the connection owns, without copying them unless the
    /// last chunk is its own too (then they join it).
    pub fn push_vec(&mut self, bytes: Vec<u8>) {
        if matches!(self.chunks.back(), Some(Chunk::Own(_))) {
            return self.push_own(&bytes);
        }
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.chunks.push_back(Chunk::Own(bytes));
        }
    }

    /// Appends `frame[from..]`, by reference unless it is shorter than
    /// [`SHARE_MIN`].
    pub fn push_shared(&mut self, frame: &Bytes, from: usize) {
        let rest = frame.len().saturating_sub(from);
        if rest < SHARE_MIN {
            return self.push_own(&frame[from.min(frame.len())..]);
        }
        self.len += rest;
        self.shared += rest;
        self.chunks.push_back(Chunk::Shared(frame.slice(from..)));
    }

    /// Fills `into` with the unsent bytes, in order, as many chunks as fit;
    /// returns how many slices it filled.
    pub fn fill<'a>(&'a self, into: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, chunk) in self.chunks.iter().take(into.len()).enumerate() {
            let bytes = chunk.bytes();
            into[i] = IoSlice::new(if i == 0 { &bytes[self.head..] } else { bytes });
            n += 1;
        }
        n
    }

    /// Appends every unsent byte, in order, to `out` (a connection leaving
    /// for another process takes its backlog as plain bytes).
    pub fn copy_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.len);
        for (i, chunk) in self.chunks.iter().enumerate() {
            let bytes = chunk.bytes();
            out.extend_from_slice(if i == 0 { &bytes[self.head..] } else { bytes });
        }
    }

    /// Forgets the first `n` unsent bytes: the kernel took them.
    pub fn consume(&mut self, mut n: usize) {
        debug_assert!(n <= self.len, "consumed {n} of {}", self.len);
        n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(first) = self.chunks.front() else { break };
            let left = first.bytes().len() - self.head;
            let shared = matches!(first, Chunk::Shared(_));
            if n < left {
                self.head += n;
                if shared {
                    self.shared -= n;
                }
                return;
            }
            if shared {
                self.shared -= left;
            }
            n -= left;
            self.head = 0;
            self.chunks.pop_front();
        }
        if self.len == 0 {
            self.chunks.clear();
            self.head = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsent(chain: &Chain) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); 16];
        let n = chain.fill(&mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn keeps_order_across_own_and_shared_chunks() {
        let big = Bytes::from(vec![7u8; SHARE_MIN + 10]);
        let mut chain = Chain::default();
        chain.push_own(b"ab");
        chain.push_shared(&big, 0);
        chain.push_own(b"cd");
        chain.push_vec(b"ef".to_vec());
        let mut want = b"ab".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"cdef");
        assert_eq!(unsent(&chain), want);
        assert_eq!(chain.len(), want.len());
        // "cd" and "ef" joined one chunk: three in all.
        assert_eq!(chain.chunks.len(), 3);
    }

    #[test]
    fn a_large_frame_is_shared_not_copied_and_a_small_one_is_copied() {
        let big = Bytes::from(vec![1u8; SHARE_MIN]);
        let small = Bytes::from(vec![2u8; SHARE_MIN - 1]);
        let mut chain = Chain::default();
        chain.push_shared(&big, 0);
        chain.push_shared(&small, 0);
        let mut slices = [IoSlice::new(&[]); 4];
        chain.fill(&mut slices);
        assert_eq!(slices[0].as_ptr(), big.as_ptr(), "the same bytes, by reference");
        assert_ne!(slices[1].as_ptr(), small.as_ptr(), "copied");
        assert_eq!(chain.shared_len(), SHARE_MIN);
        // The unsent rest of a frame is shared only while it is large.
        let mut rest = Chain::default();
        rest.push_shared(&big, 10);
        assert!(matches!(rest.chunks[0], Chunk::Own(_)));
        assert_eq!(rest.len(), SHARE_MIN - 10);
    }

    #[test]
    fn consume_walks_chunks_and_partial_heads() {
        let big = Bytes::from((0..SHARE_MIN as u32 + 6).map(|i| i as u8).collect::<Vec<_>>());
        let mut chain = Chain::default();
        chain.push_own(b"xyz");
        chain.push_shared(&big, 0);
        chain.consume(2);
        assert_eq!(unsent(&chain)[..2], *b"z\x00");
        assert_eq!(chain.shared_len(), big.len());
        chain.consume(1 + 5);
        assert_eq!(unsent(&chain), big[5..]);
        assert_eq!(chain.shared_len(), big.len() - 5);
        chain.consume(chain.len());
        assert!(chain.is_empty());
        assert_eq!(chain.shared_len(), 0);
        assert_eq!(chain.chunks.len(), 0);
        assert_eq!(unsent(&chain), b"");
    }

    #[test]
    fn fill_stops_at_the_slices_given() {
        let mut chain = Chain::default();
        for _ in 0..5 {
            chain.push_shared(&Bytes::from(vec![3u8; SHARE_MIN]), 0);
        }
        let mut slices = [IoSlice::new(&[]); 2];
        assert_eq!(chain.fill(&mut slices), 2);
        assert_eq!(chain.len(), 5 * SHARE_MIN);
        assert_eq!(chain.chunk_count(), 5, "the caller sees the chain did not fit");
    }

    #[test]
    fn empty_pushes_leave_no_chunk() {
        let mut chain = Chain::default();
        chain.push_own(b"");
        chain.push_vec(Vec::new());
        chain.push_shared(&Bytes::new(), 0);
        assert!(chain.is_empty());
        assert_eq!(chain.chunks.len(), 0);
    }
}
