//! Rooms across hosts: three `wsloop serve --redis-url` hosts, each in a
//! network namespace of its own with its own address, one real Redis, and
//! HAProxy in front running deploy/haproxy.cfg (its bind and server lines
//! swapped for the test's addresses). Clients join one room through
//! HAProxy; Redis is killed and restarted mid-run; a host is killed.
//!
//! Needs `redis-server`, `haproxy` and `ip` (.ci/run installs the first
//! two); without them this skips, unless CI is set. Without network
//! namespaces (not root) the hosts are three processes on 127.0.0.1, and
//! the test says so. Every wait is bounded; processes and namespaces are
//! removed on the way out, also when an assertion fails.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, http_get, open_connections, rss_of, sample, tung_connect, RawClient, Tung};
use tungstenite::Message;

const WS_PORT: u16 = 8080;
const METRICS_PORT: u16 = 2112;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True if the tools are here; skips (or, under CI, fails) if not.
fn tools_present() -> bool {
    let missing: Vec<&str> = ["redis-server", "haproxy", "ip"].into_iter().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "cluster tests need {missing:?} (.ci/run installs them)");
    eprintln!("cluster test skipped: {missing:?} not installed (.ci/run installs them)");
    false
}

/// A port free now on every address, below the ephemeral range where
/// there is room: a port picked by `bind(0)` comes from the range outgoing
/// connections use too, and one of the many this test makes could take it
/// before Redis or HAProxy binds it.
fn free_port() -> u16 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let low: u16 = range.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(1024);
    if low > 12_000 {
        for _ in 0..100 {
            let port = 10_000 + (wsloop::ws::mask::random_u64() % u64::from(low - 10_000)) as u16;
            if TcpListener::bind(("0.0.0.0", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port()
}

/// True once something answers a Redis PING on `port`.
fn redis_answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

fn run(cmd: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// One wsloop host.
struct Host {
    /// Where clients reach it (HAProxy's server line).
    addr: SocketAddr,
    metrics: SocketAddr,
    process: Option<Child>,
}

impl Host {
    fn scrape(&self, series: &str) -> Option<f64> {
        let (status, body) = http_get_within(self.metrics, "/metrics")?;
        if status != 200 {
            return None;
        }
        sample(&body, series)
    }

    /// A series that must be there (the bridge's families are, with a bridge).
    fn value(&self, series: &str) -> f64 {
        self.scrape(series).unwrap_or_else(|| panic!("{}: no {series}", self.addr))
    }

    fn dropped(&self, reason: &str) -> f64 {
        self.value(&format!("wsloop_redis_publishes_dropped_total{{reason=\"{reason}\"}}"))
    }

    fn pid(&self) -> u32 {
        self.process.as_ref().expect("host running").id()
    }

    fn connections(&self) -> f64 {
        let (_, body) = http_get_within(self.metrics, "/metrics").expect("metrics answer");
        open_connections(&body)
    }
}

/// `http_get`, or `None` if nothing listens there (a host that is down).
fn http_get_within(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    Some(http_get(addr, path))
}

/// HAProxy's stats page as text: the body of a GET, de-chunked (HAProxy
/// answers chunked whatever the request's version).
fn haproxy_stats(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).ok()?;
    let reply = String::from_utf8(reply).ok()?;
    let (head, mut rest) = reply.split_once("\r\n\r\n")?;
    if head.split(' ').nth(1) != Some("200") {
        return None;
    }
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Some(rest.to_string());
    }
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.push_str(after.get(..size)?);
        rest = after.get(size + 2..)?;
    }
}

/// Three hosts, Redis, HAProxy; torn down on drop.
struct Cluster {
    hosts: Vec<Host>,
    redis: Option<Child>,
    redis_port: u16,
    /// Flags every start of Redis gets beyond the test's own.
    redis_args: Vec<String>,
    haproxy: Option<Child>,
    /// The hosts expect HAProxy's PROXY v2 header (`--proxy-protocol`, as
    /// deploy/haproxy.cfg sends it) and count per client address; else the
    /// header is taken off HAProxy's lines and tests may reach hosts directly.
    proxied: bool,
    front: SocketAddr,
    stats: SocketAddr,
    namespaces: Vec<String>,
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            if let Some(mut p) = host.process.take() {
                kill(&mut p);
            }
        }
        for p in [self.haproxy.take(), self.redis.take()].iter_mut().flatten() {
            kill(p);
        }
        for ns in &self.namespaces {
            // Deleting the namespace deletes its end of the veth, and so both.
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Numbers each cluster of this test process: namespaces, links and
/// subnets are named from the pid and this number, so nothing collides.
static CLUSTERS: AtomicU32 = AtomicU32::new(0);

impl Cluster {
    /// Three hosts with Redis behind them and HAProxy in front.
    fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    /// [`start`](Self::start), Redis run with `redis_args` too.
    fn start_with(redis_args: &[&str]) -> Cluster {
        Cluster::start_as(redis_args, false)
    }

    /// [`start_with`](Self::start_with); `proxied`: see the field.
    fn start_as(redis_args: &[&str], proxied: bool) -> Cluster {
        let n = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("wsloop-cluster-{pid}-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = Cluster {
            hosts: Vec::new(),
            redis: None,
            redis_port: free_port(),
            redis_args: redis_args.iter().map(|a| a.to_string()).collect(),
            haproxy: None,
            proxied,
            front: SocketAddr::from(([127, 0, 0, 1], free_port())),
            stats: SocketAddr::from(([127, 0, 0, 1], free_port())),
            namespaces: Vec::new(),
            dir,
        };
        cluster.start_redis();
        // Redis as each host reaches it, and how each host is started.
        let mut places: Vec<(Option<String>, SocketAddr, SocketAddr, SocketAddr)> = Vec::new();
        for i in 0..3u32 {
            match cluster.add_namespace(pid, n, i) {
                Ok((ns, host_side, ns_side)) => places.push((
                    Some(ns),
                    SocketAddr::new(ns_side, WS_PORT),
                    SocketAddr::new(ns_side, METRICS_PORT),
                    SocketAddr::new(host_side, cluster.redis_port),
                )),
                Err(why) => {
                    assert!(i == 0, "namespace {i} failed after others worked: {why}");
                    eprintln!("network namespaces unavailable ({why}): three processes on 127.0.0.1 instead");
                    for _ in 0..3 {
                        places.push((
                            None,
                            SocketAddr::from(([127, 0, 0, 1], free_port())),
                            SocketAddr::from(([127, 0, 0, 1], free_port())),
                            SocketAddr::from(([127, 0, 0, 1], cluster.redis_port)),
                        ));
                    }
                    break;
                }
            }
        }
        for (ns, addr, metrics, redis) in places {
            let mut cmd = match &ns {
                Some(ns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_wsloop")]);
                    c
                }
                None => Command::new(env!("CARGO_BIN_EXE_wsloop")),
            };
            cmd.args(["serve", "--workers", "2", "--log-level", "warn"])
                .args(["--addr", &addr.to_string(), "--metrics-addr", &metrics.to_string()])
                .args(["--redis-url", &format!("redis://{redis}")])
                // Past the app's 1 MiB default: the bridge's own bounds
                // (queue bytes, Redis's output buffer) are what is tested.
                .args(["--max-publish-size", "8MiB"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if cluster.proxied {
                // HAProxy reaches a host from the address Redis is reached at.
                let haproxy = format!("{}/32", redis.ip());
                cmd.args(["--proxy-protocol", "--trusted-proxies", &haproxy, "--max-conns-per-ip", "2"]);
            }
            let process = cmd.spawn().expect("start wsloop");
            cluster.hosts.push(Host { addr, metrics, process: Some(process) });
        }
        for host in &cluster.hosts {
            assert!(
                eventually(Duration::from_secs(10), || host.scrape("wsloop_redis_bridge_up") == Some(1.0)),
                "host {} did not come up with its bridge",
                host.addr
            );
        }
        cluster.start_haproxy();
        cluster
    }

    /// A namespace with a veth pair: (name, host-side address, its address).
    fn add_namespace(
        &mut self,
        pid: u32,
        n: u32,
        i: u32,
    ) -> Result<(String, std::net::IpAddr, std::net::IpAddr), String> {
        let ns = format!("wslt{pid}c{n}h{i}");
        let (outer, inner) = (format!("wo{}{n}{i}", pid % 100_000), format!("wi{}{n}{i}", pid % 100_000));
        let subnet = format!("10.{}.{}", 100 + pid % 100, (n % 60) * 4 + i);
        run(&["ip", "netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        run(&["ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner])?;
        run(&["ip", "link", "set", &inner, "netns", &ns])?;
        run(&["ip", "addr", "add", &format!("{subnet}.1/24"), "dev", &outer])?;
        run(&["ip", "link", "set", &outer, "up"])?;
        run(&["ip", "netns", "exec", &ns, "ip", "addr", "add", &format!("{subnet}.2/24"), "dev", &inner])?;
        run(&["ip", "netns", "exec", &ns, "ip", "link", "set", &inner, "up"])?;
        run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        Ok((ns, format!("{subnet}.1").parse().unwrap(), format!("{subnet}.2").parse().unwrap()))
    }

    /// Starts Redis on its port (a restart: the same one, which the hosts
    /// know), trying again while the port is briefly taken.
    fn start_redis(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let port = self.redis_port.to_string();
            let mut redis = Command::new("redis-server")
                .args([
                    "--port",
                    &port,
                    "--bind",
                    "0.0.0.0",
                    "--protected-mode",
                    "no",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .args(&self.redis_args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            let up = eventually(Duration::from_secs(5), || {
                redis_answers(self.redis_port) || redis.try_wait().is_ok_and(|s| s.is_some())
            });
            if up && redis.try_wait().is_ok_and(|s| s.is_none()) {
                self.redis = Some(redis);
                return;
            }
            kill(&mut redis);
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("redis-server did not start on port {}", self.redis_port);
    }

    /// Sends `signal` (STOP, CONT) to Redis.
    fn signal_redis(&self, signal: &str) {
        let pid = self.redis.as_ref().expect("redis running").id().to_string();
        run(&["kill", &format!("-{signal}"), &pid]).unwrap();
    }

    fn kill_redis(&mut self) {
        if let Some(mut r) = self.redis.take() {
            kill(&mut r);
        }
    }

    /// deploy/haproxy.cfg, pointed at this cluster.
    fn haproxy_config(&self) -> String {
        let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy.cfg");
        let text = std::fs::read_to_string(&deploy).expect("deploy/haproxy.cfg");
        let mut out = String::new();
        let mut swapped = HashMap::new();
        for line in text.lines() {
            let trimmed = line.trim_start();
            let new = if trimmed == "bind :80" {
                format!("    bind {}", self.front)
            } else if trimmed == "bind 127.0.0.1:8404" {
                format!("    bind {}", self.stats)
            } else if trimmed.starts_with("server ws") {
                if swapped.contains_key("server") {
                    continue;
                }
                self.hosts
                    .iter()
                    .enumerate()
                    .map(|(i, h)| format!("    server ws{} {} port {}\n", i + 1, h.addr, h.metrics.port()))
                    .collect()
            } else if trimmed.starts_with("default-server") {
                assert!(line.ends_with(" send-proxy-v2"), "deploy/haproxy.cfg sends no PROXY header: {line}");
                // Quicker checks than production's, so the test is short.
                let line = line.replace("inter 2s fall 3 rise 2", "inter 100ms fall 2 rise 1");
                if self.proxied {
                    line
                } else {
                    line.replace(" send-proxy-v2", "")
                }
            } else if trimmed.starts_with("log stdout") {
                continue;
            } else if trimmed == "maxconn 200000" {
                // The production ceiling needs 400k descriptors; this host has 20k.
                out.push_str("    maxconn 4000\n");
                continue;
            } else {
                out.push_str(line);
                out.push('\n');
                continue;
            };
            let key = trimmed.split_whitespace().next().unwrap().to_string();
            *swapped.entry(if trimmed.starts_with("bind") { trimmed.to_string() } else { key }).or_insert(0) += 1;
            out.push_str(new.trim_end_matches('\n'));
            out.push('\n');
        }
        assert_eq!(swapped.len(), 4, "deploy/haproxy.cfg changed shape: {swapped:?}");
        assert!(out.contains("inter 100ms"), "deploy/haproxy.cfg's default-server line changed");
        out
    }

    /// HAProxy with [`haproxy_config`](Self::haproxy_config); new ports and
    /// another try if it cannot bind its own.
    fn start_haproxy(&mut self) {
        for _ in 0..5 {
            let cfg = self.dir.join("haproxy.cfg");
            std::fs::write(&cfg, self.haproxy_config()).unwrap();
            let mut haproxy = Command::new("haproxy")
                .args(["-db", "-f"])
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start haproxy");
            let up = eventually(Duration::from_secs(10), || {
                self.server_states().iter().filter(|s| *s == "UP").count() == 3
                    || haproxy.try_wait().is_ok_and(|s| s.is_some())
            });
            if up && haproxy.try_wait().is_ok_and(|s| s.is_none()) {
                self.haproxy = Some(haproxy);
                return;
            }
            kill(&mut haproxy);
            self.front = SocketAddr::from(([127, 0, 0, 1], free_port()));
            self.stats = SocketAddr::from(([127, 0, 0, 1], free_port()));
        }
        panic!("HAProxy did not see three hosts up: {:?}", self.server_states());
    }

    /// HAProxy's view of each host (ws1, ws2, ws3): UP, DOWN, ...
    fn server_states(&self) -> Vec<String> {
        let Some(csv) = haproxy_stats(self.stats, "/stats;csv") else { return Vec::new() };
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").trim_start_matches("# ").split(',').collect();
        let Some(status) = header.iter().position(|h| *h == "status") else { return Vec::new() };
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.first() == Some(&"wsloop") && f.get(1).is_some_and(|s| s.starts_with("ws")))
            .map(|f| f[status].split(' ').next().unwrap_or("").to_string())
            .collect()
    }

    /// Waits until every host that is up subscribes to `rooms` rooms.
    fn wait_subscribed(&self, rooms: f64) {
        for host in self.hosts.iter().filter(|h| h.process.is_some()) {
            assert!(
                eventually(Duration::from_secs(15), || host.scrape("wsloop_redis_subscribed_rooms") == Some(rooms)
                    && host.scrape("wsloop_redis_bridge_up") == Some(1.0)),
                "host {} not subscribed to {rooms} rooms: {:?}",
                host.addr,
                host.scrape("wsloop_redis_subscribed_rooms")
            );
        }
    }
}

/// A client in a room.
struct Member {
    ws: Tung,
    name: String,
}

impl Member {
    fn connect(addr: SocketAddr, name: &str) -> Member {
        let ws = tung_connect(addr);
        ws.get_ref().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        Member { ws, name: name.to_string() }
    }

    fn join(&mut self, room: &str) {
        self.send(serde_json::json!({"type": "join", "room": room}));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(v)) = self.next() {
                if v["type"] == "joined" {
                    return;
                }
            }
        }
        panic!("{} not joined", self.name);
    }

    fn publish(&mut self, room: &str, data: &str) {
        self.send(serde_json::json!({"type": "publish", "room": room, "data": data}));
    }

    fn send(&mut self, v: serde_json::Value) {
        self.ws.send(Message::text(v.to_string())).expect("send");
    }

    /// The next JSON message, `Ok(None)` if none came within the read
    /// timeout, `Err` if the connection is gone.
    fn next(&mut self) -> Result<Option<serde_json::Value>, String> {
        match self.ws.read() {
            Ok(Message::Text(t)) => Ok(Some(serde_json::from_str(&t).map_err(|e| e.to_string())?)),
            Ok(_) => Ok(None),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The `data` of room messages arriving within `window`.
    fn messages_for(&mut self, window: Duration) -> Vec<String> {
        let mut got = Vec::new();
        let deadline = Instant::now() + window;
        while Instant::now() < deadline {
            match self.next() {
                Ok(Some(v)) if v["type"] == "message" => got.push(v["data"].as_str().unwrap_or("").to_string()),
                Ok(_) => {}
                Err(e) => panic!("{}: connection lost: {e}", self.name),
            }
        }
        got
    }

    /// Room messages until `count` arrived (or 20 s passed).
    fn messages(&mut self, count: usize) -> Vec<String> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < count && Instant::now() < deadline {
            match self.next() {
                Ok(Some(v)) if v["type"] == "message" => got.push(v["data"].as_str().unwrap_or("").to_string()),
                Ok(_) => {}
                Err(e) => panic!("{}: connection lost: {e}", self.name),
            }
        }
        got
    }
}

/// Asserts `got` holds every message of `publishers` (`{name}:{k}`, k in
/// 0..per) exactly once, each publisher's in the order it sent them.
fn assert_once_in_order(member: &str, got: &[String], publishers: &[String], per: usize) {
    let mut next: HashMap<&str, usize> = publishers.iter().map(|p| (p.as_str(), 0)).collect();
    for m in got {
        let (who, k) = m.rsplit_once(':').unwrap_or_else(|| panic!("{member}: odd message {m}"));
        let expected = next.get_mut(who).unwrap_or_else(|| panic!("{member}: from unknown publisher {m}"));
        assert_eq!(k.parse::<usize>().unwrap(), *expected, "{member}: {who}'s messages out of order or twice");
        *expected += 1;
    }
    for (who, n) in next {
        assert_eq!(n, per, "{member}: got {n} of {per} messages from {who}");
    }
}

#[test]
fn a_publish_on_any_host_reaches_every_member_on_every_host_once_in_order() {
    if !tools_present() {
        return;
    }
    let cluster = Cluster::start();
    let mut members: Vec<Member> = (0..9).map(|i| Member::connect(cluster.front, &format!("c{i}"))).collect();
    for host in &cluster.hosts {
        assert!(
            eventually(Duration::from_secs(5), || host.connections() >= 1.0),
            "HAProxy sent no client to {}",
            host.addr
        );
    }
    for m in &mut members {
        m.join("lobby");
    }
    cluster.wait_subscribed(1.0);
    const PER: usize = 20;
    for k in 0..PER {
        for m in &mut members {
            let data = format!("{}:{k}", m.name);
            m.publish("lobby", &data);
        }
    }
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    for m in &mut members {
        let got = m.messages(names.len() * PER);
        assert_once_in_order(&m.name, &got, &names, PER);
        assert!(m.messages_for(Duration::from_millis(300)).is_empty(), "{}: more than once", m.name);
    }
}

#[test]
fn redis_killed_local_delivery_goes_on_and_cross_host_delivery_heals() {
    if !tools_present() {
        return;
    }
    let mut cluster = Cluster::start();
    // Two members on each host, straight to the host: this is about Redis.
    let mut members: Vec<Vec<Member>> = cluster
        .hosts
        .iter()
        .enumerate()
        .map(|(h, host)| (0..2).map(|i| Member::connect(host.addr, &format!("h{h}m{i}"))).collect())
        .collect();
    for m in members.iter_mut().flatten() {
        m.join("lobby");
    }
    cluster.wait_subscribed(1.0);

    cluster.kill_redis();
    for host in &cluster.hosts {
        assert!(
            eventually(Duration::from_secs(10), || host.scrape("wsloop_redis_bridge_up") == Some(0.0)),
            "host {} still says its bridge is up",
            host.addr
        );
    }
    let (status, body) = http_get(cluster.hosts[0].metrics, "/healthz");
    assert_eq!(status, 200, "a host without Redis still serves its own members");
    assert!(body.contains("redis bridge down"), "{body}");
    members[0][0].publish("lobby", "h0m0:0");
    assert_eq!(members[0][0].messages(1), ["h0m0:0"]);
    assert_eq!(members[0][1].messages(1), ["h0m0:0"], "local delivery stopped with Redis");
    for m in members[1..].iter_mut().flatten() {
        assert!(m.messages_for(Duration::from_millis(200)).is_empty(), "{} got a publish Redis never carried", m.name);
    }
    assert!(
        eventually(Duration::from_secs(5), || cluster.hosts[0]
            .scrape("wsloop_redis_publishes_dropped_total{reason=\"redis_down\"}")
            .is_some_and(|n| n >= 1.0)),
        "the lost cross-host publish was not counted"
    );

    cluster.start_redis();
    cluster.wait_subscribed(1.0);
    for (h, host) in members.iter_mut().enumerate() {
        let data = format!("h{h}m0:1");
        host[0].publish("lobby", &data);
    }
    // Every host's publish, once each; the one made while Redis was away
    // reached host 0's members only, and is never replayed.
    for m in members.iter_mut().flatten() {
        let mut got = m.messages(3);
        got.extend(m.messages_for(Duration::from_millis(300)));
        got.sort();
        assert_eq!(got, ["h0m0:1", "h1m0:1", "h2m0:1"], "{}", m.name);
    }
    for host in &cluster.hosts {
        assert!(host.scrape("wsloop_redis_reconnects_total").unwrap() >= 1.0, "{}: no reconnect counted", host.addr);
    }
}

#[test]
fn a_host_killed_its_clients_move_and_the_others_never_notice() {
    if !tools_present() {
        return;
    }
    let mut cluster = Cluster::start();
    let mut members: Vec<Member> = (0..9).map(|i| Member::connect(cluster.front, &format!("c{i}"))).collect();
    for m in &mut members {
        m.join("lobby");
    }
    cluster.wait_subscribed(1.0);
    let before: Vec<f64> = cluster.hosts.iter().map(|h| h.connections()).collect();
    assert_eq!(before.iter().sum::<f64>(), 9.0, "every client on some host, once: {before:?}");
    let on_victim = before[1] as usize;
    assert!(on_victim >= 1, "HAProxy sent no client to host 2");

    kill(cluster.hosts[1].process.as_mut().unwrap());
    cluster.hosts[1].process = None;
    assert!(
        eventually(Duration::from_secs(10), || cluster.server_states().get(1).is_some_and(|s| s == "DOWN")),
        "HAProxy did not mark the killed host down: {:?}",
        cluster.server_states()
    );
    // Clients of the killed host find their connection gone; the others
    // hear nothing at all.
    let mut moved = Vec::new();
    for (i, m) in members.iter_mut().enumerate() {
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            match m.next() {
                Ok(None) => {}
                Ok(Some(v)) => panic!("{} got {v} when a host died", m.name),
                Err(e) => {
                    moved.push((i, e));
                    break;
                }
            }
        }
    }
    assert_eq!(
        moved.len(),
        on_victim,
        "exactly the killed host's clients lost their connection: connections per host before {before:?}, \
         lost (member, error): {moved:?}"
    );
    for &(i, _) in &moved {
        let name = format!("{}r", members[i].name);
        members[i] = Member::connect(cluster.front, &name);
        members[i].join("lobby");
    }
    cluster.wait_subscribed(1.0);
    let total: f64 = [0, 2].iter().map(|&h| cluster.hosts[h].connections()).sum();
    assert_eq!(total, 9.0, "every client is on a live host");

    let moved: Vec<usize> = moved.iter().map(|(i, _)| *i).collect();
    let publishers =
        [members[moved[0]].name.clone(), members[(0..9).find(|i| !moved.contains(i)).unwrap()].name.clone()];
    for m in members.iter_mut().filter(|m| publishers.contains(&m.name)) {
        let data = format!("{}:0", m.name);
        m.publish("lobby", &data);
    }
    for m in &mut members {
        let mut got = m.messages(2);
        got.extend(m.messages_for(Duration::from_millis(300)));
        assert_once_in_order(&m.name, &got, &publishers, 1);
    }
}

/// Sends an upgrade to `front` from `source`; the reply's status and the
/// connection (kept open by the caller while it counts).
fn upgrade_from(front: SocketAddr, source: &str) -> (u16, TcpStream) {
    use std::io::{Read, Write};
    let mut s = common::tcp_from(front, Some(source.parse().unwrap()));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    s.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head).split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, s)
}

#[test]
fn through_haproxys_proxy_header_each_client_address_gets_its_own_limit() {
    if !tools_present() {
        return;
    }
    let cluster = Cluster::start_as(&[], true);
    // --max-conns-per-ip 2 on each of three hosts, HAProxy's leastconn
    // spreading one client's connections 2/2/2: its seventh is refused.
    // Keyed on HAProxy's address instead, the second client would be too.
    let mut held = Vec::new();
    for i in 0..6 {
        let (status, s) = upgrade_from(cluster.front, "127.0.0.1");
        assert_eq!(status, 101, "client 127.0.0.1, connection {i}");
        held.push(s);
    }
    assert_eq!(upgrade_from(cluster.front, "127.0.0.1").0, 429, "127.0.0.1's seventh");
    for i in 0..3 {
        let (status, s) = upgrade_from(cluster.front, "127.0.0.2");
        assert_eq!(status, 101, "client 127.0.0.2, connection {i}: its own limit");
        held.push(s);
    }
    let refused: f64 =
        cluster.hosts.iter().map(|h| h.value("wsloop_handshake_failures_total{reason=\"per_ip_conns\"}")).sum();
    assert_eq!(refused, 1.0);
    let untrusted: f64 =
        cluster.hosts.iter().map(|h| h.value("wsloop_proxy_refused_total{reason=\"untrusted\"}")).sum();
    assert_eq!(untrusted, 0.0, "HAProxy is trusted");
    assert_eq!(cluster.hosts.iter().map(Host::connections).sum::<f64>(), 9.0);
}

#[test]
fn bad_redis_flags_name_the_flag() {
    for args in [&["--redis-url", "http://127.0.0.1:6379"][..], &["--redis-url", "redis://"], &["--redis-prefix", "x:"]]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_wsloop")).arg("serve").args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--redis-url"), "{args:?}: {stderr}");
    }
}

