//! What a load run measured, in a form that children can send to their
//! parent as JSON and the parent can merge: counts, failures by reason,
//! full latency histograms (as value/count pairs), and a per-second
//! timeline of the client's and the server's view.

use std::collections::BTreeMap;
use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A latency histogram in microseconds, mergeable and serialisable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    /// (value in µs, count) for every recorded value bucket.
    pub counts: Vec<(u64, u64)>,
}

impl Latency {
    /// Snapshot of a live histogram.
    pub fn from_hist(h: &Histogram<u64>) -> Self {
        Latency { counts: h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect() }
    }

    /// Back into a histogram (for merging and percentiles).
    pub fn to_hist(&self) -> Histogram<u64> {
        let mut h = new_histogram();
        for (v, c) in &self.counts {
            let _ = h.record_n(*v, *c);
        }
        h
    }
}

/// The histogram every latency is recorded in: 1 µs to 1 h, 3 digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    /// From a histogram in µs.
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    /// Connections the client holds open.
    pub open: u64,
    /// The server's connections (sum over metrics URLs), if scraped.
    pub server_connections: Option<f64>,
    /// The server's resident memory in bytes (sum), if scraped.
    pub server_rss: Option<f64>,
    /// The server's anonymous resident memory in bytes (sum), if scraped.
    #[serde(default)]
    pub server_anon: Option<f64>,
    /// The server's open descriptors (sum), if scraped.
    pub server_fds: Option<f64>,
    /// p99 of the round trips completed in this second, in ms.
    #[serde(default)]
    pub rtt_p99_ms: Option<f64>,
    /// The load generator's anonymous resident memory, all its processes.
    #[serde(default)]
    pub load_anon: Option<f64>,
    /// This host's kernel: slab, TCP sockets and buffers (see [`HostView`]).
    #[serde(default)]
    pub host: Option<HostView>,
    /// Open connections the server ended in this second.
    #[serde(default)]
    pub disconnects: u64,
    /// `--reconnect`: lost connections open again in this second.
    #[serde(default)]
    pub reconnects: u64,
}

/// What this host's kernel holds: where most of a connection's memory is
/// on Linux (a socket, its file and epoll entry live in the slab; buffered
/// bytes in TCP memory). Host-wide: on a shared host it counts both ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    /// Slab, all caches, bytes.
    pub slab: f64,
    /// The slab the kernel cannot reclaim, bytes.
    pub slab_unreclaimable: f64,
    /// TCP sockets in use (not counting TIME_WAIT).
    pub tcp_sockets: f64,
    /// Bytes in TCP send and receive queues.
    pub tcp_buffers: f64,
}

impl HostView {
    /// Reads the live figures from `proc_root` (`/proc`).
    pub fn read(proc_root: &std::path::Path) -> Option<HostView> {
        let slab = crate::tune::procfs::slab(proc_root)?;
        let sockstat = std::fs::read_to_string(proc_root.join("net/sockstat")).ok()?;
        Some(HostView {
            slab: slab.total as f64,
            slab_unreclaimable: slab.unreclaimable as f64,
            tcp_sockets: crate::tune::sockstat::tcp_field(&sockstat, "inuse")? as f64,
            tcp_buffers: crate::tune::sockstat::tcp_memory_bytes(proc_root)? as f64,
        })
    }
}

/// The outcome of the leak check (`--expect-clean`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeakCheck {
    /// Whether the server came back to its baseline.
    pub clean: bool,
    /// What was found, in words.
    pub detail: String,
}

/// What `--reconnect` saw: every connection the server ended came back (a
/// reconnect, with its gap), was no longer wanted by the plan before it
/// was back, or never came back by the end of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reconnects {
    /// Lost connections open again.
    pub reconnects: u64,
    /// Lost connections not open again when the run ended (an error).
    pub never_back: u64,
    /// Lost connections the plan no longer wanted (its target fell) before
    /// they were open again.
    #[serde(default)]
    pub unwanted: u64,
    /// Retries that failed before their 101, by reason (each is retried).
    pub retries_failed: BTreeMap<String, u64>,
    /// From losing a connection to its 101 again, every reconnect.
    pub gap: Option<Latency>,
    /// The gap's percentiles (of `gap`, kept beside it for readers of the JSON).
    pub gap_ms: Option<Percentiles>,
}

