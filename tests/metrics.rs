//! The metrics thread against a live server: figures move by the right
//! amounts, the exposition passes the real parser (promtool), the scraper
//! cannot hurt it, and the dashboard only queries metrics that exist.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use tungstenite::Message as TMsg;

#[test]
fn figures_move_by_the_right_amounts() {
    let server = start_echo(test_config(2));
    let metrics = start_metrics(&server);
    let (status, before) = http_get(metrics.local_addr(), "/metrics");
    assert_eq!(status, 200);
    assert_eq!(sample(&before, "wsloop_connections_accepted_total"), Some(0.0));
    let mut clients: Vec<Tung> = (0..10).map(|_| tung_connect(server.local_addr())).collect();
    assert!(eventually(Duration::from_secs(5), || {
        let (_, m) = http_get(metrics.local_addr(), "/metrics");
        sample(&m, "wsloop_connections{loop=\"0\"}").unwrap() + sample(&m, "wsloop_connections{loop=\"1\"}").unwrap()
            == 10.0
    }));
    for ws in clients.iter_mut() {
        for i in 0..3 {
            ws.send(TMsg::text(format!("m{i}"))).unwrap();
            ws.read().unwrap();
        }
        ws.close(None).unwrap();
        while ws.read().is_ok() {}
    }
    drop(clients);
    assert!(eventually(Duration::from_secs(5), || server.connections() == 0));
    let (_, m) = http_get(metrics.local_addr(), "/metrics");
    assert_eq!(sample(&m, "wsloop_connections_accepted_total"), Some(10.0));
    assert_eq!(sample(&m, "wsloop_connections_closed_total{reason=\"normal\"}"), Some(10.0));
    assert_eq!(sample(&m, "wsloop_messages_received_total"), Some(30.0));
    assert_eq!(sample(&m, "wsloop_messages_sent_total"), Some(30.0));
    assert_eq!(sample(&m, "wsloop_connections{loop=\"0\"}"), Some(0.0));
    assert_eq!(sample(&m, "wsloop_connections{loop=\"1\"}"), Some(0.0));
    assert!(sample(&m, "wsloop_bytes_received_total").unwrap() > 0.0);
    assert!(sample(&m, "wsloop_loop_iteration_seconds_count{loop=\"0\"}").unwrap() > 0.0);
    assert!(sample(&m, "process_resident_memory_bytes").unwrap() > 0.0);
    assert!(sample(&m, "process_open_fds").unwrap() > 0.0);
    assert!(sample(&m, "wsloop_kernel_tcp_memory_bytes").is_some());
    // Anonymous memory is part of RSS, never more.
    let anon = sample(&m, "wsloop_resident_anon_bytes").unwrap();
    assert!(anon > 0.0 && anon < sample(&m, "process_resident_memory_bytes").unwrap());
    // A refused handshake shows by reason.
    let mut c = RawClient::connect_tcp(server.local_addr());
    c.send_raw(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    c.read_to_end();
    let (_, m) = http_get(metrics.local_addr(), "/metrics");
    assert_eq!(sample(&m, "wsloop_handshake_failures_total{reason=\"path\"}"), Some(1.0));
}

#[test]
fn healthz_and_other_paths() {
    let server = start_echo(test_config(1));
    let metrics = start_metrics(&server);
    assert_eq!(http_get(metrics.local_addr(), "/healthz").0, 200);
    assert_eq!(http_get(metrics.local_addr(), "/nothing").0, 404);
    let mut s = TcpStream::connect(metrics.local_addr()).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000)).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
    server.shutdown();
    assert!(eventually(Duration::from_secs(2), || http_get(metrics.local_addr(), "/healthz").0 == 503));
}

#[test]
fn silent_and_parallel_scrapers_do_not_block_it() {
    let server = start_echo(test_config(1));
    let metrics = start_metrics(&server);
    // Connections that never send a request, more than the thread serves.
    let idle: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(metrics.local_addr()).unwrap()).collect();
    // The event loops are untouched: echo still works at once.
    let mut ws = tung_connect(server.local_addr());
    ws.send(TMsg::text("alive")).unwrap();
    assert_eq!(ws.read().unwrap(), TMsg::text("alive"));
    // A real scrape gets through at once: the silent ones hold slots of
    // their own (see also the 1,000-connection tests below).
    let started = std::time::Instant::now();
    assert!(eventually(Duration::from_secs(10), || {
        let Ok(mut s) = TcpStream::connect(metrics.local_addr()) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply.starts_with("HTTP/1.1 200")
    }));
    assert!(started.elapsed() < Duration::from_secs(8));
    drop(idle);
}