/// One masked text frame carrying a publish of `len` bytes of data to `room`.
fn publish_frame(room: &str, len: usize) -> Vec<u8> {
    let text = serde_json::json!({"type": "publish", "room": room, "data": "x".repeat(len)}).to_string();
    let mut frame = Vec::with_capacity(text.len() + 14);
    wsloop::ws::frame::write_frame(
        &mut frame,
        true,
        wsloop::ws::frame::opcode::TEXT,
        text.as_bytes(),
        Some([1, 2, 3, 4]),
    );
    frame
}

/// The highest RSS of `pid` and the highest `wsloop_redis_queued_bytes` of
/// `metrics`, sampled every 20 ms until `stop` is set.
fn sample_peaks(pid: u32, metrics: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, f64)> {
    std::thread::spawn(move || {
        let (mut rss, mut queued) = (0u64, 0f64);
        while !stop.load(Ordering::Relaxed) {
            rss = rss.max(rss_of(pid));
            if let Some((200, body)) = http_get_within(metrics, "/metrics") {
                queued = queued.max(sample(&body, "wsloop_redis_queued_bytes").unwrap_or(0.0));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (rss, queued)
    })
}

#[test]
fn redis_stopped_300_publishes_of_2_mib_stay_within_the_queue_bytes_and_the_bridge_recovers() {
    if !tools_present() {
        return;
    }
    const PUBLISHES: usize = 300;
    const QUEUE_BYTES: u64 = 64 << 20;
    // What is not the queue: the message being read and its frame, the
    // publisher's pipeline copy, the allocator's slack.
    const MARGIN: u64 = 48 << 20;
    let cluster = Cluster::start();
    let mut far: Vec<Member> = (1..3).map(|h| Member::connect(cluster.hosts[h].addr, &format!("h{h}"))).collect();
    for m in &mut far {
        m.join("big");
    }
    for host in &cluster.hosts[1..] {
        assert!(eventually(Duration::from_secs(15), || host.scrape("wsloop_redis_subscribed_rooms") == Some(1.0)));
    }
    let host = &cluster.hosts[0];
    let before = rss_of(host.pid());

    cluster.signal_redis("STOP");
    let stop = Arc::new(AtomicBool::new(false));
    let peaks = sample_peaks(host.pid(), host.metrics, stop.clone());
    let mut client = RawClient::connect(host.addr);
    let frame = publish_frame("big", 2 << 20);
    for _ in 0..PUBLISHES {
        client.send_raw(&frame);
    }
    assert!(
        eventually(Duration::from_secs(60), || host.value("wsloop_room_messages_published_total") == PUBLISHES as f64),
        "the host did not read every publish"
    );
    // Redis stays stopped: every publish is dropped, for a full queue or
    // for Redis being away, and counted.
    let all_dropped = eventually(Duration::from_secs(30), || {
        host.dropped("queue_full") + host.dropped("redis_down") == PUBLISHES as f64
    });
    stop.store(true, Ordering::Relaxed);
    let (peak_rss, peak_queued) = peaks.join().unwrap();
    let (full, down) = (host.dropped("queue_full"), host.dropped("redis_down"));
    eprintln!(
        "RSS {} MiB -> peak {} MiB; queued peak {} MiB; dropped: queue_full {full}, redis_down {down}",
        before >> 20,
        peak_rss >> 20,
        peak_queued as u64 >> 20
    );
    assert!(all_dropped, "dropped: queue_full {full} + redis_down {down} != {PUBLISHES}");
    assert!(full >= 1.0, "the queue never reached its byte bound (queue_full {full})");
    assert!(peak_queued <= QUEUE_BYTES as f64, "queued {peak_queued} bytes, over the bound");
    assert!(
        peak_rss <= before + QUEUE_BYTES + MARGIN,
        "RSS grew from {} MiB to {} MiB with Redis stopped",
        before >> 20,
        peak_rss >> 20
    );
    assert_eq!(host.value("wsloop_redis_queued_bytes"), 0.0, "the bytes came back once dropped");

    cluster.signal_redis("CONT");
    assert!(
        eventually(Duration::from_secs(20), || host.scrape("wsloop_redis_bridge_up") == Some(1.0)),
        "the bridge did not come back after SIGCONT"
    );
    for h in &cluster.hosts[1..] {
        assert!(eventually(Duration::from_secs(15), || h.scrape("wsloop_redis_bridge_up") == Some(1.0)));
    }
    let mut near = Member::connect(host.addr, "h0");
    near.publish("big", "after:0");
    for m in &mut far {
        // Publishes cut off mid-pipeline when Redis stopped may still come
        // first; the new one comes after them.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        while !got.contains(&"after:0".to_string()) && Instant::now() < deadline {
            got.extend(m.messages_for(Duration::from_millis(100)).into_iter().filter(|d| d.len() < 100));
        }
        assert_eq!(got, ["after:0"], "{}", m.name);
    }
    assert!(host.value("wsloop_redis_reconnects_total") >= 1.0);
}

#[test]
fn a_publish_over_redis_output_buffer_limit_is_refused_and_other_hosts_stay_subscribed() {
    if !tools_present() {
        return;
    }
    // Redis cuts off a subscriber whose output buffer passes 4 MiB.
    let cluster = Cluster::start_with(&["--client-output-buffer-limit", "pubsub", "4mb", "2mb", "60"]);
    for host in &cluster.hosts {
        assert_eq!(host.value("wsloop_redis_max_publish_bytes"), (2 << 20) as f64, "half Redis's hard limit");
    }
    let mut members: Vec<Member> =
        cluster.hosts.iter().enumerate().map(|(h, host)| Member::connect(host.addr, &format!("h{h}"))).collect();
    for m in &mut members {
        m.join("big");
    }
    cluster.wait_subscribed(1.0);
    let published = cluster.hosts[0].value("wsloop_redis_publishes_total");

    let big = "y".repeat(5 << 20);
    members[0].publish("big", &big);
    let mine = members[0].messages(1);
    assert!(mine.len() == 1 && mine[0].len() == big.len(), "local members get it all the same");
    for m in &mut members[1..] {
        assert!(m.messages_for(Duration::from_millis(500)).is_empty(), "{} got a refused publish", m.name);
    }
    assert_eq!(cluster.hosts[0].dropped("too_large"), 1.0);
    // Rooms `join` refuses go nowhere either: the app refuses them before
    // the bridge sees them (the bridge's own check, `bad_room`, is for an
    // embedder's handler: its unit tests).
    members[0].publish("", "empty");
    members[0].publish(&"r".repeat(200), "long");
    let refused = "wsloop_publish_refused_total{reason=\"bad_room_name\"}";
    assert!(eventually(Duration::from_secs(5), || cluster.hosts[0].scrape(refused) == Some(2.0)));
    assert_eq!(cluster.hosts[0].value("wsloop_redis_publishes_total"), published, "nothing went to Redis");

    members[0].publish("big", "h0:0");
    for m in &mut members {
        let mut got = m.messages(1);
        got.extend(m.messages_for(Duration::from_millis(300)));
        assert_eq!(got, ["h0:0"], "{}", m.name);
    }
    for host in &cluster.hosts {
        assert_eq!(host.value("wsloop_redis_reconnects_total"), 0.0, "{}: a connection to Redis was cut", host.addr);
        assert_eq!(host.value("wsloop_redis_bridge_up"), 1.0);
    }

    // The control: the same publish sent to Redis by someone else cuts the
    // hosts' subscribers off, which is what the refusal spared them.
    redis_publish(cluster.redis_port, "wsloop:room:big", big.as_bytes());
    for host in &cluster.hosts {
        assert!(
            eventually(Duration::from_secs(10), || host.value("wsloop_redis_reconnects_total") >= 1.0),
            "{}: Redis kept a subscriber past its output-buffer limit; the control proves nothing",
            host.addr
        );
    }
}

/// `PUBLISH channel payload` on a connection of its own; Redis's reply.
fn redis_publish(port: u16, channel: &str, payload: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut cmd =
        format!("*3\r\n$7\r\nPUBLISH\r\n${}\r\n{channel}\r\n${}\r\n", channel.len(), payload.len()).into_bytes();
    cmd.extend_from_slice(payload);
    cmd.extend_from_slice(b"\r\n");
    s.write_all(&cmd).unwrap();
    let mut reply = [0u8; 64];
    let n = s.read(&mut reply).unwrap_or(0);
    String::from_utf8_lossy(&reply[..n]).into_owned()
}

/// Processes killed on the way out, also when an assertion fails.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for p in &mut self.0 {
            kill(p);
        }
    }
}

