//! `wsloop load`: a native load generator on the same mio + `ws`
//! foundations as the server, able to hold 100,000 connections from one
//! host where k6 (megabytes per virtual user) cannot.
//!
//! A run follows k6-style stages at a bounded connect rate, runs one
//! scenario on every connection, and measures: connections by outcome,
//! handshake and round-trip histograms, throughput, the host's kernel
//! memory, its own memory, and (scraping the server's `/metrics`) the
//! server's connections, memory and descriptors over time. When the per-process file limit is below the target it splits the
//! work over child processes and merges their results.

pub mod backoff;
mod children;
mod config;
pub mod delivery;
mod fleet;
pub mod plan;
pub mod plot;
mod process;
mod progress;
pub mod report;
mod scenario;
pub mod scrape;
pub mod tls;
mod watch;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;

use backoff::Backoff;

pub use config::FleetConfig;
pub use config::{Payload, Scenario};
pub use plan::{Plan, Stage};
pub use progress::{own_anon_bytes, Progress};
pub use report::{HostView, LeakCheck, Percentiles, Report, Sample};
use scrape::{MetricsUrl, ServerView};
use watch::Watch;

/// Flags of `wsloop load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// The server: ws://host:port/path, or wss:// (with --tls-ca or --tls-insecure).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// wss: trust the CA certificates in this PEM file.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// wss: accept any server certificate (for a test server's self-signed one).
    #[arg(long, conflicts_with = "tls_ca")]
    pub tls_insecure: bool,
    /// What each connection does.
    #[arg(long, value_enum, default_value = "idle")]
    pub scenario: Scenario,
    /// A fixed number of connections (ramped at --rate, held for --duration).
    #[arg(long, conflicts_with = "stage")]
    pub conns: Option<usize>,
    /// A stage DURATION:TARGET, repeatable (e.g. --stage 60s:5000 --stage 180s:5000 --stage 60s:0).
    #[arg(long, value_parser = plan::parse_stage)]
    pub stage: Vec<Stage>,
    /// How long to hold a fixed --conns count.
    #[arg(long, default_value = "10s", value_parser = crate::units::parse_duration)]
    pub duration: Duration,
    /// New connections per second at most (all processes together).
    #[arg(long, default_value_t = 2000)]
    pub rate: u32,
    /// Ping scenario: time between pings on each connection.
    #[arg(long, default_value = "10s", value_parser = crate::units::parse_duration)]
    pub interval: Duration,
    /// Echo: payload bytes per message; fanout: about the bytes of a delivery.
    #[arg(long, default_value = "64", value_parser = crate::units::parse_size)]
    pub size: usize,
    /// Fanout scenario: messages the publisher sends per second.
    #[arg(long, default_value_t = 100)]
    pub publish_rate: u32,
    /// Fanout scenario: broadcast to every connection instead of publishing to the room.
    #[arg(long)]
    pub broadcast: bool,
    /// Offer permessage-deflate; when the server agrees, every message that
    /// gets smaller is sent compressed.
    #[arg(long)]
    pub compression: bool,
    /// Echo scenario: what a message carries: pattern (binary) or chat (JSON text).
    #[arg(long, value_enum, default_value = "pattern")]
    pub payload: Payload,
    /// Echo scenario: messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Local source addresses, round robin: a range (127.0.0.2-127.0.0.9) or a comma list.
    #[arg(long, value_parser = parse_source_ips)]
    pub source_ips: Option<SourceIps>,
    /// Time allowed from connect to the 101.
    #[arg(long, default_value = "10s", value_parser = crate::units::parse_duration)]
    pub connect_timeout: Duration,
    /// Run part K of N of the plan (connections, --rate, --publish-rate), so
    /// that N load hosts drive one plan without overlap: `--segment 2/3`.
    #[arg(long, value_parser = plan::parse_segment)]
    pub segment: Option<plan::Segment>,
    /// Processes to split the work over (0: as many as the file limit needs).
    #[arg(long, default_value_t = 0)]
    pub processes: usize,
    /// The server's /metrics, scraped every second (repeat for several processes).
    #[arg(long)]
    pub metrics_url: Vec<String>,
    /// Write everything measured as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw connections, round-trip p99, user-space and kernel memory and server FDs over time into this SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// After the run, fail unless the server's connections return to 0 and
    /// its FDs and RSS return near their baseline (needs --metrics-url).
    #[arg(long, requires = "metrics_url")]
    pub expect_clean: bool,
    /// Connect again when the server closes a connection (any close code,
    /// EOF or reset), after an exponential backoff with full jitter, or
    /// after the server's `reconnect in N ms` hint; the report shows the
    /// reconnects and each connection's gap.
    #[arg(long)]
    pub reconnect: bool,
    /// --reconnect: the first retry waits up to this (doubled per failed retry).
    #[arg(long, default_value = "100ms", value_parser = crate::units::parse_duration)]
    pub reconnect_min: Duration,
    /// --reconnect: no retry waits longer, whatever the server's hint says.
    #[arg(long, default_value = "10s", value_parser = crate::units::parse_duration)]
    pub reconnect_max: Duration,
    /// Internal: this process is child I of N.
    #[arg(long, hide = true, requires = "child_count")]
    pub child_index: Option<usize>,
    /// Internal: the number of children.
    #[arg(long, hide = true)]
    pub child_count: Option<usize>,
}

