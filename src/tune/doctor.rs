//! `wsloop doctor`: what this host still lacks for a target number of
//! connections. Reads the live values (from a root that tests can point at
//! a fake tree), compares each with what the target needs, and says how to
//! fix what is short.
//!
//! How each need is computed, for N connections over P processes:
//! - open files per process (RLIMIT_NOFILE hard): ceil(N / P) + 64 reserve;
//!   wsloop raises its soft limit to the hard one itself.
//! - fs.nr_open: the same (no process limit may exceed it).
//! - fs.file-max: N descriptors + 1,024 (x2 when server and load generator share the host).
//! - net.core.somaxconn, net.ipv4.tcp_max_syn_backlog: 4,096 (wsloop's listen
//!   backlog); below it handshake storms queue (WARN), nothing is capped.
//! - net.ipv4.tcp_mem (max, pages): one page per connection.
//! - net.ipv4.tcp_ehash_entries: a bucket per socket (WARN only: with long
//!   chains every packet and connect slows, nothing is refused).
//! - net.netfilter.nf_conntrack_max (if loaded): N + 10 % (one entry per
//!   connection, shared by both directions and both ends on one host).
//! - load generator: ephemeral ports per source address: ceil(N / sources).
//! - memory (MemAvailable): every socket's kernel memory ([`KERNEL_PER_SOCKET`],
//!   x2 when both ends share the host) plus user space per connection
//!   ([`SERVER_PER_CONN`], [`LOADGEN_PER_CONN`]): each end's kernel part is
//!   ~30x the server's, and it is what runs a host out of memory at 1M.
//!
//! Below the table (a server's host only): the memory a process may use and
//! the server's default `--memory-limit` ([`memory_budget`]), informative,
//! never a verdict.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::memory::MemoryFigures;

/// Kernel memory one idle TCP socket costs (socket, file, dentry/inode,
/// epoll entry: slab), measured at 1M connections on Linux 6.18 (BENCHMARKS.md,
/// "One million connections"), rounded up.
pub const KERNEL_PER_SOCKET: u64 = 4_608;
/// User-space memory a server holds per idle connection, with margin
/// (measured 125-160 bytes).
pub const SERVER_PER_CONN: u64 = 256;
/// User-space memory `wsloop load` holds per connection, with margin
/// (measured 710 bytes at 1M).
pub const LOADGEN_PER_CONN: u64 = 1024;

/// Which side of the traffic this host is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Runs wsloop serve.
    Server,
    /// Runs wsloop load (or k6).
    Loadgen,
    /// Both on one host (the benchmarks here).
    Both,
}

/// What to check for.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Connections wanted.
    pub conns: u64,
    /// The host's role.
    pub role: Role,
    /// Processes the connections are spread over (per side).
    pub processes: u64,
    /// Source addresses the load generator uses.
    pub sources: u64,
}

/// A row's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Enough.
    Ok,
    /// Short: the target cannot be reached.
    Low,
    /// Short of what is advised, but not blocking (handshake storms queue).
    Warn,
    /// Could not be read: reported, not judged.
    Missing,
}

/// One setting checked.
#[derive(Debug, Clone)]
pub struct Check {
    /// The setting's name.
    pub setting: &'static str,
    /// Its value now (as read), or why it could not be read.
    pub current: String,
    /// What the target needs.
    pub needed: String,
    /// The verdict.
    pub status: Status,
    /// How to fix it when low.
    pub fix: String,
}

/// The host to read: `/` for the live one, a fake tree in tests.
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
}

impl Host {
    /// The host this process runs on.
    pub fn live() -> Host {
        Host { root: PathBuf::from("/") }
    }

    /// A host whose files live under `root` (`root/proc/sys/...`).
    pub fn at(root: impl Into<PathBuf>) -> Host {
        Host { root: root.into() }
    }

