//! How much memory this process may use: the cgroup's limit where one is
//! set (a container, a systemd unit with `MemoryMax=`), else the host's
//! RAM. The server's default `--memory-limit` is derived from it.

use std::path::Path;

use super::procfs::kib_field;

/// Where the memory figure came from, for the start-up line and `doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemorySource {
    /// The memory limit of this process's cgroup (v2 `memory.max`, or
    /// v1 `memory.limit_in_bytes`).
    Cgroup,
    /// `MemTotal` of /proc/meminfo.
    Host,
}

impl MemorySource {
    /// A word for logs.
    pub fn label(self) -> &'static str {
        match self {
            MemorySource::Cgroup => "cgroup memory limit",
            MemorySource::Host => "host MemTotal",
        }
    }
}

/// The two figures the memory available to a process is read from, as a
/// host whose files live under a root shows them (`/` for this one; a
/// fake tree for `doctor`'s tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryFigures {
    /// The host's `MemTotal` in bytes, if /proc/meminfo could be read.
    pub host: Option<u64>,
    /// The `memory.max` of this process's cgroup (v2) in bytes; `None`
    /// where it is "max" (unlimited) or cannot be read.
    pub cgroup: Option<u64>,
}

impl MemoryFigures {
    /// Reads both figures from under `root` (`proc/meminfo`,
    /// `proc/self/cgroup`, `sys/fs/cgroup`).
    pub fn read(root: &Path) -> MemoryFigures {
        let meminfo = std::fs::read_to_string(root.join("proc/meminfo")).ok();
        MemoryFigures {
            host: meminfo.and_then(|t| kib_field(&t, "MemTotal")),
            cgroup: cgroup_limit(&root.join("proc/self/cgroup"), &root.join("sys/fs/cgroup")),
        }
    }

    /// The memory available, and where it was read: the smaller of the
    /// cgroup's limit and the host's RAM. `None` if neither is known.
    pub fn available(&self) -> Option<(u64, MemorySource)> {
        match (self.cgroup, self.host) {
            (Some(c), Some(h)) if c < h => Some((c, MemorySource::Cgroup)),
            (_, Some(h)) => Some((h, MemorySource::Host)),
            (Some(c), None) => Some((c, MemorySource::Cgroup)),
            (None, None) => None,
        }
    }

    /// The default memory budget these figures give: half of
    /// [`available`](Self::available), so that the kernel's socket
    /// buffers, the page cache and a process beside it keep the rest.
    pub fn default_budget(&self) -> Option<(u64, MemorySource)> {
        self.available().map(|(bytes, source)| (bytes / 2, source))
    }
}

/// The memory available to this process, in bytes, and where it was read:
/// the smaller of its cgroup's `memory.max` (if not "max") and the host's
/// `MemTotal`. `None` if neither can be read.
pub fn available() -> Option<(u64, MemorySource)> {
    MemoryFigures::read(Path::new("/")).available()
}

/// The default memory budget (`wsloop serve --memory-limit`): half of what
/// this process may use ([`available`]), so that the kernel's socket
/// buffers, the page cache and a process beside it keep the rest. `None`
/// where neither figure can be read.
pub fn default_budget() -> Option<(u64, MemorySource)> {
    MemoryFigures::read(Path::new("/")).default_budget()
}

/// The memory limit of the cgroup named in `self_cgroup`, under `root`
/// (`/sys/fs/cgroup`): v2's `memory.max` (the `0::/path` line), else v1's
/// `memory/.../memory.limit_in_bytes` (the line naming the `memory`
/// controller). Inside a container the path may not exist in its own
/// namespace: the namespace's root file is read then. `None` where it is
/// unlimited or unknown.
fn cgroup_limit(self_cgroup: &Path, root: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(self_cgroup).ok()?;
    let read = |dir: &Path, path: &str, file: &str| {
        let at = dir.join(path.trim_start_matches('/')).join(file);
        std::fs::read_to_string(at).or_else(|_| std::fs::read_to_string(dir.join(file))).ok()
    };
    if let Some(path) = text.lines().find_map(|l| l.strip_prefix("0::")) {
        if let Some(max) = read(root, path, "memory.max") {
            return parse_memory_max(&max);
        }
    }
    let v1 = text.lines().find_map(|l| {
        let mut fields = l.splitn(3, ':').skip(1);
        let controllers = fields.next()?;
        controllers.split(',').any(|c| c == "memory").then(|| fields.next()).flatten()
    })?;
    parse_memory_max(&read(&root.join("memory"), v1, "memory.limit_in_bytes")?)
}

