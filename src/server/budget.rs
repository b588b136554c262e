//! The process's memory budget (`--memory-limit`): one figure against
//! which everything that grows with what peers send is counted, so that no
//! client (nor a crowd of them) can take the host's memory.
//!
//! What is counted, by kind (the `kind` label of
//! `wsloop_memory_budget_bytes`):
//!
//! - `input`: partial frames larger than a pooled buffer and fragmented
//!   messages being assembled (each loop's `input_bytes`);
//! - `backlog`: bytes queued for connections that are their own (replies,
//!   TLS records, frames compressed for them alone): `backlog_bytes` less
//!   the shared frames they reference;
//! - `frames`: published frames, each once however many members, inboxes
//!   or sends hold it (`pubsub::publication::frame_bytes`);
//! - `buffers`: pooled I/O buffers, in use or idle (not io_uring's
//!   provided receive ring: a fixed cost of at most 2,048 buffers per loop,
//!   whose pages are given back once a burst is over, so counting it would
//!   pin the budget after one burst);
//! - `codecs`: dedicated permessage-deflate contexts, at an estimate each
//!   ([`CODEC_BYTES`]);
//! - `redis`: the bridge's queue of publishes waiting for Redis.
//!
//! Two marks: past the soft one (3/4 of the limit) new connections are
//! refused (503 before the upgrade) and the loops stop reading from their
//! largest input holders; past the limit, the loops close their largest
//! holders (1009 for an unfinished message, 1013 "try again later"
//! otherwise) until they are back under the soft mark. A connection that
//! holds less than a pooled buffer is never among them: the polite are not
//! closed first. The loops act on the level; this module only counts.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use super::pubsub::publication::frame_bytes;
use super::stats::LoopStats;

/// What one dedicated deflate context (window 15, memory level 8) and its
/// connection's inflate context cost, as zlib allocates them: an estimate.
pub(crate) const CODEC_BYTES: u64 = 300 * 1024;

/// The soft mark, as a fraction of the limit: 3/4.
const SOFT_NUM: u64 = 3;
const SOFT_DEN: u64 = 4;

/// Where usage stands against the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    /// Under the soft mark (or no budget).
    Under = 0,
    /// Past the soft mark: refuse new connections, stop reading from the
    /// largest holders.
    Soft = 1,
    /// Past the limit: close the largest holders.
    Hard = 2,
}

/// What the process holds, by kind, in bytes (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Large partial frames and messages being assembled.
    pub input: u64,
    /// Connections' own unsent bytes.
    pub backlog: u64,
    /// Published frames, each once.
    pub frames: u64,
    /// Pooled and provided I/O buffers.
    pub buffers: u64,
    /// Dedicated compression contexts (estimated).
    pub codecs: u64,
    /// The Redis bridge's queue.
    pub redis: u64,
}

impl MemoryUsage {
    /// Every kind with its label, in exposition order.
    pub fn by_kind(&self) -> [(&'static str, u64); 6] {
        [
            ("input", self.input),
            ("backlog", self.backlog),
            ("frames", self.frames),
            ("buffers", self.buffers),
            ("codecs", self.codecs),
            ("redis", self.redis),
        ]
    }

    /// The sum of the kinds.
    pub fn total(&self) -> u64 {
        self.by_kind().iter().map(|(_, n)| n).sum()
    }
}

/// A figure outside the loops that the budget counts (the Redis queue).
pub(crate) type Gauge = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The budget: its limit, the loops' counters it reads, and the level the
/// last reading found (cached for the accept path). An embedder reads it
/// through [`ServerHandle::memory_budget`](crate::server::ServerHandle::memory_budget).
pub struct MemoryBudget {
    /// Bytes; 0: no budget.
    limit: u64,
    /// The pooled buffer size, to count buffers in bytes.
    buffer_size: u64,
    loops: OnceLock<Vec<Arc<LoopStats>>>,
    redis: OnceLock<Gauge>,
    level: AtomicU8,
}

impl MemoryBudget {
    /// A budget of `limit` bytes (0: none) over loops whose pooled buffers
    /// are `buffer_size` bytes.
    pub(crate) fn new(limit: u64, buffer_size: usize) -> Self {
        MemoryBudget {
            limit,
            buffer_size: buffer_size as u64,
            loops: OnceLock::new(),
            redis: OnceLock::new(),
            level: AtomicU8::new(Level::Under as u8),
        }
    }

