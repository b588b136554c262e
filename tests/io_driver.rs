//! `--io auto|epoll|uring` through the binary: each driver serves and says
//! so in its log and its metrics; where the kernel refuses io_uring
//! (`kernel.io_uring_disabled = 2`, set here for a moment when this runs as
//! root) `auto` falls back to epoll with the reason, `uring` is a one-line
//! error, and `wsloop doctor` tells which driver `auto` would take.

mod common;

use std::process::Command;
use std::sync::Mutex;

use common::*;

/// The tests here take turns: one of them turns io_uring off host-wide.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Serves an echo through the binary with `--io io`; returns its metrics.
fn echo_through(io: &str) -> String {
    let (_server, addr, metrics, log) = spawn_binary_with_log(&["--io", io], None);
    let chosen = format!("I/O driver: {io} (asked for (--io {io}))");
    assert!(log.iter().any(|l| l.ends_with(&chosen)), "{log:?}");
    let mut ws = tung_connect(addr);
    ws.send(tungstenite::Message::text("over ".to_string() + io)).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("over ".to_string() + io));
    let (status, body) = http_get(metrics, "/metrics");
    assert_eq!(status, 200);
    body
}

#[test]
fn each_driver_serves_and_the_metrics_say_which() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let body = echo_through("epoll");
    assert_eq!(sample(&body, "wsloop_io_driver{driver=\"epoll\"}"), Some(2.0));
    assert_eq!(sample(&body, "wsloop_io_driver{driver=\"uring\"}"), Some(0.0));
    assert_eq!(sample(&body, "wsloop_uring_buffers"), Some(0.0));
    if wsloop::server::driver::probe().is_err() {
        eprintln!("io_uring is unavailable here: only epoll checked");
        return;
    }
    let body = echo_through("uring");
    assert_eq!(sample(&body, "wsloop_io_driver{driver=\"uring\"}"), Some(2.0));
    assert_eq!(sample(&body, "wsloop_io_driver{driver=\"epoll\"}"), Some(0.0));
    // Each loop's buffer ring starts with its first buffers.
    assert!(sample(&body, "wsloop_uring_buffers").unwrap() >= 2.0 * wsloop::server::driver::FIRST_BUFFERS as f64);
}

/// Sets `kernel.io_uring_disabled` and puts the old value back when dropped.
struct Disabled(String);

const SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

impl Disabled {
    fn set(value: &str) -> Option<Disabled> {
        let old = std::fs::read_to_string(SYSCTL).ok()?;
        std::fs::write(SYSCTL, value).ok()?;
        Some(Disabled(old.trim().to_string()))
    }
}

impl Drop for Disabled {
    fn drop(&mut self) {
        let _ = std::fs::write(SYSCTL, &self.0);
    }
}

#[test]
fn where_the_kernel_refuses_io_uring_auto_falls_back_and_uring_is_an_error() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_disabled) = Disabled::set("2") else {
        eprintln!("skipped: {SYSCTL} is not writable here (not root?)");
        return;
    };
    let wsloop = env!("CARGO_BIN_EXE_wsloop");
    // Forced: one line naming the flag and the reason, and a failure status.
    let out = Command::new(wsloop)
        .args(["serve", "--io", "uring", "--addr", "127.0.0.1:0", "--metrics-addr", "off"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let errors: Vec<&str> = stderr.lines().filter(|l| !l.contains(" INFO ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("--io uring") && errors[0].contains("io_uring_disabled"), "{stderr}");
    // The same through the environment variable.
    let out = Command::new(wsloop)
        .args(["serve", "--addr", "127.0.0.1:0", "--metrics-addr", "off"])
        .env("WSLOOP_IO", "uring")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--io uring"));
    // auto: epoll, and the log says why; it serves.
    let (_server, addr, metrics, log) = spawn_binary_with_log(&["--io", "auto"], None);
    let why = "I/O driver: epoll (io_uring is unavailable: kernel.io_uring_disabled = 2)";
    assert!(log.iter().any(|l| l.ends_with(why)), "{log:?}");
    let mut ws = tung_connect(addr);
    ws.send(tungstenite::Message::text("still here")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("still here"));
    let (_, body) = http_get(metrics, "/metrics");
    assert_eq!(sample(&body, "wsloop_io_driver{driver=\"epoll\"}"), Some(2.0));
    let doctor = Command::new(wsloop).args(["doctor", "--target-conns", "10"]).output().unwrap();
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        report.contains("I/O driver (--io auto): epoll (io_uring is unavailable: kernel.io_uring_disabled = 2)"),
        "{report}"
    );
}

#[test]
fn doctor_names_the_driver_auto_takes() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_wsloop")).args(["doctor", "--target-conns", "10"]).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let line = report.lines().find(|l| l.starts_with("I/O driver (--io auto): ")).expect(&report);
    match wsloop::server::driver::probe() {
        Ok(()) => assert!(line.contains(": uring ("), "{line}"),
        Err(e) => assert!(line.contains(&e.0), "{line}"),
    }
}

#[test]
fn a_burst_on_a_thousand_connections_loses_nothing_on_io_uring() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if wsloop::server::driver::probe().is_err() {
        eprintln!("skipped: io_uring is unavailable here");
        return;
    }
    // One loop and a ring of 2 buffers: a burst completes more receives in
    // one pass than that, so the ring runs dry (-ENOBUFS): the receive is
    // armed again, the ring grows, and nothing is lost.
    let cfg = wsloop::server::ServerConfig {
        io: wsloop::server::driver::IoChoice::Uring,
        uring_buffers: 2,
        ..test_config(1)
    };
    let server = start_echo(cfg);
    let addr = server.local_addr();
    let mut clients: Vec<RawClient> = (0..1000).map(|_| RawClient::connect(addr)).collect();
    let payload = |i: usize| format!("{i:04}").repeat(256).into_bytes();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_frame(true, wsloop::ws::frame::opcode::BINARY, &payload(i));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let echo = c.read_frame().unwrap_or_else(|e| panic!("echo {i}: {e}"));
        assert_eq!(echo.payload, payload(i), "echo {i}");
    }
    let stats = &server.stats()[0];
    assert_eq!(stats.uring.get(), 1);
    assert_eq!(stats.messages_received.get(), 1000);
    assert_eq!(stats.uring_cq_overflow.get(), 0);
    let (dry, buffers) = (stats.uring_enobufs.get(), stats.uring_buffers.get());
    eprintln!("the ring ran dry {dry} times and holds {buffers} buffers");
    assert!(dry > 0, "1,000 receives in a few passes never found 2 buffers short");
    assert!(buffers > 2, "a dry ring grows");
}
