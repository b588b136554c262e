//! A server gives its peak's memory back after a ramp-down
//! (`--release-memory-after`), through the binary: RSS returns near its
//! baseline after each of two crowds, and the loop counts each release once.

mod common;

use std::time::Duration;

use common::*;

/// Connections per crowd: enough that what they leave behind (slab, pooled
/// buffers, the heap) stands well above RSS's noise.
const CROWD: usize = 12_000;

fn releases(metrics: std::net::SocketAddr) -> f64 {
    sample(&http_get(metrics, "/metrics").1, "wsloop_memory_releases_total").unwrap_or(-1.0)
}

#[test]
fn memory_returns_near_the_baseline_after_each_ramp_down() {
    // Two loops (the helper's default): each releases once per crowd.
    const LOOPS: f64 = 2.0;
    let args = ["--release-memory-after", "1s"];
    let (child, addr, metrics) = spawn_binary_with_metrics(&args, None);
    let pid = child.id();
    // Warm up what every server holds whatever its load (the first
    // handshake's allocations, the metrics thread's first scrape).
    for _ in 0..10 {
        drop(RawClient::connect(addr));
    }
    assert!(eventually(Duration::from_secs(5), || open_connections(&http_get(metrics, "/metrics").1) == 0.0));
    let baseline = rss_of(pid);
    assert_eq!(releases(metrics), 0.0, "a loop that never held a crowd releases nothing");

    for crowd in 1..=2 {
        let clients: Vec<RawClient> = (0..CROWD).map(|_| RawClient::connect(addr)).collect();
        assert!(
            eventually(Duration::from_secs(10), || open_connections(&http_get(metrics, "/metrics").1) == CROWD as f64)
        );
        let peak = rss_of(pid);
        assert!(peak > baseline + 1_000_000, "crowd {crowd}: {CROWD} connections grew RSS only {baseline} -> {peak}");
        assert_eq!(releases(metrics), (crowd - 1) as f64 * LOOPS, "crowd {crowd}: released while busy");
        drop(clients);
        assert!(
            eventually(Duration::from_secs(20), || releases(metrics) == crowd as f64 * LOOPS),
            "crowd {crowd}: no release after the ramp-down"
        );
        let after = rss_of(pid);
        // Less than half of what the crowd added stays (epoll keeps ~5 %;
        // io_uring also the receive-buffer pages the kernel wrote, ~30 %).
        // Without the release all of it stays, and more.
        assert!(
            after < baseline + (peak - baseline) / 2,
            "crowd {crowd}: RSS baseline {baseline}, peak {peak}, after {after}"
        );
    }
    // Once released, a quiet loop does not release again and again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(releases(metrics), 2.0 * LOOPS);
    drop(child);
}