    /// The limit in bytes (0: none).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The soft mark in bytes.
    pub fn soft_mark(&self) -> u64 {
        self.limit / SOFT_DEN * SOFT_NUM
    }

    /// Gives the budget the loops' counters (once, before they run).
    pub(crate) fn watch_loops(&self, loops: Vec<Arc<LoopStats>>) {
        let _ = self.loops.set(loops);
    }

    /// Gives the budget the Redis queue's size (once).
    pub(crate) fn watch_redis(&self, queued_bytes: Gauge) {
        let _ = self.redis.set(queued_bytes);
    }

    /// What the process holds now, by kind.
    pub fn usage(&self) -> MemoryUsage {
        let mut u = MemoryUsage { frames: frame_bytes() as u64, ..MemoryUsage::default() };
        for s in self.loops.get().map_or(&[][..], |l| &l[..]) {
            u.input += s.input_bytes.get();
            u.backlog += s.backlog_bytes.get().saturating_sub(s.shared_backlog_bytes.get());
            u.buffers += (s.pool_in_use.get() + s.pool_idle.get()) * self.buffer_size;
            u.codecs += s.dedicated_codecs.get() * CODEC_BYTES;
        }
        u.redis = self.redis.get().map_or(0, |g| g());
        u
    }

    /// Reads the usage and the level it puts the process at (cached for
    /// [`level`](Self::level)).
    pub(crate) fn refresh(&self) -> (Level, MemoryUsage) {
        let usage = self.usage();
        let level = self.level_of(usage.total());
        if self.level.load(Ordering::Relaxed) != level as u8 {
            self.level.store(level as u8, Ordering::Relaxed);
        }
        (level, usage)
    }

    /// The level `used` bytes put the process at.
    pub(crate) fn level_of(&self, used: u64) -> Level {
        match used {
            _ if self.limit == 0 => Level::Under,
            u if u >= self.limit => Level::Hard,
            u if u >= self.soft_mark() => Level::Soft,
            _ => Level::Under,
        }
    }

    /// The level the last reading found, as a number: 0 under the soft
    /// mark, 1 past it, 2 past the limit.
    pub fn level_number(&self) -> u8 {
        self.level() as u8
    }

    /// The level the last reading found.
    pub(crate) fn level(&self) -> Level {
        match self.level.load(Ordering::Relaxed) {
            0 => Level::Under,
            1 => Level::Soft,
            _ => Level::Hard,
        }
    }
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget").field("limit", &self.limit).field("level", &self.level()).finish()
    }
}

/// The default `--memory-limit`: see [`crate::tune::memory::default_budget`].
pub(crate) fn default_limit() -> Option<(u64, crate::tune::memory::MemorySource)> {
    crate::tune::memory::default_budget()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_marks() {
        let b = MemoryBudget::new(400, 16);
        assert_eq!(b.soft_mark(), 300);
        assert_eq!(b.level_of(299), Level::Under);
        assert_eq!(b.level_of(300), Level::Soft);
        assert_eq!(b.level_of(399), Level::Soft);
        assert_eq!(b.level_of(400), Level::Hard);
        assert_eq!(MemoryBudget::new(0, 16).level_of(u64::MAX), Level::Under, "no budget");
    }

    #[test]
    fn usage_counts_each_kind_from_the_loops_and_shared_frames_once() {
        let b = MemoryBudget::new(1 << 30, 1000);
        let a = Arc::new(LoopStats::default());
        let c = Arc::new(LoopStats::default());
        a.input_bytes.set(5000);
        // 40 members owe one 16 MiB frame: 640 MiB of backlog, all shared,
        // plus 300 bytes of their own.
        a.backlog_bytes.set(40 * (16 << 20) + 300);
        a.shared_backlog_bytes.set(40 * (16 << 20));
        c.pool_in_use.set(3);
        c.pool_idle.set(1);
        c.dedicated_codecs.set(2);
        b.watch_loops(vec![a, c]);
        b.watch_redis(Arc::new(|| 777));
        let u = b.usage();
        assert_eq!((u.input, u.backlog, u.buffers, u.codecs, u.redis), (5000, 300, 4000, 2 * CODEC_BYTES, 777));
        assert_eq!(u.total(), u.by_kind().iter().map(|k| k.1).sum::<u64>());
        let (level, _) = b.refresh();
        assert_eq!(level, Level::Under);
        assert_eq!(b.level(), Level::Under);
    }
}