/// Source addresses to connect from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIps(pub Vec<IpAddr>);

/// Parses `127.0.0.2-127.0.0.9` or `127.0.0.2,127.0.0.3`.
pub fn parse_source_ips(s: &str) -> Result<SourceIps, String> {
    let bad = |p: &str| format!("'{p}' is not an IPv4 address");
    if let Some((a, b)) = s.split_once('-') {
        let a: Ipv4Addr = a.trim().parse().map_err(|_| bad(a))?;
        let b: Ipv4Addr = b.trim().parse().map_err(|_| bad(b))?;
        let (a, b) = (u32::from(a), u32::from(b));
        if b < a || b - a > 65_535 {
            return Err(format!("'{s}' is not an ascending range of at most 65,536 addresses"));
        }
        return Ok(SourceIps((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))).collect()));
    }
    s.split(',').map(|p| p.trim().parse().map_err(|_| bad(p))).collect::<Result<_, _>>().map(SourceIps)
}

/// A `--url`, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The Host header (with the port, if the URL had one).
    pub host: String,
    /// The name the server is asked for over TLS: the host without a port.
    pub server_name: String,
    /// The request path.
    pub path: String,
    /// `wss://`.
    pub secure: bool,
}

/// Splits `ws://host[:port]/path` or `wss://...` (ports 80 and 443 by default).
pub fn parse_ws_url(url: &str) -> Result<WsUrl, String> {
    let (rest, secure) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => return Err(format!("--url '{url}': a ws:// or wss:// URL")),
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let has_port = host.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']'));
    let host_port = if has_port { host.to_string() } else { format!("{host}:{}", if secure { 443 } else { 80 }) };
    let addr = host_port
        .to_socket_addrs()
        .map_err(|e| format!("--url '{url}': {e}"))?
        .next()
        .ok_or_else(|| format!("--url '{url}': no address"))?;
    let server_name = if has_port { host.rsplit_once(':').map_or(host, |(h, _)| h) } else { host };
    Ok(WsUrl {
        addr,
        host: host.to_string(),
        server_name: server_name.to_string(),
        path: if path.is_empty() { "/".into() } else { path.into() },
        secure,
    })
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn install_sigint() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(SigHandler::Handler(on_sigint), SaFlags::SA_RESTART, SigSet::empty());
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    let _ = unsafe { sigaction(Signal::SIGINT, &action) };
}

/// Runs `wsloop load`; the exit code says whether the run was clean.
pub fn main(args: &LoadArgs) -> ExitCode {
    match run(args) {
        Ok(report) if report.is_clean_run() => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("wsloop load: errors during the run (see the summary)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("wsloop load: {e}");
            ExitCode::from(2)
        }
    }
}