    /// A file's words on one line (sysctl values).
    fn read(&self, rel: &str) -> Result<String, String> {
        self.read_lines(rel).map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// A file as it is (/proc/meminfo).
    fn read_lines(&self, rel: &str) -> Result<String, String> {
        let path = self.root.join(rel);
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn sysctl(&self, key: &str) -> Result<String, String> {
        self.read(&format!("proc/sys/{}", key.replace('.', "/")))
    }

    fn exists(&self, rel: &str) -> bool {
        Path::exists(&self.root.join(rel))
    }

    /// (soft, hard) open-file limits of this process, from /proc/self/limits
    /// (so a systemd LimitNOFILE shows as it is in force).
    fn nofile(&self) -> Result<(u64, u64), String> {
        let path = self.root.join("proc/self/limits");
        let limits = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let line = limits.lines().find(|l| l.starts_with("Max open files")).ok_or("no 'Max open files' line")?;
        let nums: Vec<u64> = line["Max open files".len()..]
            .split_whitespace()
            .take(2)
            .map(|v| if v == "unlimited" { Ok(u64::MAX) } else { v.parse::<u64>() })
            .collect::<Result<_, _>>()
            .map_err(|e| format!("bad 'Max open files' line: {e}"))?;
        match nums[..] {
            [soft, hard] => Ok((soft, hard)),
            _ => Err("bad 'Max open files' line".into()),
        }
    }
}

fn first_u64(s: &str) -> Result<u64, String> {
    s.split_whitespace().next().unwrap_or("").parse().map_err(|_| format!("'{s}' is not a number"))
}

fn field_u64(s: &str, i: usize) -> Result<u64, String> {
    s.split_whitespace().nth(i).ok_or_else(|| format!("'{s}' has no field {i}"))?.parse().map_err(|_| format!("'{s}'"))
}

/// The figures every row's need is worked out from.
#[derive(Debug, Clone, Copy)]
struct Sizing {
    /// Connections wanted.
    conns: u64,
    /// Descriptors one process needs: its share of the connections plus
    /// the reserve.
    per_process: u64,
    /// Sockets per connection on this host: 2 when both ends share it.
    sides: u64,
}

impl Sizing {
    /// The figures for `target`.
    fn of(target: Target) -> Sizing {
        let conns = target.conns;
        Sizing {
            conns,
            per_process: conns.div_ceil(target.processes.max(1)) + super::rlimit::FD_RESERVE as u64,
            sides: if target.role == Role::Both { 2 } else { 1 },
        }
    }
}

/// Checks `host` against `target`.
pub fn check(host: &Host, target: Target) -> Vec<Check> {
    let sizing = Sizing::of(target);
    let mut rows = Vec::new();
    check_open_files(&mut rows, host, sizing);
    let files = sizing.conns * sizing.sides + 1024;
    at_least_sysctl(&mut rows, host, "fs.file-max", files, files.max(2_097_152));
    if target.role != Role::Loadgen {
        at_least_sysctl(&mut rows, host, "net.core.somaxconn", 4096, 65535);
        at_least_sysctl(&mut rows, host, "net.ipv4.tcp_max_syn_backlog", 4096, 65535);
    }
    check_tcp_mem(&mut rows, host, sizing);
    let ports_impossible =
        target.role != Role::Server && check_ephemeral_ports(&mut rows, host, sizing, target.sources);
    check_memory(&mut rows, host, sizing, target.role);
    if host.exists("proc/sys/net/netfilter/nf_conntrack_max") {
        let need = sizing.conns + sizing.conns / 10;
        at_least_sysctl(&mut rows, host, "net.netfilter.nf_conntrack_max", need, need.max(1_048_576));
    }
    check_ehash(&mut rows, host, sizing);
    grade(&mut rows, ports_impossible);
    rows
}

/// How to set the sysctl `key` to `value`.
fn sysctl_fix(key: &str, value: u64) -> String {
    format!("sysctl -w {key}={value} (or sysctl/apply.sh --apply)")
}

/// Adds the row of a setting that must be at least `need`: OK or LOW by
/// the value `read`, UNKNOWN when it could not be read. `shown` is what
/// the current column says instead of the bare value.
fn at_least(
    rows: &mut Vec<Check>,
    setting: &'static str,
    read: Result<u64, String>,
    shown: Option<String>,
    need: u64,
    fix: String,
) {
    let (current, status) = match read {
        Ok(v) => (shown.unwrap_or_else(|| v.to_string()), if v >= need { Status::Ok } else { Status::Low }),
        Err(e) => (format!("unreadable ({e})"), Status::Missing),
    };
    rows.push(Check { setting, current, needed: format!(">= {need}"), status, fix });
}

/// [`at_least`] for a one-number sysctl, named by its key; the fix sets it
/// to `fix_to`.
fn at_least_sysctl(rows: &mut Vec<Check>, host: &Host, key: &'static str, need: u64, fix_to: u64) {
    at_least(rows, key, host.sysctl(key).and_then(|s| first_u64(&s)), None, need, sysctl_fix(key, fix_to));
}

/// The per-process open-file rows: this process's hard limit, and
/// `fs.nr_open`, which no process limit may exceed.
fn check_open_files(rows: &mut Vec<Check>, host: &Host, sizing: Sizing) {
    let nofile = host.nofile();
    let shown = nofile.as_ref().ok().map(|(s, h)| format!("soft {s}, hard {h}"));
    let fix = nofile_fix(&nofile, sizing);
    let per_process = sizing.per_process;
    at_least(rows, "open files per process (RLIMIT_NOFILE hard)", nofile.map(|(_, h)| h), shown, per_process, fix);
    at_least_sysctl(rows, host, "fs.nr_open", per_process, per_process.max(1_048_576));
}

/// How to raise the open-file limit: in the unit under systemd, with
/// ulimit or limits.d elsewhere; or, where the hard limit cannot be raised
/// (a container), how many processes on one SO_REUSEPORT port fit under it.
fn nofile_fix(nofile: &Result<(u64, u64), String>, sizing: Sizing) -> String {
    let (n, per_process) = (sizing.conns, sizing.per_process);
    let under_systemd = std::env::var_os("INVOCATION_ID").is_some();
    let spread = match nofile.as_ref().map(|(_, hard)| hard.saturating_sub(super::rlimit::FD_RESERVE as u64)) {
        Ok(room) if room > 0 => {
            format!("run >= {} processes on one port (--processes {})", n.div_ceil(room), n.div_ceil(room))
        }
        _ => "run more processes on one port".into(),
    };
    if under_systemd {
        format!("LimitNOFILE={per_process} in the unit (sysctl/wsloop.service), or {spread}")
    } else {
        format!("ulimit -n {per_process}, sysctl/limits.d/99-wsloop.conf, or LimitNOFILE= under systemd; or {spread}")
    }
}

/// TCP memory's ceiling, in pages: a page per socket.
fn check_tcp_mem(rows: &mut Vec<Check>, host: &Host, sizing: Sizing) {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let pages = (sizing.conns * sizing.sides * 4096).div_ceil(page);
    let tcp_mem = host.sysctl("net.ipv4.tcp_mem");
    let shown = tcp_mem.as_ref().ok().cloned();
    at_least(
        rows,
        "net.ipv4.tcp_mem (max, pages)",
        tcp_mem.and_then(|s| field_u64(&s, 2)),
        shown,
        pages,
        format!("sysctl -w net.ipv4.tcp_mem='{} {} {}'", pages / 4, pages / 2, pages.max(1_048_576)),
    );
}

/// The load generator's ephemeral ports per source address. True when
/// more are needed than any port range holds: only more addresses help.
fn check_ephemeral_ports(rows: &mut Vec<Check>, host: &Host, sizing: Sizing, sources: u64) -> bool {
    let n = sizing.conns;
    let ports = n.div_ceil(sources.max(1));
    let range = host.sysctl("net.ipv4.ip_local_port_range");
    let shown = range.as_ref().ok().cloned();
    let size = range.and_then(|s| Ok(field_u64(&s, 1)?.saturating_sub(field_u64(&s, 0)?) + 1));
    at_least(
        rows,
        "ephemeral ports per source address",
        size,
        shown,
        ports.min(64_512),
        if ports > 64_512 {
            format!(
                "{ports} ports per address is more than one range holds: use --source-ips with >= {} addresses",
                n.div_ceil(64_512)
            )
        } else {
            "sysctl -w net.ipv4.ip_local_port_range='1024 65535', or more --source-ips".into()
        },
    );
    ports > 64_512
}

/// Memory available against what the target takes: every socket's kernel
/// memory plus `role`'s user space per connection.
fn check_memory(rows: &mut Vec<Check>, host: &Host, sizing: Sizing, role: Role) {
    let (n, sides) = (sizing.conns, sizing.sides);
    let user = match role {
        Role::Server => SERVER_PER_CONN,
        Role::Loadgen => LOADGEN_PER_CONN,
        Role::Both => SERVER_PER_CONN + LOADGEN_PER_CONN,
    };
    let memory_mb = (n * sides * KERNEL_PER_SOCKET + n * user).div_ceil(1_000_000);
    let available_mb = host.read_lines("proc/meminfo").and_then(|m| {
        let bytes = super::procfs::kib_field(&m, "MemAvailable").ok_or("no MemAvailable line")?;
        Ok(bytes / 1_000_000)
    });
    at_least(
        rows,
        "memory available, MB (kernel + user space)",
        available_mb,
        None,
        memory_mb,
        format!(
            "{} sockets x {KERNEL_PER_SOCKET} B in the kernel + {user} B per connection in user space; add memory or spread the connections over hosts",
            n * sides
        ),
    );
}

/// The TCP connection hash, where the kernel shows it: a bucket per
/// socket. Negative: this namespace shares the host's table (of that size).
fn check_ehash(rows: &mut Vec<Check>, host: &Host, sizing: Sizing) {
    let ehash = host.sysctl("net.ipv4.tcp_ehash_entries");
    if ehash.is_ok() {
        let sockets = sizing.conns * sizing.sides;
        at_least(
            rows,
            "net.ipv4.tcp_ehash_entries",
            ehash.and_then(|s| s.trim().parse::<i64>().map(i64::unsigned_abs).map_err(|_| format!("'{s}'"))),
            None,
            sockets.next_power_of_two(),
            format!(
                "boot with thash_entries={}, or run in a network namespace created after sysctl -w net.ipv4.tcp_child_ehash_entries={}",
                sockets.next_power_of_two(),
                sockets.next_power_of_two()
            ),
        );
    }
}

/// The verdicts a value alone cannot give: a short accept queue or a small
/// connection hash slows handshakes and packets but caps nothing (WARN,
/// not LOW); ports no range can hold block whatever the range.
fn grade(rows: &mut [Check], ports_impossible: bool) {
    let slows = ["net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_ehash_entries"];
    for r in rows.iter_mut().filter(|r| slows.contains(&r.setting)) {
        if r.status == Status::Low {
            r.status = Status::Warn;
        }
    }
    if ports_impossible {
        for r in rows.iter_mut().filter(|r| r.setting == "ephemeral ports per source address") {
            r.status = Status::Low;
        }
    }
}

/// The rows that block the target.
pub fn blocking(rows: &[Check]) -> Vec<&Check> {
    rows.iter().filter(|r| r.status == Status::Low).collect()
}

/// The table `wsloop doctor` prints.
pub fn render(rows: &[Check], target: Target) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "wsloop doctor: {} connections as {:?} over {} process(es)\n",
        target.conns, target.role, target.processes
    );
    let _ = writeln!(s, "{:<44} {:<28} {:<14} {:<8} fix", "setting", "current", "needed", "status");
    for r in rows {
        let status = match r.status {
            Status::Ok => "OK",
            Status::Low => "LOW",
            Status::Warn => "WARN",
            Status::Missing => "UNKNOWN",
        };
        let fix = if r.status == Status::Ok { "" } else { r.fix.as_str() };
        let _ = writeln!(s, "{:<44} {:<28} {:<14} {:<8} {fix}", r.setting, r.current, r.needed, status);
    }
    let low = blocking(rows).len();
    let _ = writeln!(
        s,
        "\n{}",
        if low == 0 {
            "this host can hold the target.".to_string()
        } else {
            format!("{low} setting(s) block the target: see sysctl/ and the README's tuning section.")
        }
    );
    s
}