#[test]
fn promtool_accepts_a_live_scrape() {
    let Ok(output) = std::process::Command::new("promtool").arg("--version").output() else {
        assert!(std::env::var_os("CI").is_none(), "CI must install promtool (apt: prometheus)");
        eprintln!("promtool not installed: skipped here (CI installs it)");
        return;
    };
    assert!(output.status.success());
    let server = start_echo(test_config(2));
    let metrics = start_metrics(&server);
    let mut ws = tung_connect(server.local_addr());
    ws.send(TMsg::text("x")).unwrap();
    ws.read().unwrap();
    let (_, body) = http_get(metrics.local_addr(), "/metrics");
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Metric names a PromQL expression refers to (identifiers that are not
/// functions, keywords, label names or `$variables`).
fn metric_names(expr: &str) -> Vec<String> {
    const NOT_METRICS: &[&str] = &[
        "sum",
        "by",
        "rate",
        "histogram_quantile",
        "clamp_min",
        "max",
        "le",
        "instance",
        "loop",
        "reason",
        "state",
        "kind",
        "job",
        "without",
        "on",
        "ignoring",
        "avg",
        "min",
        "count",
        "irate",
        "increase",
    ];
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c == '"' {
            // Skip string literals (label values, regexes).
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += 1;
            }
            i += 1;
        } else if c == '$' || c == '[' {
            // Skip $variables and [$range] selectors.
            while i < bytes.len() && !matches!(bytes[i], b' ' | b')' | b',' | b']') {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            if !NOT_METRICS.contains(&word) {
                names.push(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// A config whose Redis bridge can never connect: the server serves all
/// the same, and exposes the bridge's families (up = 0).
fn with_unreachable_redis(mut cfg: wsloop::server::ServerConfig) -> wsloop::server::ServerConfig {
    cfg.bridge = Some(wsloop::server::bridge::BridgeConfig::new("redis://127.0.0.1:1").unwrap());
    cfg
}

#[test]
fn dashboard_queries_only_metrics_the_server_exposes() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("dashboards/wsloop.json").unwrap()).expect("dashboard parses");
    let server = start_echo(with_unreachable_redis(test_config(1)));
    let metrics = start_metrics(&server);
    let (_, body) = http_get(metrics.local_addr(), "/metrics");
    let exposed: std::collections::HashSet<&str> =
        body.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 12);
    let mut checked = 0;
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "no metric in {expr}");
            for name in names {
                assert!(exposed.contains(name.as_str()), "panel {:?} queries {name}, not exposed", panel["title"]);
                checked += 1;
            }
        }
    }
    assert!(checked >= 15);
    assert_eq!(dashboard["templating"]["list"][0]["type"], "datasource");
}

#[test]
fn readme_documents_every_family_the_server_exposes() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let server = start_echo(with_unreachable_redis(test_config(1)));
    let metrics = start_metrics(&server);
    let (_, body) = http_get(metrics.local_addr(), "/metrics");
    let families: Vec<&str> =
        body.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    assert!(families.len() >= 18, "{families:?}");
    for family in families {
        assert!(readme.contains(&format!("`{family}")), "README's metrics table leaves out {family}");
    }
}

/// Raises this test process's open-file limit to its hard limit and checks
/// that `needed` descriptors fit (the server it spawns inherits it).
fn room_for_descriptors(needed: u64) {
    let (soft, hard) = wsloop::tune::rlimit::raise_nofile().expect("raise RLIMIT_NOFILE");
    assert!(soft >= needed, "this test needs {needed} open files; the hard limit is {hard}");
}

/// Opens `n` TCP connections to `addr` that never send a byte.
fn idle_connections(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("idle connection {i}: {e}"))).collect()
}

