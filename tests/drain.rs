//! Leaving without a reconnect storm, through the binary: a shutdown with
//! `--drain-period` closes its connections at a steady pace, in random
//! order, with 1012 and a reconnect hint, while `/healthz` says 503 from
//! the start; `--max-connection-age` asks old connections to leave the
//! same way, no faster than `--drain-rate`. On the driver `WSLOOP_IO`
//! names (the binary reads it too).
//!
//! Margins are wide on purpose (a shared 2-core box): what is asserted is
//! the shape (spread, never a burst), not a rate to the percent.

mod common;

use std::io::{ErrorKind, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use mio::{Events, Interest, Poll, Token};

/// How one client saw its connection end.
#[derive(Debug, Clone)]
struct Ending {
    /// When the close frame arrived.
    at: Instant,
    /// Its code (0: the connection ended without one).
    code: u16,
    /// Its reason text.
    reason: String,
}

/// Many upgraded connections, each recording when and how it was closed.
struct Fleet {
    poll: Poll,
    socks: Vec<mio::net::TcpStream>,
    /// When each began its upgrade.
    opened: Vec<Instant>,
    /// Bytes read so far from each (only a close frame is expected).
    bufs: Vec<Vec<u8>>,
    endings: Vec<Option<Ending>>,
}

impl Fleet {
    /// Opens and upgrades `n` connections to `addr`.
    fn open(addr: SocketAddr, n: usize) -> Fleet {
        let poll = Poll::new().unwrap();
        let mut fleet = Fleet { poll, socks: Vec::new(), opened: Vec::new(), bufs: Vec::new(), endings: vec![None; n] };
        for i in 0..n {
            // Before the upgrade: the server's clock for it starts later.
            fleet.opened.push(Instant::now());
            let stream = RawClient::connect(addr).stream;
            stream.set_nonblocking(true).unwrap();
            let mut sock = mio::net::TcpStream::from_std(stream);
            fleet.poll.registry().register(&mut sock, Token(i), Interest::READABLE).unwrap();
            fleet.socks.push(sock);
            fleet.bufs.push(Vec::new());
        }
        fleet
    }

    /// Connections still waiting for their close.
    fn open_count(&self) -> usize {
        self.endings.iter().filter(|e| e.is_none()).count()
    }

    /// Reads until every connection has ended or `within` passes.
    fn wait_for_endings(&mut self, within: Duration) {
        let until = Instant::now() + within;
        let mut events = Events::with_capacity(1024);
        while self.open_count() > 0 && Instant::now() < until {
            self.poll.poll(&mut events, Some(Duration::from_millis(50))).unwrap();
            for event in events.iter() {
                self.read(event.token().0);
            }
        }
    }

    /// Reads what connection `i` has; records its close frame (and hangs
    /// up, as a client does once told to leave) or its end.
    fn read(&mut self, i: usize) {
        let mut chunk = [0u8; 4096];
        let ended = loop {
            match self.socks[i].read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => self.bufs[i].extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                Err(_) => break true,
            }
        };
        // The close frame usually comes with the FIN behind it.
        self.parse_close(i);
        if ended {
            self.end(i, 0, String::new());
        }
    }

    /// Records the close frame connection `i` has read, if whole.
    fn parse_close(&mut self, i: usize) {
        let buf = &self.bufs[i];
        // A server frame is unmasked; a close with a short reason has a
        // one-byte length.
        if buf.len() >= 2 && buf.len() >= 2 + (buf[1] & 0x7f) as usize {
            let len = (buf[1] & 0x7f) as usize;
            let payload = &buf[2..2 + len];
            let code = if buf[0] == 0x88 && len >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 0 };
            let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned();
            self.end(i, code, reason);
        }
    }

    fn end(&mut self, i: usize, code: u16, reason: String) {
        if self.endings[i].is_none() {
            self.endings[i] = Some(Ending { at: Instant::now(), code, reason });
            let _ = self.poll.registry().deregister(&mut self.socks[i]);
            let _ = self.socks[i].shutdown(std::net::Shutdown::Both);
        }
    }

    /// Every connection's ending; panics naming those that did not end.
    fn endings(&self) -> Vec<Ending> {
        let left = self.open_count();
        assert_eq!(left, 0, "{left} of {} connections were never closed", self.endings.len());
        self.endings.iter().flatten().cloned().collect()
    }
}

