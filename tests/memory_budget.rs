//! A memory budget no client can break: hostile clients against the real
//! binary, on the I/O driver under test (`WSLOOP_IO`), with the server's
//! RSS read from /proc. Each test also keeps a polite client beside the
//! hostile ones and checks that it is served in full.

mod common;

use std::time::{Duration, Instant};

use common::*;
use wsloop::ws::frame::opcode;

/// The driver flag for the binary, from `WSLOOP_IO` (the suite's switch).
fn io_flag() -> String {
    std::env::var("WSLOOP_IO").unwrap_or_else(|_| "auto".into())
}

/// The `wsloop serve` arguments common to these tests, then `extra`.
fn serve_args<'a>(io: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--io", io, "--pool-size", "8"];
    args.extend_from_slice(extra);
    args
}

/// A counter (summed over its labels matching `filter`) from `/metrics`.
fn metric(metrics: std::net::SocketAddr, series: &str) -> f64 {
    let (_, body) = http_get(metrics, "/metrics");
    sample(&body, series).unwrap_or(0.0)
}

/// The RSS once it has settled (three samples 100 ms apart within 1 MiB),
/// and the peak seen while waiting; at most 5 s.
fn settled_rss(pid: u32) -> (u64, u64) {
    let mut samples = vec![rss_of(pid)];
    while samples.len() < 50 {
        std::thread::sleep(Duration::from_millis(100));
        samples.push(rss_of(pid));
        let last = &samples[samples.len() - 3.min(samples.len())..];
        if last.len() == 3 && last.iter().max().unwrap() - last.iter().min().unwrap() < 1 << 20 {
            break;
        }
    }
    (*samples.last().unwrap(), *samples.iter().max().unwrap())
}

