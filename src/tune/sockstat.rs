//! The kernel's TCP memory, from /proc/net/sockstat: socket buffers live
//! in the kernel, so RSS never shows them, yet with 100,000 connections
//! they are most of the memory a WebSocket server costs its host.

use std::path::Path;

/// Bytes of memory the kernel's TCP stack holds (the `mem` field of the
/// `TCP:` line, in pages), or `None` if the file is missing or unreadable.
pub fn tcp_memory_bytes(proc_root: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(proc_root.join("net/sockstat")).ok()?;
    let pages = parse_tcp_mem_pages(&text)?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(4096) as u64)
}

/// The `mem` value of the `TCP:` line.
pub fn parse_tcp_mem_pages(sockstat: &str) -> Option<u64> {
    tcp_field(sockstat, "mem")
}

/// A value of the `TCP:` line by name: `inuse` (sockets in any state but
/// TIME_WAIT), `orphan`, `tw`, `alloc`, `mem` (pages).
pub fn tcp_field(sockstat: &str, name: &str) -> Option<u64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut fields = line.split_whitespace().skip(1);
    while let (Some(key), Some(value)) = (fields.next(), fields.next()) {
        if key == name {
            return value.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_tcp_line() {
        let text = "sockets: used 290\nTCP: inuse 5 orphan 0 tw 2 alloc 9 mem 37\nUDP: inuse 1 mem 2\n";
        assert_eq!(parse_tcp_mem_pages(text), Some(37));
        assert_eq!(parse_tcp_mem_pages("UDP: inuse 1 mem 2\n"), None);
        assert_eq!(parse_tcp_mem_pages("TCP: inuse 5 mem x\n"), None);
        assert_eq!(tcp_field(text, "inuse"), Some(5));
        assert_eq!(tcp_field(text, "tw"), Some(2));
    }

    #[test]
    fn reads_the_live_file() {
        assert!(tcp_memory_bytes(Path::new("/proc")).is_some());
        assert_eq!(tcp_memory_bytes(Path::new("/nonexistent")), None);
    }
}