/// What `wsloop doctor` says of the memory budget (`--memory-limit`): the
/// memory a process started like this one may use (the cgroup's
/// `memory.max` or the host's `MemTotal`, as [`super::memory`] reads
/// them), the server's default budget and its soft mark, and hints where
/// the default misleads: a cgroup tighter than the host (a server in
/// another cgroup sees its own), or several processes on one port, each of
/// which takes the whole default for itself.
pub fn memory_budget(host: &Host, processes: u64) -> String {
    let figures = MemoryFigures::read(&host.root);
    let mut s = String::new();
    let (Some((available, source)), Some((budget, _))) = (figures.available(), figures.default_budget()) else {
        let _ = writeln!(
            s,
            "memory budget: neither the cgroup's memory.max nor MemTotal could be read: the server runs with no budget unless --memory-limit is set"
        );
        return s;
    };
    let _ = writeln!(s, "memory a process may use: {} ({})", mib(available), source.label());
    let _ = writeln!(
        s,
        "memory budget (default --memory-limit): {}, half of it; past {} (3/4) new connections get 503 and large input holders are not read",
        mib(budget),
        mib(budget / 4 * 3)
    );
    if let (Some(cgroup), Some(total)) = (figures.cgroup, figures.host) {
        if cgroup < total {
            let _ = writeln!(
                s,
                "hint: this cgroup's memory.max ({}) is below the host's MemTotal ({}): the budget follows the cgroup; a server run in another cgroup (its own unit's MemoryMax=, a container) gets that one's",
                mib(cgroup),
                mib(total)
            );
        }
    }
    if processes > 1 {
        let each = available / 2 / processes;
        let _ = writeln!(
            s,
            "hint: each of {processes} processes takes the default for itself ({} together); give each --memory-limit {}MiB to keep them to half of {}",
            mib(budget * processes),
            each >> 20,
            mib(available)
        );
    }
    s
}

