//! The slow-consumer rule through the real server: a peer that keeps
//! reading is never cut off, whatever the size of a legal message or how
//! many it pipelines; a peer that stops reading is cut off (1008) after the
//! send timeout, with the server's memory bounded by the backlog cap plus
//! one message.

mod common;

use std::time::Duration;

use common::*;
use wsloop::server::{CloseReason, ServerConfig, ServerHandle};
use wsloop::ws::frame::opcode;

fn total(server: &ServerHandle, f: impl Fn(&wsloop::server::LoopStats) -> u64) -> u64 {
    server.stats().iter().map(|s| f(s)).sum()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn messages_of_16_and_64_mib_echo_to_a_reader_past_a_1_mib_cap() {
    // The defaults: 1 MiB backlog cap, 16 MiB frames, 64 MiB messages
    // (Autobahn 9.1.6 / 9.2.6 are the 16 MiB cases).
    let server = start_echo(test_config(2));
    let mut c = RawClient::connect(server.local_addr());
    let text: Vec<u8> = (0..16 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    c.send_frame(true, opcode::TEXT, &text);
    let echo = c.read_frame().unwrap();
    assert_eq!((echo.opcode, echo.payload.len()), (opcode::TEXT, text.len()));
    assert!(echo.payload == text, "16 MiB text echo differs");
    // 64 MiB as four 16 MiB fragments; the echo is one 64 MiB frame.
    let data = pattern(64 << 20, 7);
    for (i, part) in data.chunks(16 << 20).enumerate() {
        let op = if i == 0 { opcode::BINARY } else { opcode::CONTINUATION };
        c.send_frame(i == 3, op, part);
    }
    let echo = c.read_frame().unwrap();
    assert_eq!((echo.opcode, echo.payload.len()), (opcode::BINARY, data.len()));
    assert!(echo.payload == data, "64 MiB binary echo differs");
    c.send_frame(true, opcode::CLOSE, &1000u16.to_be_bytes());
    assert_eq!(c.read_frame().unwrap().close_code(), Some(1000));
    assert!(c.is_closed_by_server());
    assert!(eventually(Duration::from_secs(5), || total(&server, |s| s.closed_by(CloseReason::Normal)) == 1));
    assert_eq!(total(&server, |s| s.closed_by(CloseReason::SlowConsumer)), 0);
}

#[test]
fn a_pipelining_slow_reader_is_slowed_down_not_cut_off() {
    // 16 echoes of 1 MiB requested at once against a 64 KiB cap and a 1 s
    // send timeout, read in small sips: the server stops reading while its
    // backlog is over the cap and resumes as the reader catches up.
    let cfg = ServerConfig { max_backlog: 64 * 1024, send_timeout: Duration::from_secs(1), ..test_config(1) };
    let server = start_echo(cfg);
    let addr = server.local_addr();
    let bg = Background::start(addr, 100);
    let mut c = RawClient::connect_with_rcvbuf(addr, 64 * 1024);
    let mut writer = c.stream.try_clone().unwrap();
    let messages: Vec<Vec<u8>> = (0..16).map(|i| pattern(1 << 20, i)).collect();
    let sent = messages.clone();
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        for m in &sent {
            let mut frame = Vec::new();
            wsloop::ws::frame::write_frame(&mut frame, true, opcode::BINARY, m, Some([1, 2, 3, 4]));
            writer.write_all(&frame).unwrap();
        }
    });
    for (i, m) in messages.iter().enumerate() {
        std::thread::sleep(Duration::from_millis(20));
        let echo = c.read_frame().unwrap_or_else(|e| panic!("echo {i}: {e}"));
        assert_eq!(echo.opcode, opcode::BINARY, "echo {i}");
        assert!(echo.payload == *m, "echo {i} differs");
    }
    sender.join().unwrap();
    bg.finish();
    assert_eq!(total(&server, |s| s.closed_by(CloseReason::SlowConsumer)), 0);
}

#[test]
fn a_client_that_never_reads_is_cut_off_with_memory_bounded() {
    // The binary, so that its RSS is its own. A short send timeout; a long
    // close timeout, so the drain-only phase outlasts a slow test machine.
    let cap = 256 * 1024;
    let message = 4 << 20;
    let (mut child, addr, metrics) = spawn_binary_with_metrics(
        // A small pool: up to 256 idle 16 KiB buffers per loop (8 MiB) would
        // otherwise fill while the background clients warm up, and count here.
        &["--max-backlog", "256KiB", "--send-timeout", "500ms", "--close-timeout", "60s", "--pool-size", "8"],
        None,
    );
    let bg = Background::start(addr, 100);
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = rss_of(child.id());
    // A small receive buffer, so the echoes back up in the server quickly.
    let mut c = RawClient::connect_with_rcvbuf(addr, 64 * 1024);
    c.stream.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut frame = Vec::new();
    wsloop::ws::frame::write_frame(&mut frame, true, opcode::BINARY, &vec![7u8; message], Some([9, 9, 9, 9]));
    // 24 MiB of echo requests, never reading an echo. The server stops
    // reading once its backlog passes the cap, the send timeout cuts the
    // connection off, and from then on it drains (discards) our input.
    let mut written = 0;
    let mut peak = rss_before;
    for _ in 0..6 {
        std::io::Write::write_all(&mut c.stream, &frame).expect("the server drains a cut-off peer's input");
        written += 1;
        peak = peak.max(rss_of(child.id()));
    }
    // Held: what stays once the connection is cut off and draining, read
    // once the RSS has settled (three samples 100 ms apart within 256 KiB:
    // on a loaded machine the kernel can take all our writes before the
    // server has even paused, and a message being echoed is a transient).
    let mut samples = vec![rss_of(child.id())];
    while samples.len() < 50 {
        std::thread::sleep(Duration::from_millis(100));
        samples.push(rss_of(child.id()));
        let last = &samples[samples.len().saturating_sub(3)..];
        if last.len() == 3 && last.iter().max().unwrap() - last.iter().min().unwrap() < 256 << 10 {
            break;
        }
    }
    let held = *samples.last().unwrap();
    peak = samples.iter().fold(peak, |p, s| p.max(*s));
    let (peak, held) = (peak.saturating_sub(rss_before), held.saturating_sub(rss_before));
    eprintln!("server RSS growth for {written} requests of {message} B: held {held} B, peak {peak} B");
    // Held memory is bounded by the cap and one message (plus 4 MiB of
    // allocator and kernel slack), not by the 24 MiB requested. While one
    // message is echoed it exists up to three times for a moment (read,
    // corked, queued).
    let slack = 4 << 20;
    assert!(held < (cap + message + slack) as u64, "held {held} B");
    assert!(peak < (cap + 3 * message + slack) as u64, "peak {peak} B");
    // Reading now: the echoes that were queued, then close 1008, then EOF.
    let mut code = None;
    let mut echoes = 0;
    while let Ok(f) = c.read_frame() {
        if f.opcode == opcode::CLOSE {
            code = f.close_code();
            break;
        }
        echoes += 1;
    }
    assert_eq!(code, Some(1008), "after {echoes} echoes");
    assert!(echoes < written, "{echoes} of {written} echoed: the server kept reading");
    assert!(c.is_closed_by_server());
    bg.finish();
    drop(c);
    let slow = || {
        let (_, m) = http_get(metrics, "/metrics");
        sample(&m, "wsloop_connections_closed_total{reason=\"slow_consumer\"}")
    };
    assert!(eventually(Duration::from_secs(5), || slow() == Some(1.0)), "{:?}", slow());
    child.kill().unwrap();
    child.wait().unwrap();
}
