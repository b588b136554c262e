//! A run split over child processes (when one process's file limit is
//! below the plan's peak): each child is this binary run again with
//! `--child-index I --child-count N`, runs its share of the plan, and
//! writes its progress each second and its report at the end as JSON
//! lines on stdout; the parent adds them up.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use hdrhistogram::Histogram;

use super::config::FleetConfig;
use super::progress::{own_anon_bytes, Progress};
use super::report::{self, Latency, Report};
use super::scenario;

/// A child: run its share, report progress and the result as JSON lines.
pub(super) fn run_child(
    cfg: &mut FleetConfig,
    index: usize,
    count: usize,
    stop: &AtomicBool,
) -> Result<Report, String> {
    cfg.plan = cfg.plan.share(index, count);
    cfg.rate = (cfg.rate / count as u32).max(1);
    if !cfg.source_ips.is_empty() && cfg.source_ips.len() >= count {
        cfg.source_ips = cfg.source_ips.iter().skip(index).step_by(count).copied().collect();
    }
    let report = scenario::run(cfg, stop, |p| {
        println!("{}", serde_json::json!({ "progress": p }));
    })
    .map_err(|e| e.to_string())?;
    println!("{}", serde_json::json!({ "report": report }));
    Ok(report)
}

/// The parent: start `n` children of this binary, merge their progress
/// each second and their reports at the end.
pub(super) fn run_children(n: usize, record: &mut impl FnMut(&Progress)) -> Result<Report, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let (tx, rx) = crossbeam_channel::unbounded::<Line>();
    let mut children = (0..n).map(|i| spawn(&exe, i, n, tx.clone())).collect::<Result<Vec<_>, _>>()?;
    drop(tx);
    let mut merge = Merge::new(n);
    follow(&rx, &mut merge, record);
    merge.reports(&mut children)
}

/// A JSON line from child I.
type Line = (usize, serde_json::Value);

/// Starts `exe` as child `i` of `n` with this process's flags; a thread passes its
/// JSON lines on to `tx`.
fn spawn(exe: &Path, i: usize, n: usize, tx: Sender<Line>) -> Result<Child, String> {
    let mut child = std::process::Command::new(exe)
        .args(std::env::args().skip(1))
        .args(["--child-index", &i.to_string(), "--child-count", &n.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start load process {i}: {e}"))?;
    let out = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send((i, v));
            }
        }
    });
    Ok(child)
}

/// Takes the children's lines until every child has closed its stdout,
/// calling `record` with their sum once a second.
fn follow(rx: &Receiver<Line>, merge: &mut Merge, record: &mut impl FnMut(&Progress)) {
    let mut last_print = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok((i, v)) => merge.take(i, &v),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            record(&merge.second());
        }
    }
}

/// What the children have said so far.
struct Merge {
    /// Each child's latest progress.
    latest: Vec<Progress>,
    /// The children's round trips since the last second.
    window: Histogram<u64>,
    /// Each child's report, once it has sent it.
    reports: Vec<Option<Report>>,
}

impl Merge {
    /// Nothing heard yet from `n` children.
    fn new(n: usize) -> Merge {
        Merge { latest: vec![Progress::default(); n], window: report::new_histogram(), reports: vec![None; n] }
    }

    /// A line from child `i`: its progress or its report (anything else,
    /// or what does not parse, is ignored).
    fn take(&mut self, i: usize, v: &serde_json::Value) {
        if let Some(p) = v.get("progress") {
            if let Ok(p) = serde_json::from_value::<Progress>(p.clone()) {
                if let Some(w) = &p.rtt_window {
                    let _ = self.window.add(w.to_hist());
                }
                self.latest[i] = p;
            }
        } else if let Some(r) = v.get("report") {
            self.reports[i] = serde_json::from_value(r.clone()).ok();
        }
    }

    /// The children's progress added up, with this process's memory; the
    /// next second's round trips start afresh.
    fn second(&mut self) -> Progress {
        let mut sum = Progress::sum(&self.latest);
        sum.rss_anon += own_anon_bytes();
        sum.rtt_window = (!self.window.is_empty()).then(|| Latency::from_hist(&self.window));
        self.window.reset();
        sum
    }

    /// Waits for every child and merges their reports; an error if one
    /// ended without a report.
    fn reports(&self, children: &mut [Child]) -> Result<Report, String> {
        let mut merged = Report::default();
        for (i, child) in children.iter_mut().enumerate() {
            let status = child.wait().map_err(|e| e.to_string())?;
            let Some(r) = &self.reports[i] else {
                return Err(format!("load process {i} ended ({status}) without a report"));
            };
            if merged.scenario.is_empty() {
                merged.scenario = r.scenario.clone();
            }
            merged.peak_open += r.peak_open;
            merged.merge(r);
        }
        Ok(merged)
    }
}
