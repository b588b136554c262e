//! Which I/O driver the loops run: what the user asked for (`--io
//! auto|epoll|uring`) and what this host allows, decided once at start
//! with the reason in one line (logged, shown by `wsloop doctor`, and
//! exported as `wsloop_io_driver`).

use super::uring::{probe, Unavailable};

/// The driver asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum IoChoice {
    /// io_uring where the kernel runs it (probed), else epoll.
    #[default]
    Auto,
    /// Readiness: edge-triggered epoll through mio.
    Epoll,
    /// Completions: io_uring with multishot receive into a provided-buffer
    /// ring; an error at start where the kernel cannot run it.
    Uring,
}

/// The driver a server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// See [`IoChoice::Epoll`].
    Epoll,
    /// See [`IoChoice::Uring`].
    Uring,
}

impl Driver {
    /// The name used by `--io`, the log and the metric label.
    pub fn label(self) -> &'static str {
        match self {
            Driver::Epoll => "epoll",
            Driver::Uring => "uring",
        }
    }
}

/// Decides the driver for `choice`: the driver and why, or (for a forced
/// `uring` the kernel cannot run) the one-line reason it cannot.
pub fn resolve(choice: IoChoice) -> Result<(Driver, String), Unavailable> {
    match choice {
        IoChoice::Epoll => Ok((Driver::Epoll, "asked for (--io epoll)".into())),
        IoChoice::Uring => probe()
            .map(|()| (Driver::Uring, "asked for (--io uring)".into()))
            .map_err(|e| Unavailable(format!("--io uring: io_uring is unavailable: {e}"))),
        IoChoice::Auto => Ok(match probe() {
            Ok(()) => (Driver::Uring, "the kernel offers every io_uring operation the driver needs".into()),
            Err(e) => (Driver::Epoll, format!("io_uring is unavailable: {e}")),
        }),
    }
}
