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
    let message: usize = std::env::var("MSG").map_or(16 << 20, |v| v.parse().unwrap());
    let (mut child, addr, metrics) = spawn_binary_with_metrics(
        &serve_args(&io, &["--send-timeout", "1s", "--close-timeout", "1s"]),
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