impl Reconnects {
    /// Adds another process's figures into these.
    fn merge(&mut self, other: &Reconnects) {
        self.reconnects += other.reconnects;
        self.never_back += other.never_back;
        self.unwanted += other.unwanted;
        for (k, v) in &other.retries_failed {
            *self.retries_failed.entry(k.clone()).or_default() += v;
        }
        if let Some(theirs) = &other.gap {
            let mut h = self.gap.as_ref().map_or_else(new_histogram, Latency::to_hist);
            let _ = h.add(theirs.to_hist());
            self.set_gap(&h);
        }
    }

    /// Sets the gap histogram and its percentiles.
    pub(crate) fn set_gap(&mut self, h: &Histogram<u64>) {
        self.gap = (!h.is_empty()).then(|| Latency::from_hist(h));
        self.gap_ms = (!h.is_empty()).then(|| Percentiles::of(h));
    }

    /// The summary's lines: reconnects, those never back, the gap.
    fn lines(&self, s: &mut String) {
        let _ = writeln!(s, "  {:<28} {} ({} never back)", "reconnects", self.reconnects, self.never_back);
        if self.unwanted > 0 {
            let _ = writeln!(s, "    {:<26} {}", "no longer wanted", self.unwanted);
        }
        if let Some(p) = self.gap_ms {
            let _ = writeln!(
                s,
                "  {:<28} p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                "  gap (lost to open again)", p.p50_ms, p.p99_ms, p.max_ms
            );
        }
        for (reason, n) in &self.retries_failed {
            let _ = writeln!(s, "    {:<26} {n}", format!("retry failed: {reason}"));
        }
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// The scenario run.
    pub scenario: String,
    /// Seconds the run took.
    pub duration_secs: f64,
    /// The most connections open at once (client side).
    pub peak_open: u64,
    /// Handshakes completed.
    pub established: u64,
    /// Connections that failed, by reason.
    pub failed: BTreeMap<String, u64>,
    /// Open connections the server closed or dropped without being asked, by code or reason.
    pub server_closed: BTreeMap<String, u64>,
    /// Replies whose payload did not match what was sent.
    pub mismatches: u64,
    /// Pings whose pong did not come within the interval.
    pub pong_timeouts: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Connect-to-101 latency.
    pub handshake: Option<Latency>,
    /// Message round trip (ping -> pong, echo).
    pub rtt: Option<Latency>,
    /// Round trips while the plan held its peak (the hold stages, not the ramps).
    #[serde(default)]
    pub rtt_at_peak: Option<Latency>,
    /// Per-second samples.
    pub timeline: Vec<Sample>,
    /// The server's figures before the run, if scraped.
    pub server_baseline: Option<Sample>,
    /// This host's kernel before the run.
    #[serde(default)]
    pub host_baseline: Option<HostView>,
    /// Open connections the server ended, by close code: the frame's
    /// code, 1005 for a close frame without one, 1006 for a connection
    /// that ended without a close frame (EOF or reset). With or without
    /// `--reconnect`.
    #[serde(default)]
    pub disconnects: BTreeMap<String, u64>,
    /// `--reconnect`: how the lost connections came back.
    #[serde(default)]
    pub reconnect: Option<Reconnects>,
    /// The leak check, if asked for.
    pub leak_check: Option<LeakCheck>,
    /// True if Ctrl-C cut the run short.
    pub interrupted: bool,
    /// Processes the run was split over.
    pub processes: usize,
}

impl Report {
    /// Total failed connections.
    pub fn failures(&self) -> u64 {
        self.failed.values().sum()
    }

    /// True if the run saw no error of any kind.
    pub fn is_clean_run(&self) -> bool {
        self.failures() == 0
            && self.server_closed.is_empty()
            && self.mismatches == 0
            && self.pong_timeouts == 0
            && self.reconnect.as_ref().is_none_or(|r| r.never_back == 0)
            && self.leak_check.as_ref().is_none_or(|l| l.clean)
    }