/// deploy/redis.conf on `port`, its password file at `password_file`,
/// after checking what it ships: loopback or private addresses only,
/// protected mode on, and a password file it cannot start without.
fn shipped_redis_conf(port: u16, password_file: &std::path::Path) -> String {
    let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/redis.conf")).unwrap();
    let directive = |name: &'static str| text.lines().filter(move |l| l.split_whitespace().next() == Some(name));
    for line in directive("bind") {
        for addr in line.split_whitespace().skip(1).map(|a| a.trim_start_matches('-')) {
            let ip: std::net::IpAddr = addr.parse().unwrap_or_else(|_| panic!("bind {addr}: not an address"));
            let private = match ip {
                std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
                std::net::IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
            };
            assert!(private, "deploy/redis.conf binds {addr}, not a loopback or private address");
        }
    }
    assert_eq!(directive("bind").count(), 1, "deploy/redis.conf has one bind line");
    assert_eq!(directive("protected-mode").collect::<Vec<_>>(), ["protected-mode yes"]);
    assert_eq!(directive("include").count(), 1, "deploy/redis.conf includes its password file");
    assert_eq!(directive("requirepass").count(), 0, "no password in deploy/redis.conf itself");
    let mut out = String::new();
    for line in text.lines() {
        match line.split_whitespace().next() {
            Some("port") => out.push_str(&format!("port {port}\n")),
            Some("include") => out.push_str(&format!("include {}\n", password_file.display())),
            _ => out.push_str(&format!("{line}\n")),
        }
    }
    out
}

