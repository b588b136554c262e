//! The once-a-second progress of a run: a load process's snapshot, the
//! sum of its children's in a split run, and the line printed for it.

use super::report::Latency;
use super::scrape::ServerView;

/// A snapshot for the once-a-second progress line.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Seconds since the start.
    pub t: f64,
    /// Connections open now.
    pub open: u64,
    /// The plan's target now.
    pub target: u64,
    /// Handshakes completed so far.
    pub established: u64,
    /// Connections failed so far.
    pub failed: u64,
    /// Messages received so far.
    pub received: u64,
    /// This process's anonymous resident memory (bytes) now.
    #[serde(default)]
    pub rss_anon: u64,
    /// Round trips completed since the last snapshot.
    #[serde(default)]
    pub rtt_window: Option<Latency>,
    /// Open connections the server has ended so far.
    #[serde(default)]
    pub disconnects: u64,
    /// `--reconnect`: lost connections open again so far.
    #[serde(default)]
    pub reconnects: u64,
    /// `--reconnect`: lost connections waiting for their retry now.
    #[serde(default)]
    pub waiting: u64,
}

impl Progress {
    /// The children's snapshots added up (the latest time; no round trips:
    /// the caller merges their histograms).
    pub(crate) fn sum(all: &[Progress]) -> Progress {
        all.iter().fold(Progress::default(), |a, p| Progress {
            t: a.t.max(p.t),
            open: a.open + p.open,
            target: a.target + p.target,
            established: a.established + p.established,
            failed: a.failed + p.failed,
            received: a.received + p.received,
            rss_anon: a.rss_anon + p.rss_anon,
            rtt_window: None,
            disconnects: a.disconnects + p.disconnects,
            reconnects: a.reconnects + p.reconnects,
            waiting: a.waiting + p.waiting,
        })
    }

    /// Disconnects and reconnects in the second since `prev` (since the
    /// start for the first): what a deploy looks like from the clients, per second.
    pub(crate) fn per_second(&self, prev: Option<&Progress>) -> (u64, u64) {
        let (d, r) = prev.map_or((0, 0), |p| (p.disconnects, p.reconnects));
        (self.disconnects.saturating_sub(d), self.reconnects.saturating_sub(r))
    }

    /// The progress line, with the server's view when scraped; once a
    /// connection was lost, the second's disconnects and reconnects
    /// (since `prev`) and those waiting for a retry.
    pub(crate) fn line(&self, server: Option<&ServerView>, prev: Option<&Progress>) -> String {
        let p = self;
        let mut line = format!(
            "[{:>6.1}s] open {:>7}/{:<7} established {:>8} failed {:>6} received {:>10}",
            p.t, p.open, p.target, p.established, p.failed, p.received
        );
        if p.disconnects > 0 {
            let (lost, back) = p.per_second(prev);
            line.push_str(&format!(" | lost {lost:>6}/s reconnects {back:>6}/s waiting {:>6}", p.waiting));
        }
        if let Some(v) = server {
            line.push_str(&format!(
                " | server conns {:>7.0} rss {:>7.1} MB fds {:>7.0}",
                v.connections,
                v.rss / 1e6,
                v.fds
            ));
        }
        line
    }
}

/// This process's anonymous resident memory, 0 where /proc cannot say.
pub fn own_anon_bytes() -> u64 {
    crate::tune::procfs::resident_anon_bytes(std::path::Path::new("/proc/self/status")).unwrap_or(0)
}
