//! RLIMIT_NOFILE: every connection is a file descriptor, so the soft limit
//! is the first ceiling a busy server meets.

use std::io;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors a process keeps free beyond its connections: listeners,
/// epoll and waker fds, the metrics thread, logs, and one to accept-and-
/// refuse with. The server's default `--max-conns`, the load generator's
/// split into processes and `wsloop doctor`'s file limit all leave this.
pub const FD_RESERVE: usize = 64;

/// The (soft, hard) open-file limits of this process.
pub fn nofile() -> io::Result<(u64, u64)> {
    getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)
}

/// Raises the soft open-file limit to the hard limit; returns the new
/// (soft, hard) pair.
pub fn raise_nofile() -> io::Result<(u64, u64)> {
    let (soft, hard) = nofile()?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    nofile()
}

/// Sets the soft open-file limit (tests use it to provoke EMFILE).
pub fn set_soft_nofile(soft: u64) -> io::Result<()> {
    let (_, hard) = nofile()?;
    setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_reaches_the_hard_limit() {
        let (soft, hard) = raise_nofile().unwrap();
        assert_eq!(soft, hard);
    }
}
