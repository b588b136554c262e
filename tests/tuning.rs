//! The tuning path: `wsloop doctor` against fake /proc trees, sysctl/apply.sh
//! against a fake sysctl root, and the server's one-line warning at start.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsloop-tuning-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn put(root: &Path, rel: &str, value: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("{value}\n")).unwrap();
}

fn sysctl(root: &Path, key: &str, value: &str) {
    put(root, &format!("proc/sys/{}", key.replace('.', "/")), value);
}

fn limits(root: &Path, soft: &str, hard: &str) {
    put(
        root,
        "proc/self/limits",
        &format!("Limit                     Soft Limit           Hard Limit           Units\nMax open files            {soft:<20} {hard:<20} files"),
    );
}

/// A fake host: its open-file limits and sysctl values under a scratch root.
fn host(name: &str, nofile: (&str, &str), settings: &[(&str, &str)]) -> PathBuf {
    let root = scratch(name);
    limits(&root, nofile.0, nofile.1);
    for (key, value) in settings {
        sysctl(&root, key, value);
    }
    root
}

/// A host as it comes out of the box (values of a stock Debian 12 VM).
fn stock_host(name: &str) -> PathBuf {
    host(
        name,
        ("1024", "4096"),
        &[
            ("fs.nr_open", "1048576"),
            ("fs.file-max", "9223372036854775807"),
            ("net.core.somaxconn", "128"),
            ("net.ipv4.tcp_max_syn_backlog", "512"),
            ("net.ipv4.tcp_mem", "45000 60000 90000"),
            ("net.ipv4.ip_local_port_range", "32768 60999"),
            ("net.netfilter.nf_conntrack_max", "65536"),
        ],
    )
}

/// The settings of sysctl/99-wsloop.conf, as `sysctl --system` reads them.
fn conf_settings() -> Vec<(String, String)> {
    let conf = std::fs::read_to_string("sysctl/99-wsloop.conf").unwrap();
    conf.lines()
        .map(|l| l.split('#').next().unwrap())
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect()
}

/// The same host after sysctl/99-wsloop.conf and LimitNOFILE=1048576, with
/// 23 GB of memory available.
fn tuned_host(name: &str) -> PathBuf {
    let root = scratch(name);
    limits(&root, "1048576", "1048576");
    for (key, value) in conf_settings() {
        sysctl(&root, &key, &value);
    }
    meminfo(&root, 23_000_000);
    root
}

fn meminfo(root: &Path, available_kib: u64) {
    put(root, "proc/meminfo", &format!("MemTotal:       24684160 kB\nMemAvailable:   {available_kib} kB\n"));
}

fn doctor(root: &Path, extra: &[&str]) -> (i32, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_wsloop")).args(["doctor", "--root"]).arg(root).args(extra).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn row<'a>(table: &'a str, setting: &str) -> &'a str {
    table.lines().find(|l| l.starts_with(setting)).unwrap_or_else(|| panic!("no row {setting} in\n{table}"))
}