/// A member of `room` with a 4 KiB receive buffer that never reads again.
fn stalled_member(addr: std::net::SocketAddr, room: &str) -> RawClient {
    let mut c = RawClient::connect_with_rcvbuf(addr, 4096);
    c.send_frame(true, opcode::TEXT, format!(r#"{{"type":"join","room":"{room}"}}"#).as_bytes());
    let reply = c.read_frame().unwrap();
    assert_eq!(reply.payload, format!(r#"{{"type":"joined","room":"{room}"}}"#).as_bytes());
    c
}

/// A member that reads every frame and returns the text messages' sizes.
fn reading_member(addr: std::net::SocketAddr, room: &str, messages: usize) -> std::thread::JoinHandle<Vec<usize>> {
    let mut c = RawClient::connect(addr);
    c.send_frame(true, opcode::TEXT, format!(r#"{{"type":"join","room":"{room}"}}"#).as_bytes());
    assert_eq!(c.read_frame().unwrap().opcode, opcode::TEXT);
    c.stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    std::thread::spawn(move || {
        let mut sizes = Vec::new();
        while sizes.len() < messages {
            let f = c.read_frame().expect("a reader gets every publish");
            if f.opcode == opcode::TEXT {
                sizes.push(f.payload.len());
            }
        }
        sizes
    })
}

#[test]
fn one_large_publish_to_forty_stalled_members_costs_one_frame_not_forty() {
    let io = io_flag();
    let message = 16 << 20;
    let (mut child, addr, metrics) = spawn_binary_with_metrics(
        &serve_args(
            &io,
            &[
                "--memory-limit",
                "256MiB",
                "--send-timeout",
                "1s",
                "--close-timeout",
                "1s",
                "--max-publish-size",
                "32MiB",
            ],
        ),
        None,
    );
    let stalled: Vec<_> = (0..40).map(|_| stalled_member(addr, "big")).collect();
    let readers: Vec<_> = (0..2).map(|_| reading_member(addr, "big", 1)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let (before, _) = settled_rss(child.id());
    // One publish of a 16 MiB string; the publisher reads its own copy.
    let mut publisher = RawClient::connect(addr);
    publisher.stream.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let data = "x".repeat(message);
    let publish = format!(r#"{{"type":"publish","room":"big","data":"{data}","echo":false}}"#);
    drop(data);
    // In 4 MiB fragments: a frame may be 16 MiB at most.
    let chunks: Vec<_> = publish.as_bytes().chunks(4 << 20).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let op = if i == 0 { opcode::TEXT } else { opcode::CONTINUATION };
        publisher.send_frame(i + 1 == chunks.len(), op, chunk);
    }
    let started = Instant::now();
    for r in readers {
        let sizes = r.join().unwrap();
        assert_eq!(sizes.len(), 1);
        assert!(sizes[0] > message, "the reader got the whole message: {} B", sizes[0]);
    }
    let (held, peak) = settled_rss(child.id());
    let (held, peak) = (held.saturating_sub(before), peak.saturating_sub(before));
    eprintln!(
        "RSS growth for one {message} B publish to 40 stalled + 2 reading members ({io}): held {held} B, peak {peak} B"
    );
    // The publisher's message, its frame, and slack: at most ~3 copies, not 40.
    let bound = (3 * message + (8 << 20)) as u64;
    assert!(peak < bound, "peak growth {peak} B over {bound} B");
    // Every stalled member is cut off as a slow consumer after the send
    // timeout (and the close timeout that follows its 1008), never reading.
    let slow = "wsloop_connections_closed_total{reason=\"slow_consumer\"}";
    assert!(
        eventually(Duration::from_secs(20), || metric(metrics, slow) >= 40.0),
        "slow-consumer closes: {} after {:?}",
        metric(metrics, slow),
        started.elapsed()
    );
    // Their backlogs are gone: the frame is freed once the last one closes.
    let (after, _) = settled_rss(child.id());
    eprintln!("RSS after the stalled members were closed: +{} B", after.saturating_sub(before));
    assert!(after.saturating_sub(before) < (2 * message) as u64, "freed: +{} B", after.saturating_sub(before));
    // The publisher is still served.
    publisher.send_frame(true, opcode::TEXT, br#"{"type":"ping","payload":1}"#);
    let pong = publisher.read_frame().expect("the publisher is served");
    assert!(pong.payload.starts_with(br#"{"type":"pong""#), "{:?}", String::from_utf8_lossy(&pong.payload));
    drop(stalled);
    let _ = child.kill();
}

/// Sends `total` bytes of one fragmented binary message in 4 MiB
/// fragments and never the last one; returns what the server said at the
/// end (its close code, if it sent one).
fn unfinished_message(addr: std::net::SocketAddr, total: usize) -> std::thread::JoinHandle<Option<u16>> {
    let mut c = RawClient::connect(addr);
    c.stream.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    c.stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    std::thread::spawn(move || {
        let fragment = vec![0x5au8; 4 << 20];
        let mut sent = 0;
        while sent < total {
            let op = if sent == 0 { opcode::BINARY } else { opcode::CONTINUATION };
            let mut frame = Vec::new();
            wsloop::ws::frame::write_frame(&mut frame, false, op, &fragment, Some([1, 2, 3, 4]));
            if std::io::Write::write_all(&mut c.stream, &frame).is_err() {
                break;
            }
            sent += fragment.len();
        }
        // Whatever the server said before it closed.
        loop {
            match c.read_frame() {
                Ok(f) if f.opcode == opcode::CLOSE => return f.close_code(),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    })
}

/// A client that echoes a small message every 50 ms until `stop`; returns
/// how many echoes came back, all intact.
fn polite_echoer(
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    let mut c = RawClient::connect(addr);
    c.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::thread::spawn(move || {
        let mut echoed = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let text = format!("polite {echoed}");
            c.send_frame(true, opcode::TEXT, text.as_bytes());
            let f = c.read_frame().expect("the polite client is served");
            assert_eq!(f.payload, text.as_bytes());
            echoed += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        echoed
    })
}

#[test]
fn unfinished_messages_are_held_under_the_budget_and_their_holders_shed() {
    let io = io_flag();
    let limit = 256u64 << 20;
    let (mut child, addr, metrics) = spawn_binary_with_metrics(
        &serve_args(&io, &["--memory-limit", "256MiB", "--send-timeout", "1s", "--close-timeout", "2s"]),
        None,
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let polite = polite_echoer(addr, stop.clone());
    let attackers: Vec<_> = (0..8).map(|_| unfinished_message(addr, 56 << 20)).collect();
    // Past the soft mark a newcomer is refused before its upgrade.
    let refused_newcomer = eventually(Duration::from_secs(30), || {
        if metric(metrics, "wsloop_memory_budget_level") < 1.0 {
            return false;
        }
        let mut c = RawClient::connect_tcp(addr);
        c.send_raw(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
        c.read_frame_or_reply_starts_with("HTTP/1.1 503")
    });
    let mut peak = 0;
    let mut codes = Vec::new();
    for a in attackers {
        while !a.is_finished() {
            peak = peak.max(rss_of(child.id()));
            std::thread::sleep(Duration::from_millis(20));
        }
        codes.push(a.join().unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let echoed = polite.join().expect("the polite client was served throughout");
    eprintln!(
        "8 x 56 MiB unfinished ({io}): peak RSS {} MiB under a {} MiB budget; close codes {codes:?}; polite echoes {echoed}",
        peak >> 20,
        limit >> 20
    );
    assert!(peak < limit, "peak RSS {peak} B over the {limit} B budget");
    assert!(refused_newcomer, "a newcomer past the soft mark got 503");
    assert!(codes.iter().filter(|c| **c == Some(1009)).count() >= 1, "shed holders are told 1009: {codes:?}");
    // The shed clients hung up just now: each close is counted once the server reads its EOF.
    let shed = metric(metrics, "wsloop_memory_budget_shed_total");
    let closed = || metric(metrics, "wsloop_connections_closed_total{reason=\"memory_budget\"}");
    assert!(eventually(Duration::from_secs(5), || closed() >= shed), "shed {shed}, closed {}", closed());
    assert!(shed >= 1.0);
    assert!(metric(metrics, "wsloop_handshake_failures_total{reason=\"memory_budget\"}") >= 1.0);
    assert!(echoed > 0);
    let _ = child.kill();
}
