//! Memory figures the kernel keeps that RSS mixes up or never shows.
//!
//! RSS counts the binary's file pages in every process that maps them, so
//! fifty server processes on one port each report the same ~5 MB of text:
//! what connections cost a process is its *anonymous* resident memory
//! (heap, stacks, buffers; `RssAnon` in /proc/PID/status). A connection's
//! largest cost is not in user space at all but in the kernel's slab (the
//! socket, its file, its epoll entry: `Slab`/`SUnreclaim` in /proc/meminfo).

use std::path::Path;

/// A `Name:   value kB` field of /proc/meminfo or /proc/PID/status, in bytes.
pub fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split(':').next() == Some(name))?;
    let value = line.split(':').nth(1)?.split_whitespace().next()?;
    value.parse::<u64>().ok().map(|kib| kib * 1024)
}

/// The anonymous resident memory of the process whose status file is
/// `status` (`/proc/self/status`, `/proc/1234/status`), in bytes.
pub fn resident_anon_bytes(status: &Path) -> Option<u64> {
    kib_field(&std::fs::read_to_string(status).ok()?, "RssAnon")
}

/// The host's kernel slab, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slab {
    /// All slab caches (`Slab`), reclaimable or not.
    pub total: u64,
    /// The part the kernel cannot reclaim under pressure (`SUnreclaim`):
    /// sockets, epoll entries.
    pub unreclaimable: u64,
}

/// Reads the slab figures from `proc_root/meminfo`.
pub fn slab(proc_root: &Path) -> Option<Slab> {
    let text = std::fs::read_to_string(proc_root.join("meminfo")).ok()?;
    Some(Slab { total: kib_field(&text, "Slab")?, unreclaimable: kib_field(&text, "SUnreclaim")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields() {
        let meminfo = "MemTotal:       24684160 kB\nSlab:             539220 kB\nSReclaimable:     479680 kB\nSUnreclaim:        59540 kB\n";
        assert_eq!(kib_field(meminfo, "Slab"), Some(539_220 * 1024));
        assert_eq!(kib_field(meminfo, "SUnreclaim"), Some(59_540 * 1024));
        // A name is matched whole, not as a prefix.
        assert_eq!(kib_field(meminfo, "Mem"), None);
        assert_eq!(kib_field("RssAnon:\t     612 kB\n", "RssAnon"), Some(612 * 1024));
        assert_eq!(kib_field("RssAnon: lots\n", "RssAnon"), None);
    }

    #[test]
    fn reads_the_live_files() {
        assert!(resident_anon_bytes(Path::new("/proc/self/status")).is_some_and(|b| b > 0));
        assert!(slab(Path::new("/proc")).is_some_and(|s| s.total >= s.unreclaimable));
        assert_eq!(slab(Path::new("/nonexistent")), None);
    }
}