#[test]
fn a_stock_host_fails_with_the_right_rows() {
    let root = stock_host("stock");
    let (code, table) = doctor(&root, &["--target-conns", "100000", "--role", "both"]);
    assert_eq!(code, 1, "{table}");
    assert!(row(&table, "open files per process").contains("LOW"), "{table}");
    assert!(row(&table, "open files per process").contains("soft 1024, hard 4096"));
    assert!(row(&table, "net.ipv4.tcp_mem").contains("LOW"));
    assert!(row(&table, "ephemeral ports per source address").contains("LOW"));
    assert!(row(&table, "net.netfilter.nf_conntrack_max").contains("LOW"));
    assert!(row(&table, "net.core.somaxconn").contains("WARN"));
    assert!(row(&table, "fs.nr_open").contains("OK"));
    assert!(row(&table, "fs.file-max").contains("OK"));
    assert!(table.contains("setting(s) block the target"));
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn a_tuned_host_passes() {
    let root = tuned_host("tuned");
    let (code, table) = doctor(&root, &["--target-conns", "100000", "--role", "both", "--sources", "8"]);
    assert_eq!(code, 0, "{table}");
    assert!(!table.contains("LOW") && !table.contains("WARN"), "{table}");
    assert!(table.contains("this host can hold the target"));
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn a_missing_file_is_reported_not_a_crash() {
    let root = tuned_host("missing");
    std::fs::remove_file(root.join("proc/sys/fs/file-max")).unwrap();
    std::fs::remove_file(root.join("proc/sys/net/netfilter/nf_conntrack_max")).unwrap();
    let (code, table) = doctor(&root, &["--target-conns", "100000"]);
    assert_eq!(code, 0, "{table}");
    assert!(row(&table, "fs.file-max").contains("UNKNOWN"), "{table}");
    assert!(row(&table, "fs.file-max").contains("unreadable"));
    assert!(!table.contains("nf_conntrack_max"), "conntrack not loaded: no row");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn many_processes_fit_a_low_file_limit() {
    // What the 100k benchmark does here: 6 processes under 20,000 files each.
    let root = tuned_host("split");
    limits(&root, "20000", "20000");
    let (code, table) = doctor(&root, &["--target-conns", "100000"]);
    assert_eq!(code, 1, "one process cannot: {table}");
    let (code, table) = doctor(&root, &["--target-conns", "100000", "--processes", "6"]);
    assert_eq!(code, 0, "{table}");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn a_million_on_one_host_like_this_one() {
    // benches/c1m.sh's host: 20,000 files per process, both ends on it.
    let root = tuned_host("million");
    limits(&root, "20000", "20000");
    let (code, table) = doctor(&root, &["--target-conns", "1000000", "--role", "both"]);
    assert_eq!(code, 1, "{table}");
    let files = row(&table, "open files per process");
    assert!(files.contains("LOW") && files.contains("run >= 51 processes on one port"), "{table}");
    let ports = row(&table, "ephemeral ports per source address");
    assert!(ports.contains("LOW") && ports.contains(">= 16 addresses"), "{table}");
    assert!(row(&table, "memory available").contains("OK"), "{table}");
    for setting in ["fs.nr_open", "fs.file-max", "net.ipv4.tcp_mem", "net.netfilter.nf_conntrack_max"] {
        assert!(row(&table, setting).contains("OK"), "99-wsloop.conf is sized for 1M: {table}");
    }

    let split = ["--target-conns", "1000000", "--role", "both", "--processes", "56", "--sources", "32"];
    let (code, table) = doctor(&root, &split);
    assert_eq!(code, 0, "{table}");
    // The host's boot-sized connection hash (shared: negative) slows a
    // million down but does not block it.
    sysctl(&root, "net.ipv4.tcp_ehash_entries", "-262144");
    let (code, table) = doctor(&root, &split);
    assert_eq!(code, 0, "{table}");
    let ehash = row(&table, "net.ipv4.tcp_ehash_entries");
    assert!(ehash.contains("WARN") && ehash.contains("tcp_child_ehash_entries=2097152"), "{table}");
    sysctl(&root, "net.ipv4.tcp_ehash_entries", "2097152");
    assert!(row(&doctor(&root, &split).1, "net.ipv4.tcp_ehash_entries").contains("OK"));

    // 2M sockets need ~9 GB of kernel memory: 8 GB available is not enough.
    meminfo(&root, 8_000_000);
    let (code, table) = doctor(&root, &split);
    assert_eq!(code, 1, "{table}");
    let memory = row(&table, "memory available");
    assert!(memory.contains("LOW") && memory.contains("2000000 sockets"), "{table}");
    // A server alone needs half the sockets and no load generator.
    let (code, table) = doctor(&root, &["--target-conns", "1000000", "--processes", "56"]);
    assert_eq!(code, 0, "{table}");
    std::fs::remove_dir_all(root).unwrap();
}

fn apply_sh(root: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new("bash")
        .arg("sysctl/apply.sh")
        .args(args)
        .env("SYSCTL_ROOT", root.join("proc/sys"))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Every file under `dir` with its content, sorted.
fn snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn apply_sh_dry_run_apply_and_revert() {
    let root = stock_host("apply");
    sysctl(&root, "net.core.netdev_max_backlog", "1000");
    sysctl(&root, "net.ipv4.tcp_fin_timeout", "60");
    sysctl(&root, "net.ipv4.tcp_tw_reuse", "2");
    sysctl(&root, "net.ipv4.tcp_rmem", "4096 131072 6291456");
    sysctl(&root, "net.ipv4.tcp_wmem", "4096 16384 4194304");
    std::fs::remove_file(root.join("proc/sys/net/netfilter/nf_conntrack_max")).unwrap();
    let sys = root.join("proc/sys");
    let before = snapshot(&sys);

    let (code, out) = apply_sh(&root, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("net.core.somaxconn                 128 -> 65535"), "{out}");
    assert!(out.contains("nothing was written"));
    assert!(out.contains("nf_conntrack_max") && out.contains("skipped"), "{out}");
    assert!(out.contains("fs.file-max") && out.contains("kept"), "a higher limit is kept: {out}");
    assert_eq!(snapshot(&sys), before, "a dry run changes nothing");

    let backup = root.join("backup.conf");
    let (code, out) = apply_sh(&root, &["--apply", "--backup", backup.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let read = |k: &str| std::fs::read_to_string(sys.join(k.replace('.', "/"))).unwrap().trim().to_string();
    assert_eq!(read("net.core.somaxconn"), "65535");
    assert_eq!(read("net.ipv4.tcp_mem"), "524288 1048576 2097152");
    assert_eq!(read("net.ipv4.ip_local_port_range"), "1024 65535");
    assert_eq!(read("fs.file-max"), "9223372036854775807", "not lowered");
    let saved = std::fs::read_to_string(&backup).unwrap();
    assert!(saved.contains("net.core.somaxconn = 128"), "{saved}");

    let (code, out) = apply_sh(&root, &["--revert", backup.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(snapshot(&sys), before, "revert restores the exact values");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn apply_sh_refuses_without_root() {
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("setpriv missing: skipped");
        return;
    }
    let root = stock_host("noroot");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash", "sysctl/apply.sh", "--apply"])
        .env("SYSCTL_ROOT", root.join("proc/sys"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs root"));
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn the_server_says_at_start_when_the_host_is_short() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(["serve", "--addr", "127.0.0.1:0", "--metrics-addr", "off", "--max-conns", "5000000"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut found = None;
    for line in lines.map_while(Result::ok) {
        if line.contains("host is short of 5000000 connections") {
            found = Some(line);
            break;
        }
        if Instant::now() > deadline {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let line = found.expect("a one-line doctor warning at start");
    assert!(line.contains("open files per process") && line.contains("wsloop doctor --target-conns 5000000"), "{line}");
}
