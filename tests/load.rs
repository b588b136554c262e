//! `wsloop load` against the real server and against servers that
//! misbehave: every scenario works, errors are counted by reason, and the
//! exit code tells a clean run from a bad one.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;

use common::*;
use serde_json::Value;

struct Run {
    code: i32,
    report: Value,
    stdout: String,
    stderr: String,
}

/// Runs `wsloop load` with `args` and a JSON report; returns it.
fn load(args: &[&str]) -> Run {
    load_with_nofile(args, None)
}

/// Like [`load`], under an open-file limit of `nofile`.
fn load_with_nofile(args: &[&str], nofile: Option<u64>) -> Run {
    let dir = std::env::temp_dir().join(format!("wsloop-load-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsloop"));
    cmd.arg("load").args(args).arg("--json").arg(&json);
    if let Some(limit) = nofile {
        limit_nofile(&mut cmd, limit);
    }
    let out = cmd.output().expect("run wsloop load");
    let report = std::fs::read_to_string(&json).map(|s| serde_json::from_str(&s).unwrap()).unwrap_or(Value::Null);
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        code: out.status.code().unwrap_or(-1),
        report,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn rand_suffix() -> u64 {
    wsloop::ws::mask::random_u64()
}

fn server() -> (ServerProcess, SocketAddr, SocketAddr) {
    spawn_binary_with_metrics(&[], None)
}

fn stop(mut child: ServerProcess) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn idle_holds_and_the_leak_check_passes() {
    let (child, addr, metrics) = server();
    let url = format!("ws://{addr}/ws");
    let metrics_url = format!("http://{metrics}/metrics");
    let run = load(&[
        "--url",
        &url,
        "--scenario",
        "idle",
        "--conns",
        "300",
        // The server is scraped once a second: a hold of 3 s holds a round.
        "--duration",
        "3s",
        "--metrics-url",
        &metrics_url,
        "--expect-clean",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.report["established"], 300);
    assert_eq!(run.report["peak_open"], 300);
    assert_eq!(run.report["leak_check"]["clean"], true);
    let timeline = run.report["timeline"].as_array().unwrap();
    assert!(timeline.iter().any(|s| s["server_connections"] == 300.0), "server view scraped");
    assert!(run.stderr.contains("open"), "progress lines: {}", run.stderr);
    stop(child);
}

#[test]
fn ping_checks_every_pong() {
    let (child, addr, _) = server();
    let url = format!("ws://{addr}/ws");
    let run = load(&["--url", &url, "--scenario", "ping", "--conns", "100", "--duration", "2s", "--interval", "200ms"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!((run.report["mismatches"].as_u64(), run.report["pong_timeouts"].as_u64()), (Some(0), Some(0)));
    assert!(run.report["messages_received"].as_u64().unwrap() >= 500, "{}", run.report["messages_received"]);
    assert!(!run.report["rtt"]["counts"].as_array().unwrap().is_empty());
    stop(child);
}

#[test]
fn echo_verifies_payloads_with_depth() {
    let (child, addr, _) = server();
    let url = format!("ws://{addr}/ws");
    let run = load(&[
        "--url",
        &url,
        "--scenario",
        "echo",
        "--conns",
        "50",
        "--duration",
        "2s",
        "--size",
        "1KiB",
        "--depth",
        "4",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.report["mismatches"], 0);
    let received = run.report["messages_received"].as_u64().unwrap();
    assert!(received > 1000, "{received}");
    assert!(run.report["bytes_received"].as_u64().unwrap() >= received * 1024);
    stop(child);
}

#[test]
fn fanout_and_broadcast_deliver_every_publish_to_every_member() {
    for broadcast in [false, true] {
        // Client broadcasts are off unless the server is told otherwise.
        let (child, addr, metrics) =
            spawn_binary_with_metrics(if broadcast { &["--allow-broadcast"] } else { &[] }, None);
        let url = format!("ws://{addr}/ws");
        let mut args = vec!["--url", &url, "--scenario", "fanout", "--conns", "201", "--duration", "2s"];
        args.extend(["--publish-rate", "20"]);
        if broadcast {
            args.push("--broadcast");
        }
        let run = load(&args);
        assert_eq!(run.code, 0, "broadcast {broadcast}: {}", run.stderr);
        assert_eq!(run.report["mismatches"], 0);
        // Every publish reaches the 200 others, and every join is acked.
        let published = run.report["messages_sent"].as_u64().unwrap();
        assert!(published >= 20, "{published}");
        assert_eq!(run.report["messages_received"].as_u64().unwrap(), published * 200 + 201, "broadcast {broadcast}");
        let (_, m) = http_get(metrics, "/metrics");
        let delivered = sample(&m, "wsloop_room_messages_delivered_total").unwrap();
        let writes = sample(&m, "wsloop_room_writes_total").unwrap();
        assert_eq!(delivered, (published * 200) as f64);
        assert!(writes >= 1.0 && writes <= delivered, "{writes} writes for {delivered}");
        stop(child);
    }
}

#[test]
fn churn_and_stages() {
    let (child, addr, _) = server();
    let url = format!("ws://{addr}/ws");
    let run = load(&["--url", &url, "--scenario", "churn", "--conns", "20", "--duration", "2s"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.report["established"].as_u64().unwrap() > 100, "{}", run.report["established"]);
    let run = load(&["--url", &url, "--stage", "1s:200", "--stage", "1s:200", "--stage", "1s:0"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.report["established"], 200);
    stop(child);
}

#[test]
fn a_server_that_refuses() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("ws://127.0.0.1:{port}/ws");
    let run = load(&["--url", &url, "--conns", "30", "--duration", "1s"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.report["failed"]["refused"].as_u64().unwrap() >= 30, "{}", run.report["failed"]);
    assert_eq!(run.report["established"], 0);
}

#[test]
fn a_server_that_answers_503() {
    let (child, addr, _) = spawn_binary_with_metrics(&["--max-conns", "10"], None);
    let url = format!("ws://{addr}/ws");
    let run = load(&["--url", &url, "--conns", "30", "--duration", "1s"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.report["established"], 10);
    assert!(run.report["failed"]["status_503"].as_u64().unwrap() >= 20, "{}", run.report["failed"]);
    stop(child);
}

#[test]
fn a_server_that_drops_connections_after_the_upgrade() {
    // Accepts, answers a valid 101, then closes without a close frame.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut s) = stream else { continue };
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            while let Ok(n) = s.read(&mut buf[len..]) {
                if n == 0 {
                    break;
                }
                len += n;
                let mut scanned = 0;
                let cfg = wsloop::ws::HandshakeConfig::default();
                if let Ok(Some(req)) = wsloop::ws::handshake::parse_request(&buf[..len], &mut scanned, &cfg) {
                    let mut reply = Vec::new();
                    wsloop::ws::handshake::write_accept(&mut reply, &req);
                    let _ = s.write_all(&reply);
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    });
    let url = format!("ws://{addr}/ws");
    let run = load(&["--url", &url, "--conns", "20", "--duration", "2s"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.report["established"], 20);
    // Each shows as dropped (FIN) or reset (RST), by how the kernel closed it.
    let closed = &run.report["server_closed"];
    let lost = closed["dropped"].as_u64().unwrap_or(0) + closed["reset"].as_u64().unwrap_or(0);
    assert_eq!(lost, 20, "{closed}");
}

#[test]
fn bad_flags_name_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_wsloop")).args(["load", "--stage", "5000"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--stage"));
    let out = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(["load", "--url", "http://x/", "--conns", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--url"));
}

#[test]
fn two_segments_drive_one_plan_without_overlap() {
    let (child, addr, metrics) = server();
    let url = format!("ws://{addr}/ws");
    // Two load "hosts", one plan of 31 connections held 3 s: 16 + 15.
    let runs: Vec<std::thread::JoinHandle<Run>> = ["1/2", "2/2"]
        .into_iter()
        .map(|segment| {
            let url = url.clone();
            std::thread::spawn(move || {
                load(&["--url", &url, "--conns", "31", "--duration", "3s", "--segment", segment])
            })
        })
        .collect();
    let open = || open_connections(&http_get(metrics, "/metrics").1);
    assert!(eventually(std::time::Duration::from_secs(10), || open() == 31.0), "the server never held 31: {}", open());
    let established: Vec<u64> = runs
        .into_iter()
        .map(|r| {
            let run = r.join().unwrap();
            assert_eq!(run.code, 0, "{}", run.stderr);
            assert!(run.stderr.contains("segment"), "{}", run.stderr);
            run.report["established"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(established, [16, 15]);
    let out =
        Command::new(env!("CARGO_BIN_EXE_wsloop")).args(["load", "--conns", "1", "--segment", "3/2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--segment"), "{}", String::from_utf8_lossy(&out.stderr));
    stop(child);
}

#[test]
fn splits_over_processes_when_the_file_limit_is_low() {
    let (child, addr, metrics) = server();
    let url = format!("ws://{addr}/ws");
    let metrics_url = format!("http://{metrics}/metrics");
    // 250 descriptors per load process: 400 connections need 3 of them.
    let run = load_with_nofile(
        &[
            "--url",
            &url,
            "--scenario",
            "ping",
            "--interval",
            "300ms",
            "--conns",
            "400",
            "--duration",
            "2s",
            "--metrics-url",
            &metrics_url,
            "--source-ips",
            "127.0.0.2-127.0.0.4",
        ],
        Some(250),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.report["processes"], 3);
    assert_eq!(run.report["established"], 400);
    assert_eq!(run.report["mismatches"], 0);
    let timeline = run.report["timeline"].as_array().unwrap();
    assert!(timeline.iter().any(|s| s["open"] == 400));
    // The children's per-second round trips are merged into one p99 line,
    // their memory summed; the host's kernel and the server's own memory
    // are sampled beside them.
    assert!(timeline.iter().any(|s| s["rtt_p99_ms"].as_f64().is_some_and(|p| p > 0.0)), "per-second p99");
    assert!(timeline.iter().any(|s| s["load_anon"].as_f64().is_some_and(|b| b > 0.0)), "load memory");
    assert!(timeline.iter().any(|s| s["server_anon"].as_f64().is_some_and(|b| b > 0.0)), "server memory");
    assert!(timeline.iter().all(|s| s["host"]["slab"].as_f64().is_some_and(|b| b > 0.0)), "kernel slab");
    assert!(run.report["host_baseline"]["tcp_sockets"].as_f64().is_some());
    assert!(!run.report["rtt_at_peak"]["counts"].as_array().unwrap().is_empty(), "pings while holding");
    for line in ["holding the peak", "server anonymous memory", "kernel slab (this host)", "load generator memory"] {
        assert!(run.stdout.contains(line), "summary has {line}: {}", run.stdout);
    }
    stop(child);
}

#[test]
fn ctrl_c_stops_with_a_partial_report() {
    let (child, addr, _) = server();
    let url = format!("ws://{addr}/ws");
    let dir = std::env::temp_dir().join(format!("wsloop-sigint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let mut load = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args([
            "load",
            "--url",
            &url,
            "--scenario",
            "ping",
            "--interval",
            "200ms",
            "--conns",
            "50",
            "--duration",
            "60s",
        ])
        .arg("--json")
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let started = std::time::Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(load.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let status = load.wait().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "stopped in {:?}", started.elapsed());
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["interrupted"], true);
    assert_eq!(report["established"], 50);
    assert!(report["messages_received"].as_u64().unwrap() > 0);
    assert_eq!(status.code(), Some(0), "a clean partial run");
    let _ = std::fs::remove_dir_all(&dir);
    stop(child);
}

/// `wsloop serve` on `port` of 127.0.0.1 (so a new one can take the old
/// one's place), once it listens.
fn serve_on(port: u16) -> ServerProcess {
    use std::io::BufRead;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsloop"));
    cmd.args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--workers", "2", "--metrics-addr", "off"]);
    cmd.args(["--shutdown-timeout", "3s"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let mut child = ServerProcess(cmd.spawn().expect("spawn wsloop serve"));
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("wsloop serve exited before listening").unwrap();
        if line.contains("listening on ws://") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    child
}

/// Starts `wsloop load` with `args` (and a JSON report) in the background;
/// the handle gives its [`Run`].
fn load_in_background(args: &[&str]) -> std::thread::JoinHandle<Run> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    std::thread::spawn(move || load(&args.iter().map(String::as_str).collect::<Vec<_>>()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn signal(child: &ServerProcess, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

#[test]
fn reconnect_brings_every_connection_back_across_restarts() {
    use nix::sys::signal::Signal;
    let port = free_port();
    let mut first = serve_on(port);
    let url = format!("ws://127.0.0.1:{port}/ws");
    let run = load_in_background(&[
        "--url",
        &url,
        "--scenario",
        "ping",
        "--interval",
        "200ms",
        "--conns",
        "100",
        "--duration",
        "10s",
        "--reconnect",
        "--reconnect-min",
        "50ms",
        "--reconnect-max",
        "500ms",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // A graceful stop (1001 to every connection), then a new server.
    signal(&first, Signal::SIGTERM);
    first.wait().unwrap();
    let mut second = serve_on(port);
    std::thread::sleep(std::time::Duration::from_secs(3));
    // A crash (no close frame: EOF or reset), then a new server.
    signal(&second, Signal::SIGKILL);
    second.wait().unwrap();
    let third = serve_on(port);
    let run = run.join().unwrap();
    assert_eq!(run.code, 0, "every connection came back: {}\n{}", run.stdout, run.stderr);
    let r = &run.report;
    assert_eq!(r["disconnects"]["1001"], 100, "{}", r["disconnects"]);
    assert_eq!(r["disconnects"]["1006"], 100, "{}", r["disconnects"]);
    assert_eq!(r["reconnect"]["reconnects"], 200, "{}", r["reconnect"]);
    assert_eq!(r["reconnect"]["never_back"], 0);
    assert_eq!(r["established"], 300, "100 connections, each back twice");
    assert_eq!(r["server_closed"].as_object().map(|m| m.len()), Some(0), "reconnected, not counted as errors");
    let gap = &r["reconnect"]["gap_ms"];
    assert_eq!(gap["count"], 200);
    assert!(gap["p50_ms"].as_f64().unwrap() > 0.0 && gap["max_ms"].as_f64() >= gap["p99_ms"].as_f64(), "{gap}");
    assert_eq!((r["mismatches"].as_u64(), r["pong_timeouts"].as_u64()), (Some(0), Some(0)));
    let per_second: u64 = r["timeline"].as_array().unwrap().iter().map(|s| s["reconnects"].as_u64().unwrap()).sum();
    assert!(per_second > 0 && per_second <= 200, "{per_second} reconnects in the timeline");
    assert!(run.stderr.contains("reconnects"), "progress lines show reconnects: {}", run.stderr);
    for line in ["disconnects", "by close code 1001: 100, 1006: 100", "gap (lost to open again)"] {
        assert!(run.stdout.contains(line), "summary has {line}: {}", run.stdout);
    }
    stop(third);
}

#[test]
fn without_reconnect_a_crash_counts_the_disconnects() {
    use nix::sys::signal::Signal;
    let port = free_port();
    let first = serve_on(port);
    let url = format!("ws://127.0.0.1:{port}/ws");
    let run = load_in_background(&["--url", &url, "--conns", "50", "--duration", "4s"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    signal(&first, Signal::SIGKILL);
    stop(first);
    let second = serve_on(port);
    let run = run.join().unwrap();
    assert_eq!(run.code, 1, "lost connections are errors without --reconnect: {}", run.stderr);
    let r = &run.report;
    assert_eq!(r["disconnects"]["1006"], 50, "{}", r["disconnects"]);
    let closed = &r["server_closed"];
    let lost = closed["dropped"].as_u64().unwrap_or(0) + closed["reset"].as_u64().unwrap_or(0);
    assert_eq!(lost, 50, "counted as before: {closed}");
    assert!(r["reconnect"].is_null());
    assert!(run.stdout.contains("by close code 1006: 50"), "{}", run.stdout);
    stop(second);
}

/// A server that upgrades every connection, ends each of the first
/// `first` with close 1012 and `reason` once all of them are open, and
/// holds every later one until the client leaves.
fn restarting_server(first: usize, reason: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let opened = std::sync::Arc::new(std::sync::Barrier::new(first));
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut s) = stream else { continue };
            let opened = opened.clone();
            std::thread::spawn(move || {
                if !accept_upgrade(&mut s) {
                    return;
                }
                if i < first {
                    opened.wait();
                    let mut frame = vec![0x88, (2 + reason.len()) as u8];
                    frame.extend_from_slice(&1012u16.to_be_bytes());
                    frame.extend_from_slice(reason.as_bytes());
                    let _ = s.write_all(&frame);
                }
                let mut buf = [0u8; 1024];
                while s.read(&mut buf).is_ok_and(|n| n > 0) {}
            });
        }
    });
    addr
}

/// Reads an upgrade request off `s` and answers it with a 101.
fn accept_upgrade(s: &mut std::net::TcpStream) -> bool {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    while let Ok(n) = s.read(&mut buf[len..]) {
        if n == 0 {
            return false;
        }
        len += n;
        let mut scanned = 0;
        let cfg = wsloop::ws::HandshakeConfig::default();
        if let Ok(Some(req)) = wsloop::ws::handshake::parse_request(&buf[..len], &mut scanned, &cfg) {
            let mut reply = Vec::new();
            wsloop::ws::handshake::write_accept(&mut reply, &req);
            return s.write_all(&reply).is_ok();
        }
    }
    false
}

#[test]
fn reconnect_waits_for_the_servers_hint() {
    let addr = restarting_server(20, "service restart; reconnect in 700 ms");
    let url = format!("ws://{addr}/ws");
    let run = load(&["--url", &url, "--conns", "20", "--duration", "3s", "--reconnect", "--reconnect-min", "50ms"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = &run.report;
    assert_eq!(r["disconnects"]["1012"], 20, "{}", r["disconnects"]);
    assert_eq!((r["reconnect"]["reconnects"].as_u64(), r["reconnect"]["never_back"].as_u64()), (Some(20), Some(0)));
    // Every client waited what the server asked (its own jitter on top).
    let gap = &r["reconnect"]["gap_ms"];
    let least = wsloop::load::report::Latency::to_hist(&serde_json::from_value(r["reconnect"]["gap"].clone()).unwrap());
    assert!(least.min() >= 700_000, "{gap}");
}

#[test]
fn a_hint_past_reconnect_max_is_cut_to_it_and_children_merge_the_figures() {
    // A hint of 11 days: without the bound the clients would never be back.
    let addr = restarting_server(40, "service restart; reconnect in 999999999 ms");
    let url = format!("ws://{addr}/ws");
    let run = load(&[
        "--url",
        &url,
        "--conns",
        "40",
        "--duration",
        "3s",
        "--reconnect",
        "--reconnect-max",
        "300ms",
        "--processes",
        "2",
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = &run.report;
    assert_eq!(r["processes"], 2);
    assert_eq!(r["disconnects"]["1012"], 40, "{}", r["disconnects"]);
    assert_eq!((r["reconnect"]["reconnects"].as_u64(), r["reconnect"]["never_back"].as_u64()), (Some(40), Some(0)));
    let gap = &r["reconnect"]["gap_ms"];
    assert_eq!(gap["count"], 40, "{gap}");
    assert!(gap["max_ms"].as_f64().unwrap() < 2000.0, "the hint was cut to --reconnect-max: {gap}");
}