    /// Adds a child's report into this one (the timeline is the parent's).
    pub fn merge(&mut self, other: &Report) {
        self.established += other.established;
        for (k, v) in &other.failed {
            *self.failed.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.server_closed {
            *self.server_closed.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.disconnects {
            *self.disconnects.entry(k.clone()).or_default() += v;
        }
        if let Some(theirs) = &other.reconnect {
            self.reconnect.get_or_insert_with(Reconnects::default).merge(theirs);
        }
        self.mismatches += other.mismatches;
        self.pong_timeouts += other.pong_timeouts;
        self.messages_sent += other.messages_sent;
        self.messages_received += other.messages_received;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.interrupted |= other.interrupted;
        self.duration_secs = self.duration_secs.max(other.duration_secs);
        for (mine, theirs) in [
            (&mut self.handshake, &other.handshake),
            (&mut self.rtt, &other.rtt),
            (&mut self.rtt_at_peak, &other.rtt_at_peak),
        ] {
            if let Some(theirs) = theirs {
                let mut h = mine.as_ref().map_or_else(new_histogram, Latency::to_hist);
                let _ = h.add(theirs.to_hist());
                *mine = Some(Latency::from_hist(&h));
            }
        }
    }

    /// The sample where the client held the most connections.
    fn client_peak(&self) -> Option<&Sample> {
        self.timeline.iter().filter(|x| x.open > 0).max_by_key(|x| x.open)
    }

    /// Kernel and load-generator memory: before, at the client's peak and
    /// at the end, per connection and per socket.
    fn kernel_lines(&self, s: &mut String) {
        let Some(peak) = self.client_peak() else { return };
        let conns = peak.open as f64;
        if let (Some(base), Some(at), Some(end)) =
            (self.host_baseline, peak.host, self.timeline.iter().rev().find_map(|x| x.host))
        {
            let sockets = (at.tcp_sockets - base.tcp_sockets).max(1.0);
            let per = |b: f64, a: f64| (a - b) / conns;
            let _ = writeln!(
                s,
                "  {:<28} {:.2} / {:.2} / {:.2} GB before / at peak / after: {:.0} bytes per connection, {:.0} per TCP socket ({:.0} sockets)",
                "kernel slab (this host)",
                base.slab / 1e9,
                at.slab / 1e9,
                end.slab / 1e9,
                per(base.slab, at.slab),
                (at.slab - base.slab) / sockets,
                sockets
            );
            let _ = writeln!(
                s,
                "  {:<28} {:.2} / {:.2} / {:.2} GB: {:.0} bytes per connection; TCP buffers {:.1} MB at peak",
                "  of which unreclaimable",
                base.slab_unreclaimable / 1e9,
                at.slab_unreclaimable / 1e9,
                end.slab_unreclaimable / 1e9,
                per(base.slab_unreclaimable, at.slab_unreclaimable),
                at.tcp_buffers / 1e6
            );
        }
        if let Some(load) = peak.load_anon.filter(|_| conns > 0.0) {
            let _ = writeln!(
                s,
                "  {:<28} {:.1} MB at peak: {:.0} bytes per connection",
                "load generator memory",
                load / 1e6,
                load / conns
            );
        }
    }

    /// The end-of-run summary table.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let secs = self.duration_secs.max(1e-9);
        let _ = writeln!(s, "\nwsloop load: {} scenario, {:.1} s, {} process(es)", self.scenario, secs, self.processes);
        self.connection_lines(&mut s, secs);
        self.traffic_lines(&mut s, secs);
        self.latency_lines(&mut s);
        self.server_lines(&mut s);
        self.kernel_lines(&mut s);
        if let Some(l) = &self.leak_check {
            let _ = writeln!(s, "  {:<28} {} ({})", "leak check", if l.clean { "clean" } else { "LEAK" }, l.detail);
        }
        if self.interrupted {
            let _ = writeln!(s, "  (interrupted: partial results)");
        }
        s
    }

    /// Connections: the peak, handshakes and their rate over `secs`, and
    /// those that failed or that the server closed, by reason.
    fn connection_lines(&self, s: &mut String, secs: f64) {
        let _ = writeln!(s, "  {:<28} {}", "peak open connections", self.peak_open);
        let _ = writeln!(
            s,
            "  {:<28} {} ({:.0}/s)",
            "handshakes completed",
            self.established,
            self.established as f64 / secs
        );
        let _ = writeln!(s, "  {:<28} {}", "connections failed", self.failures());
        for (reason, n) in &self.failed {
            let _ = writeln!(s, "    {reason:<26} {n}");
        }
        if !self.server_closed.is_empty() {
            let _ = writeln!(s, "  {:<28} {}", "closed by the server", self.server_closed.values().sum::<u64>());
            for (reason, n) in &self.server_closed {
                let _ = writeln!(s, "    {reason:<26} {n}");
            }
        }
        if !self.disconnects.is_empty() {
            let codes: Vec<String> = self.disconnects.iter().map(|(code, n)| format!("{code}: {n}")).collect();
            let total = self.disconnects.values().sum::<u64>();
            let _ = writeln!(s, "  {:<28} {total} (by close code {})", "disconnects", codes.join(", "));
        }
        if let Some(r) = &self.reconnect {
            r.lines(s);
        }
    }

    /// Messages and payload bytes, with their rates over `secs`, and the
    /// replies that went wrong.
    fn traffic_lines(&self, s: &mut String, secs: f64) {
        let _ = writeln!(
            s,
            "  {:<28} {} sent, {} received ({:.0}/s received)",
            "messages",
            self.messages_sent,
            self.messages_received,
            self.messages_received as f64 / secs
        );
        let _ = writeln!(
            s,
            "  {:<28} {:.1} MB/s sent, {:.1} MB/s received",
            "payload throughput",
            self.bytes_sent as f64 / secs / 1e6,
            self.bytes_received as f64 / secs / 1e6
        );
        if self.mismatches + self.pong_timeouts > 0 {
            let _ = writeln!(
                s,
                "  {:<28} {} wrong payloads, {} pong timeouts",
                "reply errors", self.mismatches, self.pong_timeouts
            );
        }
    }

    /// The latency table: a row of percentiles for each histogram that
    /// recorded anything.
    fn latency_lines(&self, s: &mut String) {
        let _ =
            writeln!(s, "  {:<28} {:>9} {:>9} {:>9} {:>9} {:>9}", "latency (ms)", "p50", "p90", "p99", "p99.9", "max");
        for (name, h) in
            [("handshake", &self.handshake), ("round trip", &self.rtt), ("  holding the peak", &self.rtt_at_peak)]
        {
            if let Some(h) = h.as_ref().filter(|h| !h.counts.is_empty()) {
                let p = Percentiles::of(&h.to_hist());
                let _ = writeln!(
                    s,
                    "  {:<28} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                    format!("{name} (n={})", p.count),
                    p.p50_ms,
                    p.p90_ms,
                    p.p99_ms,
                    p.p999_ms,
                    p.max_ms
                );
            }
        }
    }

    /// The server at its most connections, if it was scraped: descriptors
    /// and memory, per connection against the baseline where there is one.
    fn server_lines(&self, s: &mut String) {
        let server: Vec<&Sample> = self.timeline.iter().filter(|x| x.server_connections.is_some()).collect();
        let Some(peak) = server
            .iter()
            .max_by(|a, b| a.server_connections.unwrap_or(0.0).total_cmp(&b.server_connections.unwrap_or(0.0)))
        else {
            return;
        };
        let conns = peak.server_connections.unwrap_or(0.0);
        let rss = peak.server_rss.unwrap_or(0.0);
        let _ = writeln!(
            s,
            "  {:<28} {:.0} connections, RSS {:.1} MB, {:.0} FDs",
            "server at peak",
            conns,
            rss / 1e6,
            peak.server_fds.unwrap_or(0.0)
        );
        if let Some(base) = self.server_baseline.as_ref().and_then(|b| b.server_rss) {
            if conns > 0.0 {
                let _ = writeln!(
                    s,
                    "  {:<28} {:.0} bytes (RSS {:.1} MB before the run)",
                    "server RSS per connection",
                    (rss - base) / conns,
                    base / 1e6
                );
            }
        }
        let anon_base = self.server_baseline.as_ref().and_then(|b| b.server_anon).filter(|a| *a > 0.0);
        if let (Some(base), Some(anon)) = (anon_base, peak.server_anon) {
            if conns > 0.0 {
                let _ = writeln!(
                    s,
                    "  {:<28} {:.1} MB at peak: {:.0} bytes per connection ({:.1} MB before the run)",
                    "server anonymous memory",
                    anon / 1e6,
                    (anon - base) / conns,
                    base / 1e6
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_and_own_memory_are_divided_by_the_peak() {
        let host = |slab, slab_unreclaimable, tcp_sockets| {
            Some(HostView { slab, slab_unreclaimable, tcp_sockets, tcp_buffers: 4096.0 })
        };
        let report = Report {
            host_baseline: host(1e9, 1e8, 10.0),
            timeline: vec![
                Sample {
                    t: 1.0,
                    open: 1000,
                    load_anon: Some(2e6),
                    host: host(1.009e9, 1.07e8, 2010.0),
                    ..Default::default()
                },
                Sample { t: 2.0, open: 0, host: host(1.1e9, 1.2e8, 10.0), ..Default::default() },
            ],
            ..Default::default()
        };
        let s = report.summary();
        assert!(s.contains("1.00 / 1.01 / 1.10 GB before / at peak / after"), "{s}");
        assert!(s.contains("9000 bytes per connection, 4500 per TCP socket (2000 sockets)"), "{s}");
        assert!(s.contains("7000 bytes per connection"), "{s}");
        assert!(s.contains("2.0 MB at peak: 2000 bytes per connection"), "{s}");
    }

    #[test]
    fn reconnects_merge_and_show_their_gap_and_codes() {
        let part = |gap_us: u64, never_back: u64| {
            let mut h = new_histogram();
            h.record(gap_us).unwrap();
            let mut r = Reconnects { reconnects: 1, never_back, unwanted: 1, ..Default::default() };
            r.set_gap(&h);
            r.retries_failed.insert("refused".into(), 2);
            let mut report = Report { reconnect: Some(r), ..Default::default() };
            report.disconnects.insert("1012".into(), 1 + never_back);
            report
        };
        let mut a = part(100_000, 0);
        assert!(a.is_clean_run(), "every lost connection came back, or the plan let it go");
        a.merge(&part(900_000, 1));
        let r = a.reconnect.as_ref().unwrap();
        assert_eq!((r.reconnects, r.never_back, r.unwanted, r.retries_failed["refused"]), (2, 1, 2, 4));
        let p = r.gap_ms.unwrap();
        assert_eq!(p.count, 2);
        assert!((p.max_ms - 900.0).abs() < 1.0 && (p.p50_ms - 100.0).abs() < 0.2, "{p:?}");
        assert_eq!(a.disconnects["1012"], 3);
        assert!(!a.is_clean_run(), "a connection never came back");
        let s = a.summary();
        assert!(s.contains("3 (by close code 1012: 3)"), "{s}");
        assert!(s.contains("reconnects                   2 (1 never back)"), "{s}");
        assert!(s.contains("max 900"), "{s}");
        assert!(s.contains("retry failed: refused"), "{s}");
        assert!(s.contains(&format!("{:<26} 2", "no longer wanted")), "{s}");
    }

    #[test]
    fn merge_adds_counts_and_histograms() {
        let mut h = new_histogram();
        h.record(1000).unwrap();
        let mut a = Report { established: 2, handshake: Some(Latency::from_hist(&h)), ..Default::default() };
        a.failed.insert("refused".into(), 1);
        let mut h2 = new_histogram();
        h2.record(3000).unwrap();
        let mut b = Report { established: 3, handshake: Some(Latency::from_hist(&h2)), ..Default::default() };
        b.failed.insert("refused".into(), 2);
        a.merge(&b);
        assert_eq!(a.established, 5);
        assert_eq!(a.failed["refused"], 3);
        let merged = a.handshake.unwrap().to_hist();
        assert_eq!(merged.len(), 2);
        assert!(merged.max() >= 2990);
        let json = serde_json::to_string(&b).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.established, 3);
    }
}