/// The reconnect hint in a 1012's reason, in ms; panics on any other close.
fn hint_ms(ending: &Ending) -> u64 {
    assert_eq!(ending.code, 1012, "{ending:?}");
    let ms = ending
        .reason
        .strip_prefix("service restart; reconnect in ")
        .and_then(|rest| rest.strip_suffix(" ms"))
        .and_then(|ms| ms.parse().ok());
    ms.unwrap_or_else(|| panic!("no reconnect hint in {ending:?}"))
}

/// The most closes that fall in any one window of `width`.
fn densest(times: &[Instant], width: Duration) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let mut end = 0;
    let mut most = 0;
    for (start, t) in sorted.iter().enumerate() {
        while end < sorted.len() && sorted[end] < *t + width {
            end += 1;
        }
        most = most.max(end - start);
    }
    most
}

/// True if a new connection to `addr` is upgraded (101).
fn upgrades(addr: SocketAddr) -> bool {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let request = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 101")
}

/// Raises this process's open-file limit (the server it spawns inherits
/// it) and checks that `needed` fit.
fn room_for_descriptors(needed: u64) {
    let (soft, hard) = wsloop::tune::rlimit::raise_nofile().expect("raise RLIMIT_NOFILE");
    assert!(soft >= needed, "this test needs {needed} open files; the hard limit is {hard}");
}

fn sigterm(server: &ServerProcess) {
    // SAFETY: kill(2) on a child we started and have not reaped.
    assert_eq!(unsafe { libc::kill(server.id() as i32, libc::SIGTERM) }, 0);
}

