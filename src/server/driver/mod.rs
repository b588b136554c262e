//! The I/O drivers, one per I/O model, each a type of its own that owns an
//! engine (`epoll`: readiness through mio; `uring`: completions on an
//! io_uring ring), and which one the loops run: what the user asked for
//! (`--io auto|epoll|uring`) and what this host allows, decided once at
//! start with the reason in one line (logged, shown by `wsloop doctor`,
//! and exported as `wsloop_io_driver`).

pub(crate) mod epoll;
pub(crate) mod uring;

pub use uring::ring::{probe, Unavailable, FIRST_BUFFERS};

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

/// The I/O model a server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoModel {
    /// See [`IoChoice::Epoll`].
    Epoll,
    /// See [`IoChoice::Uring`].
    Uring,
}

impl IoModel {
    /// The name used by `--io`, the log and the metric label.
    pub fn label(self) -> &'static str {
        match self {
            IoModel::Epoll => "epoll",
            IoModel::Uring => "uring",
        }
    }
}

/// Decides the driver for `choice`: the driver and why, or (for a forced
/// `uring` the kernel cannot run) the one-line reason it cannot.
pub fn resolve(choice: IoChoice) -> Result<(IoModel, String), Unavailable> {
    match choice {
        IoChoice::Epoll => Ok((IoModel::Epoll, "asked for (--io epoll)".into())),
        IoChoice::Uring => probe()
            .map(|()| (IoModel::Uring, "asked for (--io uring)".into()))
            .map_err(|e| Unavailable(format!("--io uring: io_uring is unavailable: {e}"))),
        IoChoice::Auto => Ok(match probe() {
            Ok(()) => (IoModel::Uring, "the kernel offers every io_uring operation the driver needs".into()),
            Err(e) => (IoModel::Epoll, format!("io_uring is unavailable: {e}")),
        }),
    }
}