/// A limit file's value: bytes, or `None` for "max" (v2) or v1's
/// "unlimited" (a page-rounded `i64::MAX`; anything past 2^60 here).
fn parse_memory_max(text: &str) -> Option<u64> {
    text.trim().parse().ok().filter(|&n: &u64| n < 1 << 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_max_is_bytes_or_unlimited() {
        assert_eq!(parse_memory_max("268435456\n"), Some(256 << 20));
        assert_eq!(parse_memory_max("max\n"), None);
        assert_eq!(parse_memory_max("9223372036854771712\n"), None, "v1's unlimited");
        assert_eq!(parse_memory_max(""), None);
    }

    #[test]
    fn a_cgroup_limit_is_read_from_the_process_cgroup_path() {
        let dir = std::env::temp_dir().join(format!("wsloop-cgroup-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sys/app.slice")).unwrap();
        std::fs::write(dir.join("cgroup"), "0::/app.slice\n").unwrap();
        std::fs::write(dir.join("sys/app.slice/memory.max"), "1073741824\n").unwrap();
        assert_eq!(cgroup_limit(&dir.join("cgroup"), &dir.join("sys")), Some(1 << 30));
        std::fs::write(dir.join("sys/app.slice/memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit(&dir.join("cgroup"), &dir.join("sys")), None);
        // cgroup v1: the line that names the memory controller.
        std::fs::create_dir_all(dir.join("sys/memory/docker/abc")).unwrap();
        std::fs::write(dir.join("cgroup"), "9:pids:/\n4:memory:/docker/abc\n1:name=systemd:/\n").unwrap();
        std::fs::write(dir.join("sys/memory/docker/abc/memory.limit_in_bytes"), "536870912\n").unwrap();
        assert_eq!(cgroup_limit(&dir.join("cgroup"), &dir.join("sys")), Some(512 << 20));
        // Its path unseen from inside the container: the namespace's root.
        std::fs::write(dir.join("cgroup"), "4:cpu,memory:/elsewhere\n").unwrap();
        std::fs::write(dir.join("sys/memory/memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        assert_eq!(cgroup_limit(&dir.join("cgroup"), &dir.join("sys")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_smaller_figure_is_available_and_half_of_it_the_default() {
        let gib = 1u64 << 30;
        let both = MemoryFigures { host: Some(16 * gib), cgroup: Some(4 * gib) };
        assert_eq!(both.available(), Some((4 * gib, MemorySource::Cgroup)));
        assert_eq!(both.default_budget(), Some((2 * gib, MemorySource::Cgroup)));
        let loose = MemoryFigures { host: Some(16 * gib), cgroup: Some(32 * gib) };
        assert_eq!(loose.available(), Some((16 * gib, MemorySource::Host)));
        let unlimited = MemoryFigures { host: Some(16 * gib), cgroup: None };
        assert_eq!(unlimited.default_budget(), Some((8 * gib, MemorySource::Host)));
        let cgroup_only = MemoryFigures { host: None, cgroup: Some(gib) };
        assert_eq!(cgroup_only.available(), Some((gib, MemorySource::Cgroup)));
        assert_eq!(MemoryFigures::default().available(), None);
    }

    #[test]
    fn this_machine_has_a_figure() {
        let (bytes, _) = available().expect("/proc/meminfo");
        assert!(bytes > 64 << 20);
    }
}