/// The ACL lines deploy/redis.conf offers for its password file, for `password`.
fn shipped_acl_lines(password: &str) -> String {
    let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/redis.conf")).unwrap();
    let lines: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#   user "))
        .map(|l| format!("user {}\n", l.replace("PASSWORD", password)))
        .collect();
    assert_eq!(lines.len(), 2, "deploy/redis.conf's ACL lines");
    lines.concat()
}

/// `wsloop serve` on 127.0.0.1 with `url` in its environment, logging at
/// debug into `log`; its metrics address.
fn spawn_host_with_url(url: &str, log: &std::path::Path, processes: &mut Processes) -> SocketAddr {
    let (addr, metrics) = (format!("127.0.0.1:{}", free_port()), SocketAddr::from(([127, 0, 0, 1], free_port())));
    let child = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(["serve", "--workers", "1", "--log-level", "debug", "--addr", &addr])
        .args(["--metrics-addr", &metrics.to_string()])
        .env("WSLOOP_REDIS_URL", url)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start wsloop");
    processes.0.push(child);
    metrics
}

/// Starts `redis-server conf` and waits until it listens.
fn start_redis_with(conf: &std::path::Path, port: u16, processes: &mut Processes) {
    let child = Command::new("redis-server").arg(conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    processes.0.push(child);
    assert!(
        eventually(Duration::from_secs(5), || TcpStream::connect(("127.0.0.1", port)).is_ok()),
        "redis-server did not start on deploy/redis.conf"
    );
}

#[test]
fn the_shipped_redis_conf_wants_a_password_and_wsloop_never_prints_it() {
    if !tools_present() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("wsloop-redis-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let password = format!("pw{:016x}", wsloop::ws::mask::random_u64());
    let wrong = format!("wrong{:016x}", wsloop::ws::mask::random_u64());
    let (port, password_file, conf) = (free_port(), dir.join("password.conf"), dir.join("redis.conf"));
    std::fs::write(&conf, shipped_redis_conf(port, &password_file)).unwrap();
    std::fs::write(&password_file, format!("requirepass {password}\n")).unwrap();
    let mut processes = Processes(Vec::new());
    start_redis_with(&conf, port, &mut processes);
    assert!(!redis_answers(port), "Redis answers without the password");

    let right =
        spawn_host_with_url(&format!("redis://:{password}@127.0.0.1:{port}"), &dir.join("right.log"), &mut processes);
    let bad =
        spawn_host_with_url(&format!("redis://:{wrong}@127.0.0.1:{port}"), &dir.join("wrong.log"), &mut processes);
    let up = |metrics: SocketAddr| {
        http_get_within(metrics, "/metrics").and_then(|(_, b)| sample(&b, "wsloop_redis_bridge_up"))
    };
    assert!(eventually(Duration::from_secs(10), || up(right) == Some(1.0)), "the password did not let the bridge in");
    assert!(eventually(Duration::from_secs(10), || up(bad) == Some(0.0)));
    std::thread::sleep(Duration::from_millis(500));
    drop(processes);

    let mut shown = String::new();
    for log in ["right.log", "wrong.log"] {
        shown.push_str(&std::fs::read_to_string(dir.join(log)).unwrap());
    }
    let help = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(["serve", "--help"])
        .env("WSLOOP_REDIS_URL", format!("redis://:{password}@redis:6379"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("WSLOOP_REDIS_URL"));
    shown.push_str(&String::from_utf8_lossy(&help.stdout));
    for bad_url in [format!("redis://:{password}@redis:port"), format!("http://:{password}@redis:6379")] {
        let out = Command::new(env!("CARGO_BIN_EXE_wsloop")).args(["serve", "--redis-url", &bad_url]).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--redis-url"));
        shown.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(shown.contains("redis bridge") && shown.contains("***@"), "{shown}");
    assert!(!shown.contains(&password) && !shown.contains(&wrong), "a password was printed:\n{shown}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_shipped_acl_lets_the_bridge_publish_and_subscribe_without_config() {
    if !tools_present() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("wsloop-redis-acl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let password = format!("pw{:016x}", wsloop::ws::mask::random_u64());
    let (port, password_file, conf) = (free_port(), dir.join("password.conf"), dir.join("redis.conf"));
    std::fs::write(&conf, shipped_redis_conf(port, &password_file)).unwrap();
    std::fs::write(&password_file, shipped_acl_lines(&password)).unwrap();
    let mut processes = Processes(Vec::new());
    start_redis_with(&conf, port, &mut processes);
    let url = format!("redis://wsloop:{password}@127.0.0.1:{port}");
    let metrics = spawn_host_with_url(&url, &dir.join("host.log"), &mut processes);
    let read = |series: &str| http_get_within(metrics, "/metrics").and_then(|(_, b)| sample(&b, series));
    assert!(eventually(Duration::from_secs(10), || read("wsloop_redis_bridge_up") == Some(1.0)));
    // CONFIG GET refused: the configured bound holds.
    assert_eq!(read("wsloop_redis_max_publish_bytes"), Some((16 << 20) as f64));
    let (_, body) = http_get(metrics, "/metrics");
    let ws_port: u16 = std::fs::read_to_string(dir.join("host.log"))
        .unwrap()
        .split("listening on ws://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no listening line; metrics: {body}"));
    let mut member = Member::connect(SocketAddr::from(([127, 0, 0, 1], ws_port)), "m");
    member.join("lobby");
    assert!(
        eventually(Duration::from_secs(10), || read("wsloop_redis_subscribed_rooms") == Some(1.0)),
        "SUBSCRIBE refused"
    );
    member.publish("lobby", "hi");
    assert_eq!(member.messages(1), ["hi"]);
    assert!(
        eventually(Duration::from_secs(5), || read("wsloop_redis_publishes_total") == Some(1.0)),
        "PUBLISH refused"
    );
    assert_eq!(read("wsloop_redis_bridge_up"), Some(1.0));
    drop(processes);
    let _ = std::fs::remove_dir_all(&dir);
}
