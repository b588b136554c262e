//! What each connection does once open, one scenario to a file, each a
//! type behind the fleet's [`Script`](super::fleet::Script) trait. The fleet knows
//! no scenario; [`run`] is the one place a scenario's name becomes its
//! type.

mod churn;
mod echo;
mod fanout;
mod idle;
mod ping;
mod steps;

use std::io;
use std::sync::atomic::AtomicBool;

use super::config::{FleetConfig, Scenario};
use super::process;
use super::progress::Progress;
use super::report::Report;

/// Runs one load process to the end of its plan (or until `stop`),
/// calling `on_second` once a second, with `cfg.scenario`'s script. The
/// process loop is generic over the script, so it is compiled once per
/// scenario and no call into a script (one per message) is virtual.
pub(crate) fn run(cfg: &FleetConfig, stop: &AtomicBool, on_second: impl FnMut(&Progress)) -> io::Result<Report> {
    match cfg.scenario {
        Scenario::Idle => process::run(cfg, idle::Idle, stop, on_second),
        Scenario::Ping => process::run(cfg, ping::Ping::new(cfg), stop, on_second),
        Scenario::Echo => process::run(cfg, echo::Echo::new(cfg), stop, on_second),
        Scenario::Churn => process::run(cfg, churn::Churn, stop, on_second),
        Scenario::Fanout => process::run(cfg, fanout::Fanout::new(cfg), stop, on_second),
    }
}