/// What one load process is told, from the flags (its segment's share).
fn fleet_config(args: &LoadArgs) -> Result<FleetConfig, String> {
    let url = parse_ws_url(&args.url)?;
    let tls = match url.secure {
        true => Some(tls::client(&url.server_name, args.tls_ca.as_deref(), args.tls_insecure)?),
        false if args.tls_ca.is_some() || args.tls_insecure => {
            return Err(format!("--tls-ca and --tls-insecure need a wss:// --url, not '{}'", args.url))
        }
        false => None,
    };
    let (target, host, path) = (url.addr, url.host, url.path);
    let plan = match args.conns {
        Some(n) => Plan::fixed(n, args.rate, args.duration),
        None if !args.stage.is_empty() => Plan { stages: args.stage.clone() },
        None => return Err("give --conns N or at least one --stage DURATION:TARGET".into()),
    };
    if args.depth == 0 {
        return Err("--depth must be at least 1".into());
    }
    if args.reconnect_max < args.reconnect_min {
        return Err("--reconnect-max must be at least --reconnect-min".into());
    }
    let (plan, rate, publish_rate) = match args.segment {
        Some(plan::Segment { k, n }) => (
            plan.share(k - 1, n),
            plan::part_of(u64::from(args.rate), k - 1, n) as u32,
            plan::part_of(u64::from(args.publish_rate), k - 1, n) as u32,
        ),
        None => (plan, args.rate, args.publish_rate),
    };
    Ok(FleetConfig {
        target,
        host,
        path,
        scenario: args.scenario,
        plan,
        rate: rate.max(1),
        interval: args.interval,
        size: args.size,
        depth: args.depth,
        source_ips: args.source_ips.clone().map_or_else(Vec::new, |s| s.0),
        connect_timeout: args.connect_timeout,
        publish_rate,
        broadcast: args.broadcast,
        compression: args.compression,
        payload: args.payload,
        tls,
        reconnect: args.reconnect.then_some(Backoff { min: args.reconnect_min, max: args.reconnect_max }),
    })
}

/// Runs the load as parent, single process or child, per the flags.
pub fn run(args: &LoadArgs) -> Result<Report, String> {
    install_sigint();
    let mut cfg = fleet_config(args)?;
    if let (Some(i), Some(n)) = (args.child_index, args.child_count) {
        return children::run_child(&mut cfg, i, n.max(1), &INTERRUPTED);
    }
    let urls = args.metrics_url.iter().map(|u| MetricsUrl::parse(u)).collect::<Result<Vec<_>, _>>()?;
    let (processes, soft) = process_count(args, &cfg)?;
    let baseline = Baseline::read(&urls)?;
    let watch = Watch::start(&urls, baseline.server);
    let start = Instant::now();
    let mut timeline = Vec::new();
    let mut prev: Option<Progress> = None;
    let mut record = |p: &Progress| {
        let view = watch.latest();
        let sample = sample(p, prev.as_ref(), view);
        eprintln!("{}", p.line(view.as_ref(), prev.as_ref()));
        timeline.push(sample);
        prev = Some(p.clone());
    };
    if let Some(plan::Segment { k, n }) = args.segment {
        eprintln!("wsloop load: segment {k}/{n} of the plan: {} connections at its peak", cfg.plan.peak());
    }
    let mut report = if processes == 1 {
        scenario::run(&cfg, &INTERRUPTED, &mut record).map_err(|e| e.to_string())?
    } else {
        eprintln!("wsloop load: {} connections over {processes} processes (file limit {soft})", cfg.plan.peak());
        children::run_children(processes, &mut record)?
    };
    baseline.annotate(&mut report, processes, &timeline);
    if args.expect_clean {
        let base = baseline.server.unwrap_or_default();
        report.leak_check = Some(leak_check(&urls, base, start, &mut timeline));
    }
    watch.stop();
    report.timeline = timeline;
    println!("{}", report.summary());
    write_outputs(args, &report)?;
    Ok(report)
}

/// How many processes the run takes (`--processes`, or as many as the
/// file limit needs), and the file limit, raised to its hard limit.
fn process_count(args: &LoadArgs, cfg: &FleetConfig) -> Result<(usize, u64), String> {
    let (soft, _) = crate::tune::rlimit::raise_nofile().map_err(|e| format!("file limit: {e}"))?;
    let per_process = (soft as usize).saturating_sub(crate::tune::rlimit::FD_RESERVE).max(1);
    let processes = if args.processes > 0 { args.processes } else { cfg.plan.peak().div_ceil(per_process).max(1) };
    Ok((processes, soft))
}

/// The server's and the host's figures before the run.
struct Baseline {
    server: Option<ServerView>,
    host: Option<HostView>,
}

impl Baseline {
    /// Scrapes `urls` (an error if they do not answer) and reads the host.
    fn read(urls: &[MetricsUrl]) -> Result<Baseline, String> {
        let server = if urls.is_empty() {
            None
        } else {
            Some(scrape::fetch_all(urls).ok_or("cannot scrape --metrics-url before the run")?)
        };
        Ok(Baseline { server, host: HostView::read(Path::new("/proc")) })
    }

    /// Puts the baselines, the process count and the peak seen over the
    /// `timeline` into `report`.
    fn annotate(&self, report: &mut Report, processes: usize, timeline: &[Sample]) {
        report.processes = processes;
        report.server_baseline = self.server.map(|v| server_sample(0.0, v));
        report.host_baseline = self.host;
        report.peak_open = report.peak_open.max(timeline.iter().map(|s| s.open).max().unwrap_or(0));
    }
}