/// Bytes in whole MiB, as `--memory-limit` reads them.
fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

/// One line for the server's start-up log when the host is short of
/// `conns`, or `None` when it is not.
pub fn one_line(host: &Host, conns: u64) -> Option<String> {
    let target = Target { conns, role: Role::Server, processes: 1, sources: 1 };
    let rows = check(host, target);
    let low: Vec<String> =
        blocking(&rows).iter().map(|r| format!("{} is {} (needs {})", r.setting, r.current, r.needed)).collect();
    (!low.is_empty()).then(|| {
        format!("host is short of {conns} connections: {}; run `wsloop doctor --target-conns {conns}`", low.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits_lines() {
        let dir = std::env::temp_dir().join(format!("wsloop-doctor-unit-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("proc/self")).unwrap();
        std::fs::write(
            dir.join("proc/self/limits"),
            "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 unlimited            files\n",
        )
        .unwrap();
        assert_eq!(Host::at(&dir).nofile(), Ok((1024, u64::MAX)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A fake host of `total_mib` MiB whose process cgroup has `max`
    /// (a number of bytes, or "max") as its memory.max.
    fn memory_host(name: &str, total_mib: u64, max: Option<&str>) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wsloop-doctor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("proc/self")).unwrap();
        std::fs::write(dir.join("proc/meminfo"), format!("MemTotal: {} kB\nMemAvailable: 1000 kB\n", total_mib * 1024))
            .unwrap();
        if let Some(max) = max {
            std::fs::create_dir_all(dir.join("sys/fs/cgroup/wsloop.service")).unwrap();
            std::fs::write(dir.join("proc/self/cgroup"), "0::/wsloop.service\n").unwrap();
            std::fs::write(dir.join("sys/fs/cgroup/wsloop.service/memory.max"), format!("{max}\n")).unwrap();
        }
        dir
    }

    #[test]
    fn memory_budget_shows_the_host_figure_and_the_default_half() {
        let dir = memory_host("host", 16_384, Some("max"));
        let text = memory_budget(&Host::at(&dir), 1);
        assert!(text.contains("memory a process may use: 16384 MiB (host MemTotal)"), "{text}");
        assert!(text.contains("memory budget (default --memory-limit): 8192 MiB, half of it; past 6144 MiB"), "{text}");
        assert!(!text.contains("hint"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_tighter_cgroup_sets_the_budget_and_says_so() {
        let dir = memory_host("cgroup", 16_384, Some(&(4u64 << 30).to_string()));
        let text = memory_budget(&Host::at(&dir), 1);
        assert!(text.contains("memory a process may use: 4096 MiB (cgroup memory limit)"), "{text}");
        assert!(text.contains("(default --memory-limit): 2048 MiB"), "{text}");
        assert!(
            text.contains("hint: this cgroup's memory.max (4096 MiB) is below the host's MemTotal (16384 MiB)"),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        // A cgroup looser than the host changes nothing and hints nothing.
        let dir = memory_host("loose", 16_384, Some(&(64u64 << 30).to_string()));
        let text = memory_budget(&Host::at(&dir), 1);
        assert!(text.contains("16384 MiB (host MemTotal)") && !text.contains("hint"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn several_processes_are_told_their_share() {
        let dir = memory_host("processes", 16_384, None);
        let text = memory_budget(&Host::at(&dir), 4);
        assert!(
            text.contains("hint: each of 4 processes takes the default for itself (32768 MiB together); give each --memory-limit 2048MiB"),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_figure_means_no_default_budget() {
        let dir = std::env::temp_dir().join(format!("wsloop-doctor-nomem-{}", std::process::id()));
        let text = memory_budget(&Host::at(&dir), 1);
        assert!(text.contains("no budget unless --memory-limit is set"), "{text}");
    }
}
