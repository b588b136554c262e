//! The wsloop metric families, built at scrape time from the loops'
//! atomic counters: nothing is updated on the event loops' behalf, and a
//! scrape never touches a loop.
//!
//! Metric names are a contract (see DESIGN.md): add, never rename.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};

use crate::server::stats::{handshake_failure_labels, CloseReason, LoopStats, ITERATION_BUCKETS};

/// What the collector reads: every loop's counters and the process limits.
#[derive(Clone)]
pub struct Source {
    /// Each loop's counters, in loop order.
    pub loops: Vec<Arc<LoopStats>>,
    /// The `--max-conns` in effect.
    pub max_conns: usize,
    /// Where /proc is (tests point it elsewhere).
    pub proc_root: PathBuf,
}

/// Name, help, type and variable label of each family this collector emits.
const FAMILIES: &[(&str, &str, MetricType, Option<&str>)] = &[
    ("wsloop_connections", "Open connections, per event loop.", MetricType::GAUGE, Some("loop")),
    ("wsloop_max_connections", "The --max-conns limit in effect.", MetricType::GAUGE, None),
    ("wsloop_connections_accepted_total", "Connections accepted.", MetricType::COUNTER, None),
    ("wsloop_connections_closed_total", "Connections closed, by reason.", MetricType::COUNTER, Some("reason")),
    (
        "wsloop_handshake_failures_total",
        "Refused or timed-out upgrades, by reason.",
        MetricType::COUNTER,
        Some("reason"),
    ),
    ("wsloop_messages_received_total", "Whole messages received.", MetricType::COUNTER, None),
    ("wsloop_messages_sent_total", "Messages sent.", MetricType::COUNTER, None),
    ("wsloop_bytes_received_total", "Bytes read from sockets.", MetricType::COUNTER, None),
    ("wsloop_bytes_sent_total", "Bytes written to sockets.", MetricType::COUNTER, None),
    (
        "wsloop_buffer_pool_buffers",
        "Pooled I/O buffers, held by connections (in_use) or spare (idle).",
        MetricType::GAUGE,
        Some("state"),
    ),
    (
        "wsloop_write_backlog_bytes",
        "Bytes queued for peers that read slower than they are sent to.",
        MetricType::GAUGE,
        None,
    ),
    ("wsloop_accept_pauses_total", "Times accepting paused because descriptors ran out.", MetricType::COUNTER, None),
    (
        "wsloop_loop_iteration_seconds",
        "Time one event loop pass spent handling events.",
        MetricType::HISTOGRAM,
        Some("loop"),
    ),
    (
        "wsloop_rooms",
        "Rooms with members, counted once per event loop that has members in them.",
        MetricType::GAUGE,
        None,
    ),
    ("wsloop_room_members", "Room memberships.", MetricType::GAUGE, None),
    ("wsloop_room_messages_published_total", "Messages published to rooms.", MetricType::COUNTER, None),
    (
        "wsloop_room_messages_delivered_total",
        "Room messages delivered to members (besides the publisher's own copy).",
        MetricType::COUNTER,
        None,
    ),
    (
        "wsloop_kernel_tcp_memory_bytes",
        "Memory the kernel's TCP stack holds (all sockets on the host), from /proc/net/sockstat.",
        MetricType::GAUGE,
        None,
    ),
];

/// A prometheus collector over a [`Source`].
pub struct WsloopCollector {
    source: Source,
    descs: Vec<Desc>,
}