/// Waits for the server process to exit; its exit status.
fn exit_within(server: &mut ServerProcess, within: Duration) -> std::process::ExitStatus {
    let until = Instant::now() + within;
    loop {
        if let Some(status) = server.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < until, "the server did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_paced_drain_of_2000_over_10_s_closes_about_200_a_second_with_1012_and_a_hint() {
    const N: usize = 2000;
    room_for_descriptors(2 * N as u64 + 200);
    let args = ["--drain-period", "10s", "--shutdown-timeout", "30s", "--max-conns", "5000"];
    let (mut server, addr, metrics) = spawn_binary_with_metrics(&args, None);
    let mut fleet = Fleet::open(addr, N);
    assert_eq!(http_get(metrics, "/healthz").0, 200);
    assert!(upgrades(addr), "a new connection is served before the drain");

    let began = Instant::now();
    sigterm(&server);
    // The balancer is told at once, before the drain is through.
    assert!(eventually(Duration::from_secs(2), || http_get(metrics, "/healthz").0 == 503), "healthz stays 200");
    assert!(!upgrades(addr), "a new connection was served during the drain");
    fleet.wait_for_endings(Duration::from_secs(3));
    let m = http_get(metrics, "/metrics").1;
    let remaining = sample(&m, "wsloop_drain_remaining").unwrap();
    let drained = sample(&m, "wsloop_drained_total{why=\"drain\"}").unwrap();
    assert!((200.0..1900.0).contains(&remaining), "3 s into a 10 s drain of 2000: {remaining} left");
    assert!((100.0..1800.0).contains(&drained), "3 s into a 10 s drain of 2000: {drained} asked");
    assert!(fleet.open_count() > 200, "3 s into a 10 s drain, {} of 2000 still open", fleet.open_count());

    fleet.wait_for_endings(Duration::from_secs(30));
    let endings = fleet.endings();
    let times: Vec<Instant> = endings.iter().map(|e| e.at).collect();
    let hints: Vec<u64> = endings.iter().map(hint_ms).collect();
    let first = *times.iter().min().unwrap();
    let last = *times.iter().max().unwrap();
    let busiest = densest(&times, Duration::from_secs(1));
    let burst = densest(&times, Duration::from_millis(250));
    eprintln!(
        "drain: first close {:?} after SIGTERM, last {:?}, busiest second {busiest} closes, busiest 250 ms {burst}",
        first - began,
        last - began
    );
    assert!(first - began < Duration::from_secs(2), "the drain starts at once: {:?}", first - began);
    assert!(last - first >= Duration::from_secs(8), "2000 closes over 10 s took only {:?}", last - first);
    assert!(busiest <= 2 * N / 10, "a burst: {busiest} closes in one second (pace 200/s)");
    // A loop that slept to its next timer tick (1 s) would close in bursts.
    assert!(burst <= 3 * N / 40, "a burst: {burst} closes in 250 ms (pace 50 per 250 ms)");
    assert!(hints.iter().all(|h| (500..=5000).contains(h)), "hints out of 0.5-5 s");
    let spread = hints.iter().max().unwrap() - hints.iter().min().unwrap();
    assert!(spread >= 2000, "hints barely jittered: spread {spread} ms");
    assert!(exit_within(&mut server, Duration::from_secs(30)).success());
}

#[test]
fn a_drain_in_random_order_not_the_order_of_arrival() {
    let (mut server, addr) = spawn_binary(&["--drain-period", "2s"], None);
    let mut fleet = Fleet::open(addr, 200);
    sigterm(&server);
    fleet.wait_for_endings(Duration::from_secs(20));
    let endings = fleet.endings();
    // Of the pairs (earlier arrival, later arrival), the share closed in
    // that order: about 1 if each loop went by slot or by age, 1/2 at random.
    let (mut pairs, mut in_order) = (0u32, 0u32);
    for i in 0..endings.len() {
        for j in i + 1..endings.len() {
            pairs += 1;
            in_order += u32::from(endings[i].at < endings[j].at);
        }
    }
    let share = f64::from(in_order) / f64::from(pairs);
    assert!((0.35..0.65).contains(&share), "closed in the order they came: {share:.2} of pairs in order");
    assert!(endings.iter().all(|e| hint_ms(e) > 0));
    assert!(exit_within(&mut server, Duration::from_secs(15)).success());
}

#[test]
fn aged_connections_are_told_1012_after_their_jittered_age() {
    const N: usize = 60;
    let args = ["--max-connection-age", "2s", "--connection-age-jitter", "10"];
    let (_server, addr, metrics) = spawn_binary_with_metrics(&args, None);
    let mut fleet = Fleet::open(addr, N);
    fleet.wait_for_endings(Duration::from_secs(15));
    let endings = fleet.endings();
    let ages: Vec<Duration> = endings.iter().zip(&fleet.opened).map(|(e, opened)| e.at - *opened).collect();
    for (ending, age) in endings.iter().zip(&ages) {
        hint_ms(ending);
        // The server's clock starts after the client's: never early.
        assert!(*age >= Duration::from_millis(1790), "closed at {age:?}, before 2 s - 10 %");
        assert!(*age <= Duration::from_millis(5200), "closed at {age:?}: 2 s + 10 % and a generous slack");
    }
    let spread = ages.iter().max().unwrap().saturating_sub(*ages.iter().min().unwrap());
    assert!(spread >= Duration::from_millis(100), "ages not jittered: all within {spread:?}");
    let counted = |series: &str| sample(&http_get(metrics, "/metrics").1, series) == Some(N as f64);
    assert!(eventually(Duration::from_secs(10), || counted("wsloop_drained_total{why=\"age\"}")));
    assert!(eventually(Duration::from_secs(10), || counted("wsloop_connections_closed_total{reason=\"max_age\"}")));
}

#[test]
fn aged_closes_keep_to_the_drain_rate() {
    // 80 connections opened together, all 1 s old at once, 20 a second.
    const N: usize = 80;
    let args = ["--max-connection-age", "1s", "--connection-age-jitter", "0", "--drain-rate", "20"];
    let (_server, addr) = spawn_binary(&args, None);
    let mut fleet = Fleet::open(addr, N);
    fleet.wait_for_endings(Duration::from_secs(30));
    let endings = fleet.endings();
    endings.iter().for_each(|e| {
        hint_ms(e);
    });
    let times: Vec<Instant> = endings.iter().map(|e| e.at).collect();
    let first = *times.iter().min().unwrap();
    let last = *times.iter().max().unwrap();
    let busiest = densest(&times, Duration::from_secs(1));
    eprintln!("aging at 20/s: 80 closes over {:?}, busiest second {busiest}", last - first);
    assert!(last - first >= Duration::from_millis(2500), "80 at 20/s took only {:?}", last - first);
    assert!(busiest <= 40, "a burst: {busiest} aged closes in one second at --drain-rate 20");
}

#[test]
fn a_drain_longer_than_the_shutdown_timeout_is_refused_in_one_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(["serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .args(["--drain-period", "20s", "--shutdown-timeout", "10s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find(|l| l.contains("--drain-period")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("--shutdown-timeout"), "{line}");
    assert!(!stderr.contains("listening on"), "it started anyway: {stderr}");
}
