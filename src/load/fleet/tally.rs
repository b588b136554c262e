//! What one load process counts and measures: the report it fills, the
//! histograms behind its latencies, and how many connections are live
//! (counted toward the plan: connecting, handshaking or open) and open.
//! The fleet keeps `live` and `open` right as connections change state;
//! everything else is counted where it happens.

use std::time::Duration;

use hdrhistogram::Histogram;

use super::super::progress::{own_anon_bytes, Progress};
use super::super::report::{new_histogram, Latency, Reconnects, Report};

/// The counters and histograms of one load process.
pub(crate) struct Tally {
    pub(super) report: Report,
    handshake: Histogram<u64>,
    rtt: Histogram<u64>,
    /// Round trips since the last progress snapshot (per-second p99).
    rtt_window: Histogram<u64>,
    /// Round trips while the plan holds its peak (`at_peak`).
    rtt_at_peak: Histogram<u64>,
    /// The plan's target is its peak now (a hold, not a ramp).
    pub(crate) at_peak: bool,
    /// Connections counted toward the plan's target.
    pub(crate) live: u64,
    /// Connections past their handshake and not closing.
    pub(crate) open: u64,
    /// `--reconnect`: connections lost and waiting for their retry (they
    /// count toward the plan's target, beside `live`).
    pub(crate) waiting: u64,
    /// `--reconnect`: from losing a connection to its 101 again.
    gap: Histogram<u64>,
}

impl Tally {
    /// Nothing counted yet, for a run of `scenario` (that reconnects if
    /// `reconnect`).
    pub(super) fn new(scenario: &str, reconnect: bool) -> Tally {
        Tally {
            report: Report {
                scenario: scenario.into(),
                processes: 1,
                reconnect: reconnect.then(Reconnects::default),
                ..Report::default()
            },
            handshake: new_histogram(),
            rtt: new_histogram(),
            rtt_window: new_histogram(),
            rtt_at_peak: new_histogram(),
            at_peak: false,
            live: 0,
            open: 0,
            waiting: 0,
            gap: new_histogram(),
        }
    }

    /// The report as counted so far.
    pub(crate) fn report(&self) -> &Report {
        &self.report
    }

    /// The run was stopped before its plan's end.
    pub(crate) fn interrupted(&mut self) {
        self.report.interrupted = true;
    }

    /// A connection failed before its 101, for `reason`.
    pub(super) fn count_failure(&mut self, reason: &str) {
        *self.report.failed.entry(reason.to_string()).or_default() += 1;
    }

    /// The server closed (or broke) an open connection, for `reason`.
    pub(super) fn count_server_close(&mut self, reason: String) {
        *self.report.server_closed.entry(reason).or_default() += 1;
    }

    /// The server ended an open connection: `code` is its close code (see
    /// `Report::disconnects`).
    pub(super) fn count_disconnect(&mut self, code: u16) {
        *self.report.disconnects.entry(code.to_string()).or_default() += 1;
    }

    /// A lost connection is open again, `gap` after it was lost.
    pub(super) fn reconnected(&mut self, gap: Duration) {
        let _ = self.gap.record(gap.as_micros().max(1) as u64);
        if let Some(r) = &mut self.report.reconnect {
            r.reconnects += 1;
        }
    }

    /// `n` lost connections will not be open again.
    pub(super) fn never_back(&mut self, n: u64) {
        if let Some(r) = &mut self.report.reconnect {
            r.never_back += n;
        }
    }

    /// `n` lost connections will not be open again: the plan's target
    /// fell while they waited.
    pub(super) fn unwanted(&mut self, n: u64) {
        if let Some(r) = &mut self.report.reconnect {
            r.unwanted += n;
        }
    }

    /// A retry failed before its 101, for `reason` (it will be retried).
    pub(super) fn retry_failed(&mut self, reason: &str) {
        if let Some(r) = &mut self.report.reconnect {
            *r.retries_failed.entry(reason.to_string()).or_default() += 1;
        }
    }

    /// A handshake completed, `took` after the connect began.
    pub(super) fn established(&mut self, took: Duration) {
        let _ = self.handshake.record(took.as_micros().max(1) as u64);
        self.report.established += 1;
    }

    /// A message of `len` bytes (before compression) was sent.
    pub(crate) fn sent(&mut self, len: usize) {
        self.report.messages_sent += 1;
        self.report.bytes_sent += len as u64;
    }

    /// A message of `len` bytes (after inflation) was received.
    pub(super) fn received(&mut self, len: usize) {
        self.report.messages_received += 1;
        self.report.bytes_received += len as u64;
    }

    /// A message was not the answer expected.
    pub(crate) fn mismatch(&mut self) {
        self.report.mismatches += 1;
    }

    /// `n` pings went unanswered for an interval.
    pub(crate) fn pong_timeouts(&mut self, n: u64) {
        self.report.pong_timeouts += n;
    }

    /// One round trip, in µs: into the run's histogram and this second's.
    pub(crate) fn record_rtt(&mut self, micros: u64) {
        let _ = self.rtt.record(micros);
        let _ = self.rtt_window.record(micros);
        if self.at_peak {
            let _ = self.rtt_at_peak.record(micros);
        }
    }

    /// This second's snapshot, `t` seconds in with the plan at `target`;
    /// starts the next second's round trips afresh.
    pub(crate) fn progress(&mut self, t: f64, target: u64) -> Progress {
        let p = Progress {
            t,
            open: self.open,
            target,
            established: self.report.established,
            failed: self.report.failures(),
            received: self.report.messages_received,
            rss_anon: own_anon_bytes(),
            rtt_window: (!self.rtt_window.is_empty()).then(|| Latency::from_hist(&self.rtt_window)),
            disconnects: self.report.disconnects.values().sum(),
            reconnects: self.report.reconnect.as_ref().map_or(0, |r| r.reconnects),
            waiting: self.waiting,
        };
        self.rtt_window.reset();
        self.report.peak_open = self.report.peak_open.max(self.open);
        p
    }

    /// The report of a run that lasted `duration`.
    pub(crate) fn finish(mut self, duration: Duration) -> Report {
        self.report.duration_secs = duration.as_secs_f64();
        self.report.handshake = Some(Latency::from_hist(&self.handshake));
        self.report.rtt = Some(Latency::from_hist(&self.rtt));
        self.report.rtt_at_peak = (!self.rtt_at_peak.is_empty()).then(|| Latency::from_hist(&self.rtt_at_peak));
        if let Some(r) = &mut self.report.reconnect {
            r.set_gap(&self.gap);
        }
        self.report
    }
}