/// A second of the run: the load's progress (after `prev`), the server's
/// `view`, the host.
fn sample(p: &Progress, prev: Option<&Progress>, view: Option<ServerView>) -> Sample {
    let (disconnects, reconnects) = p.per_second(prev);
    Sample {
        disconnects,
        reconnects,
        t: p.t,
        open: p.open,
        server_connections: view.map(|v| v.connections),
        server_rss: view.map(|v| v.rss),
        server_anon: view.map(|v| v.anon).filter(|a| *a > 0.0),
        server_fds: view.map(|v| v.fds),
        rtt_p99_ms: p.rtt_window.as_ref().map(|w| Percentiles::of(&w.to_hist()).p99_ms),
        load_anon: (p.rss_anon > 0).then_some(p.rss_anon as f64),
        host: HostView::read(Path::new("/proc")),
    }
}

/// Writes the `--json` report and the `--plot` SVG, where asked.
fn write_outputs(args: &LoadArgs, report: &Report) -> Result<(), String> {
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("--json {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let title = format!("wsloop load: {} ({})", report.scenario, args.url);
        plot::write_svg(path, &title, &report.timeline).map_err(|e| format!("--plot {}: {e}", path.display()))?;
    }
    Ok(())
}

/// A sample of the server's view alone (no client connections).
fn server_sample(t: f64, v: ServerView) -> Sample {
    Sample {
        t,
        server_connections: Some(v.connections),
        server_rss: Some(v.rss),
        server_anon: (v.anon > 0.0).then_some(v.anon),
        server_fds: Some(v.fds),
        ..Sample::default()
    }
}

/// Waits up to 30 s for the server to return to its baseline.
fn leak_check(urls: &[MetricsUrl], base: ServerView, start: Instant, timeline: &mut Vec<Sample>) -> LeakCheck {
    let deadline = Instant::now() + Duration::from_secs(30);
    let rss_allowed = base.rss * 1.25 + 32.0 * 1024.0 * 1024.0;
    let fds_allowed = base.fds + 8.0;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(v) = scrape::fetch_all(urls) {
            timeline.push(Sample {
                host: HostView::read(Path::new("/proc")),
                ..server_sample(start.elapsed().as_secs_f64(), v)
            });
            if v.connections == 0.0 && v.fds <= fds_allowed && v.rss <= rss_allowed {
                return LeakCheck {
                    clean: true,
                    detail: format!(
                        "connections 0, FDs {:.0} (baseline {:.0}), RSS {:.1} MB (baseline {:.1} MB)",
                        v.fds,
                        base.fds,
                        v.rss / 1e6,
                        base.rss / 1e6
                    ),
                };
            }
            last = Some(v);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let detail = match last {
        Some(v) => format!(
            "after 30 s: connections {:.0} (want 0), FDs {:.0} (baseline {:.0}), RSS {:.1} MB (baseline {:.1} MB)",
            v.connections,
            v.fds,
            base.fds,
            v.rss / 1e6,
            base.rss / 1e6
        ),
        None => "the metrics endpoint did not answer".into(),
    };
    LeakCheck { clean: false, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ip_ranges_and_lists() {
        let r = parse_source_ips("127.0.0.2-127.0.0.9").unwrap();
        assert_eq!(r.0.len(), 8);
        assert_eq!(r.0[0], "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(parse_source_ips("127.0.0.2,127.0.0.5").unwrap().0.len(), 2);
        assert!(parse_source_ips("127.0.0.9-127.0.0.2").is_err());
        assert!(parse_source_ips("localhost").is_err());
    }

    #[test]
    fn ws_urls() {
        let url = parse_ws_url("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!((url.addr.port(), url.host.as_str(), url.path.as_str()), (8080, "127.0.0.1:8080", "/ws"));
        assert!(!url.secure);
        assert_eq!(parse_ws_url("ws://127.0.0.1:9").unwrap().path, "/");
        let url = parse_ws_url("wss://localhost/ws").unwrap();
        assert_eq!((url.addr.port(), url.server_name.as_str(), url.secure), (443, "localhost", true));
        let url = parse_ws_url("wss://[::1]:9443/").unwrap();
        assert_eq!((url.addr.port(), url.server_name.as_str(), url.host.as_str()), (9443, "[::1]", "[::1]:9443"));
        assert!(parse_ws_url("http://127.0.0.1/ws").unwrap_err().contains("ws:// or wss://"));
    }
}