/// `GET /healthz`, timed: (status, how long the answer took).
fn timed_healthz(addr: std::net::SocketAddr) -> (u16, Duration) {
    let started = std::time::Instant::now();
    let (status, _) = http_get(addr, "/healthz");
    (status, started.elapsed())
}

#[test]
fn healthz_answers_while_a_thousand_idle_connections_are_held() {
    room_for_descriptors(4_000);
    let (_server, _, metrics) = spawn_binary_with_metrics(&[], None);
    let idle = idle_connections(metrics, 1_000);
    let (status, took) = timed_healthz(metrics);
    assert_eq!(status, 200);
    // A liveness bound: a health check must not wait behind idle sockets.
    assert!(took < Duration::from_secs(1), "/healthz took {took:?} behind 1,000 idle connections");
    // They were held, not refused: the port has slots for all of them.
    let (_, m) = http_get(metrics, "/metrics");
    assert!(sample(&m, "wsloop_metrics_http_connections").unwrap() >= 1_000.0, "{m}");
    assert_eq!(sample(&m, "wsloop_metrics_http_evicted_total{phase=\"head\"}"), Some(0.0));
    drop(idle);
}

#[test]
fn past_its_slots_the_port_closes_the_oldest_idle_connections() {
    use wsloop::metrics::http::MAX_CONNECTIONS;
    const MORE: usize = 200;
    room_for_descriptors(2 * (MAX_CONNECTIONS + MORE) as u64 + 1_000);
    let (_server, _, metrics) = spawn_binary_with_metrics(&[], None);
    let mut idle = idle_connections(metrics, MAX_CONNECTIONS + MORE);
    let (status, took) = timed_healthz(metrics);
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(1), "/healthz took {took:?} past the port's slots");
    // The newest are held; the oldest made room, and were counted.
    for s in &idle[idle.len() - 100..] {
        s.set_nonblocking(true).unwrap();
        let open = matches!((&*s).read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(open, "a connection among the newest was closed");
    }
    for (i, s) in idle[..MORE].iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert!(matches!(s.read(&mut [0u8; 1]), Ok(0) | Err(_)), "idle connection {i} of the oldest still open");
    }
    let (_, m) = http_get(metrics, "/metrics");
    let evicted = sample(&m, "wsloop_metrics_http_evicted_total{phase=\"head\"}").unwrap();
    assert!(evicted >= MORE as f64, "{evicted} evicted");
    assert_eq!(sample(&m, "wsloop_metrics_http_timeouts_total{phase=\"head\"}"), Some(0.0));
    assert!(sample(&m, "wsloop_metrics_http_connections").unwrap() <= MAX_CONNECTIONS as f64);
}

#[test]
fn a_slow_loris_is_closed_at_the_head_deadline() {
    use wsloop::metrics::http::HEAD_DEADLINE;
    let (_server, _, metrics) = spawn_binary_with_metrics(&[], None);
    let mut s = TcpStream::connect(metrics).unwrap();
    // Reading paces the dribble: one byte every 100 ms, as long as it is open.
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let started = std::time::Instant::now();
    let mut dribble = b"GET /healthz HTTP/1.1\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'a'));
    let closed = loop {
        let _ = s.write_all(&[*dribble.next().unwrap()]);
        match s.read(&mut [0u8; 256]) {
            Ok(0) => break true,
            Ok(_) => panic!("an unfinished head got a reply"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) if started.elapsed() > HEAD_DEADLINE + Duration::from_secs(5) => break false,
            Err(_) => {}
        }
    };
    let took = started.elapsed();
    assert!(closed, "a slow loris is still served {took:?} after it connected");
    assert!(took >= HEAD_DEADLINE, "closed after {took:?}, before the head deadline");
    // A liveness bound, not a benchmark: the deadline is not extended.
    assert!(took < HEAD_DEADLINE + Duration::from_secs(2), "closed only after {took:?}");
    let (_, m) = http_get(metrics, "/metrics");
    assert_eq!(sample(&m, "wsloop_metrics_http_timeouts_total{phase=\"head\"}"), Some(1.0));
    assert_eq!(http_get(metrics, "/healthz").0, 200);
}