impl WsloopCollector {
    /// A collector reading `source`.
    pub fn new(source: Source) -> Self {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, _, label)| {
                let labels = label.iter().map(|l| l.to_string()).collect();
                Desc::new(name.to_string(), help.to_string(), labels, HashMap::new()).expect("valid metric desc")
            })
            .collect();
        WsloopCollector { source, descs }
    }

    fn sum(&self, f: impl Fn(&LoopStats) -> u64) -> f64 {
        self.source.loops.iter().map(|s| f(s)).sum::<u64>() as f64
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

fn sample(kind: MetricType, labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut m = Metric::default();
    m.set_label(labels);
    if kind == MetricType::COUNTER {
        let mut c = Counter::default();
        c.set_value(value);
        m.set_counter(c);
    } else {
        let mut g = Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
    }
    m
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn iteration_histogram(stats: &LoopStats, loop_label: &str) -> Metric {
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(ITERATION_BUCKETS.len());
    for (i, bound) in ITERATION_BUCKETS.iter().enumerate() {
        cumulative += stats.iteration_buckets[i].get();
        let mut b = Bucket::default();
        b.set_upper_bound(*bound);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    cumulative += stats.iteration_buckets[ITERATION_BUCKETS.len()].get();
    let mut h = Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(cumulative);
    h.set_sample_sum(stats.iteration_nanos.get() as f64 / 1e9);
    let mut m = Metric::default();
    m.set_label(vec![label("loop", loop_label)]);
    m.set_histogram(h);
    m
}

impl Collector for WsloopCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let loops = &self.source.loops;
        let mut out = Vec::with_capacity(FAMILIES.len());
        for (name, help, kind, _) in FAMILIES {
            let kind = *kind;
            let one = |v: f64| vec![sample(kind, vec![], v)];
            let metrics = match *name {
                "wsloop_connections" => loops
                    .iter()
                    .enumerate()
                    .map(|(i, s)| sample(kind, vec![label("loop", &i.to_string())], s.connections.get() as f64))
                    .collect(),
                "wsloop_max_connections" => one(self.source.max_conns as f64),
                "wsloop_connections_accepted_total" => one(self.sum(|s| s.accepted.get())),
                "wsloop_connections_closed_total" => CloseReason::ALL
                    .iter()
                    .map(|r| sample(kind, vec![label("reason", r.label())], self.sum(|s| s.closed_by(*r))))
                    .collect(),
                "wsloop_handshake_failures_total" => handshake_failure_labels()
                    .map(|r| sample(kind, vec![label("reason", r)], self.sum(|s| s.handshake_failures_by(r))))
                    .collect(),
                "wsloop_messages_received_total" => one(self.sum(|s| s.messages_received.get())),
                "wsloop_messages_sent_total" => one(self.sum(|s| s.messages_sent.get())),
                "wsloop_bytes_received_total" => one(self.sum(|s| s.bytes_received.get())),
                "wsloop_bytes_sent_total" => one(self.sum(|s| s.bytes_sent.get())),
                "wsloop_buffer_pool_buffers" => vec![
                    sample(kind, vec![label("state", "in_use")], self.sum(|s| s.pool_in_use.get())),
                    sample(kind, vec![label("state", "idle")], self.sum(|s| s.pool_idle.get())),
                ],
                "wsloop_write_backlog_bytes" => one(self.sum(|s| s.backlog_bytes.get())),
                "wsloop_accept_pauses_total" => one(self.sum(|s| s.accept_pauses.get())),
                "wsloop_loop_iteration_seconds" => {
                    loops.iter().enumerate().map(|(i, s)| iteration_histogram(s, &i.to_string())).collect()
                }
                "wsloop_rooms" => one(self.sum(|s| s.rooms.get())),
                "wsloop_room_members" => one(self.sum(|s| s.room_members.get())),
                "wsloop_room_messages_published_total" => one(self.sum(|s| s.room_published.get())),
                "wsloop_room_messages_delivered_total" => one(self.sum(|s| s.room_delivered.get())),
                "wsloop_kernel_tcp_memory_bytes" => match super::sockstat::tcp_memory_bytes(&self.source.proc_root) {
                    Some(bytes) => one(bytes as f64),
                    None => continue,
                },
                other => unreachable!("family {other} has no collector"),
            };
            out.push(family(name, help, kind, metrics));
        }
        out
    }
}
