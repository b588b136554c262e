//! One load process's loop: the fleet's I/O, then a turn along the plan.
//! Connections are opened toward the plan's target at `--rate` at most (a
//! token bucket) and closed when the target falls; when the plan ends (or
//! the run is stopped) and the script has settled, every connection is
//! told to close, and the loop waits for them a while at most.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::Events;

use super::config::FleetConfig;
use super::fleet::Fleet;
use super::fleet::Script;
use super::progress::Progress;
use super::report::Report;

/// How long connections may take to close once told to, all together.
const WIND_DOWN: Duration = Duration::from_secs(10);

/// Runs the fleet with `script` to the end of the plan (or until `stop`),
/// calling `on_second` once a second.
pub(crate) fn run<S: Script>(
    cfg: &FleetConfig,
    script: S,
    stop: &AtomicBool,
    mut on_second: impl FnMut(&Progress),
) -> io::Result<Report> {
    let mut process = Process { cfg, fleet: Fleet::new(cfg)?, script, pace: Pace::new(cfg, Instant::now()) };
    let mut events = Events::with_capacity(1024);
    loop {
        process.fleet.wait(&mut events)?;
        process.fleet.handle(&events, &mut process.script);
        let now = Instant::now();
        if !process.turn(now, stop.load(Ordering::Relaxed)) {
            break;
        }
        if let Some(progress) = process.second(now) {
            on_second(&progress);
        }
    }
    Ok(process.finish())
}

/// A load process: its connections, their scenario, and its clock.
struct Process<'a, S> {
    cfg: &'a FleetConfig,
    fleet: Fleet<'a>,
    script: S,
    pace: Pace,
}

/// Where the run stands on its plan's clock.
struct Pace {
    start: Instant,
    plan_end: Duration,
    peak: usize,
    /// Connects allowed now: a bucket filled at `--rate`, holding a tenth
    /// of a second's.
    tokens: f64,
    last_turn: Instant,
    next_second: Instant,
    /// Set once every connection was told to close: the most to wait.
    wind_down: Option<Instant>,
}

impl Pace {
    /// The plan's clock, started at `start`, with no connects allowed yet.
    fn new(cfg: &FleetConfig, start: Instant) -> Pace {
        Pace {
            start,
            plan_end: cfg.plan.duration(),
            peak: cfg.plan.peak(),
            tokens: 0.0,
            last_turn: start,
            next_second: start + Duration::from_secs(1),
            wind_down: None,
        }
    }
}

impl<S: Script> Process<'_, S> {
    /// A turn after the I/O: timers, the plan's end, the plan's target.
    /// False once the run is over.
    fn turn(&mut self, now: Instant, stopped: bool) -> bool {
        let elapsed = now - self.pace.start;
        let peak = self.pace.peak;
        self.fleet.tally().at_peak =
            self.pace.wind_down.is_none() && self.cfg.plan.target_at(elapsed) == peak && peak > 0;
        self.fleet.fire_timers(now, &mut self.script);
        if self.pace.wind_down.is_none() {
            self.fleet.reconnect_due(now);
        }
        let ended = elapsed >= self.pace.plan_end || stopped;
        if self.pace.wind_down.is_none() && ended {
            self.end(now, elapsed, stopped);
        }
        match self.pace.wind_down {
            Some(deadline) => {
                if self.fleet.is_empty() || now >= deadline {
                    return false;
                }
            }
            // Settling: nothing opens, closes or publishes.
            None if ended => {}
            None => self.follow_plan(now, elapsed),
        }
        self.pace.last_turn = now;
        true
    }

    /// The plan has ended (or the run was stopped): once the script has
    /// settled, every connection is told to close.
    fn end(&mut self, now: Instant, elapsed: Duration, stopped: bool) {
        let received = self.fleet.tally().report().messages_received;
        if stopped || self.script.settled(now, received) {
            if stopped && elapsed < self.pace.plan_end {
                self.fleet.tally().interrupted();
            }
            self.pace.wind_down = Some(now + WIND_DOWN);
            self.fleet.close_clients(usize::MAX);
        }
    }

    /// Opens (as the rate allows) or closes connections toward the plan's
    /// target at `elapsed`; then the script's turn.
    fn follow_plan(&mut self, now: Instant, elapsed: Duration) {
        let dt = (now - self.pace.last_turn).as_secs_f64();
        let rate = f64::from(self.cfg.rate);
        self.pace.tokens = (self.pace.tokens + dt * rate).min(rate / 10.0 + 1.0);
        let target = self.cfg.plan.target_at(elapsed) as u64;
        // Connections waiting for a retry are still the plan's.
        let live = self.fleet.tally().live + self.fleet.tally().waiting;
        if live < target {
            let n = ((target - live) as f64).min(self.pace.tokens.floor()) as u64;
            self.pace.tokens -= n as f64;
            for _ in 0..n {
                self.fleet.open_one();
            }
        } else if live > target {
            self.fleet.close_clients((live - target) as usize);
        }
        self.script.on_turn(&mut self.fleet, dt);
    }

    /// This second's progress, once a second.
    fn second(&mut self, now: Instant) -> Option<Progress> {
        if now < self.pace.next_second {
            return None;
        }
        self.pace.next_second += Duration::from_secs(1);
        let elapsed = now - self.pace.start;
        Some(self.fleet.tally().progress(elapsed.as_secs_f64(), self.cfg.plan.target_at(elapsed) as u64))
    }

    /// Drops whatever is left after the wind-down and makes the report.
    fn finish(self) -> Report {
        let Process { mut fleet, pace, .. } = self;
        fleet.drop_all();
        fleet.into_tally().finish(pace.start.elapsed())
    }
}
