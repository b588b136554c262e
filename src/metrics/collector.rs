//! The wsloop metric families, built at scrape time from the loops'
//! atomic counters: nothing is updated on the event loops' behalf, and a
//! scrape never touches a loop. The metrics port's own families
//! (`wsloop_metrics_http_*`) are read the same way from its thread's
//! counters.
//!
//! Metric names are a contract (README, Metrics; the dashboard): add, never rename.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::sample::{label, sample};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Histogram, Metric, MetricFamily, MetricType};

use super::head::Refusal;
use super::http::{HttpStats, Phase};
use crate::server::bridge::BridgeStats;
use crate::server::handler::{PublishRefusal, PublishRefusals};
use crate::server::identity::{Denied, Rejection, Verifier};
use crate::server::stats::{
    handshake_failure_labels, Counter as LoopCounter, LoopStats, ProxyRefusal, ITERATION_BUCKETS, TLS_HANDSHAKE_BUCKETS,
};
use crate::server::tls::TlsFailure;
use crate::server::{CloseReason, MemoryBudget, ServerHandle};

/// What the collector reads: every loop's counters and the process limits.
#[derive(Clone)]
pub struct Source {
    /// Each loop's counters, in loop order.
    pub loops: Vec<Arc<LoopStats>>,
    /// The `--max-conns` in effect.
    pub max_conns: usize,
    /// Where /proc is (tests point it elsewhere).
    pub proc_root: PathBuf,
    /// The Redis bridge's counters, if the server has a bridge.
    pub bridge: Option<Arc<BridgeStats>>,
    /// The application's refused publishes, if it counts them (the
    /// built-in echo app does; see [`Source::with_publish_refusals`]).
    pub publish_refusals: Option<Arc<PublishRefusals>>,
    /// The process's memory budget, if the server has one to report.
    pub memory: Option<Arc<MemoryBudget>>,
    /// Room publishes dropped at a full loop inbox, if reported.
    pub inbox_dropped: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The admin API's counters, when it runs (`--admin-addr`).
    pub admin: Option<Arc<super::admin::AdminStats>>,
    /// The token checks (`--jwt-key`), if the server makes them.
    pub jwt: Option<Arc<Verifier>>,
}

impl Source {
    /// What a running server offers: its loops, its limit, its bridge.
    pub fn of(server: &ServerHandle) -> Source {
        Source {
            loops: server.stats().to_vec(),
            max_conns: server.max_conns(),
            proc_root: "/proc".into(),
            bridge: server.bridge_stats(),
            publish_refusals: None,
            memory: Some(server.memory_budget()),
            inbox_dropped: Some(server.inbox_dropped()),
            admin: None,
            jwt: None,
        }
    }

    /// Also reports the admin API's counters (`wsloop_admin_*`).
    pub fn with_admin(mut self, stats: Arc<super::admin::AdminStats>) -> Source {
        self.admin = Some(stats);
        self
    }

    /// Also reports the tokens refused and the room actions denied
    /// (`wsloop_auth_*`), from the verifier the server checks tokens with.
    pub fn with_jwt(mut self, jwt: Option<Arc<Verifier>>) -> Source {
        self.jwt = jwt;
        self
    }

    /// Also reports the publishes the application refused
    /// (`wsloop_publish_refused_total`), from the counters it was given.
    pub fn with_publish_refusals(mut self, refusals: Arc<PublishRefusals>) -> Source {
        self.publish_refusals = Some(refusals);
        self
    }
}

/// One metric family: what it is called and means, and how its samples are
/// read from its source `S` at scrape time (`None`: nothing to report now).
struct Family<S: 'static> {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    /// The label that tells its samples apart, if it has several.
    label: Option<&'static str>,
    read: fn(&S, MetricType) -> Option<Vec<Metric>>,
}

/// Every family this collector emits, in exposition order.
const FAMILIES: &[Family<Source>] = &[
    Family {
        name: "wsloop_connections",
        help: "Open connections, per event loop.",
        kind: MetricType::GAUGE,
        label: Some("loop"),
        read: |src, kind| Some(per_loop(src, |i, s| sample(kind, vec![label("loop", &i)], s.connections.get() as f64))),
    },
    Family {
        name: "wsloop_max_connections",
        help: "The --max-conns limit in effect.",
        kind: MetricType::GAUGE,
        label: None,
        read: |src, kind| one(kind, src.max_conns as f64),
    },
    Family {
        name: "wsloop_connections_accepted_total",
        help: "Connections accepted.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.accepted.get())),
    },
    Family {
        name: "wsloop_connections_closed_total",
        help: "Connections closed, by reason.",
        kind: MetricType::COUNTER,
        label: Some("reason"),
        read: |src, kind| {
            let by = |r: &CloseReason| sample(kind, vec![label("reason", r.label())], src.sum(|s| s.closed_by(*r)));
            Some(CloseReason::ALL.iter().map(by).collect())
        },
    },
    Family {
        name: "wsloop_drain_remaining",
        help: "Connections a paced drain (--drain-period, or a hand-off's unmovable ones) has still to ask to leave.",
        kind: MetricType::GAUGE,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.drain_remaining.get())),
    },
    Family {
        name: "wsloop_drained_total",
        help: "Connections asked to leave with 1012 and a reconnect hint, by why: a paced drain (drain) or --max-connection-age (age).",
        kind: MetricType::COUNTER,
        label: Some("why"),
        read: |src, kind| {
            let drain = sample(kind, vec![label("why", "drain")], src.sum(|s| s.drained_by_drain.get()));
            let age = sample(kind, vec![label("why", "age")], src.sum(|s| s.drained_by_age.get()));
            Some(vec![drain, age])
        },
    },
    Family {
        name: "wsloop_handshake_failures_total",
        help: "Refused or timed-out upgrades, by reason.",
        kind: MetricType::COUNTER,
        label: Some("reason"),
        read: |src, kind| {
            let by = |r| sample(kind, vec![label("reason", r)], src.sum(|s| s.handshake_failures_by(r)));
            Some(handshake_failure_labels().map(by).collect())
        },
    },
    Family {
        name: "wsloop_messages_received_total",
        help: "Whole messages received.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.messages_received.get())),
    },
    Family {
        name: "wsloop_messages_sent_total",
        help: "Messages sent.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.messages_sent.get())),
    },
    Family {
        name: "wsloop_bytes_received_total",
        help: "Bytes read from sockets.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.bytes_received.get())),
    },
    Family {
        name: "wsloop_bytes_sent_total",
        help: "Bytes written to sockets.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.bytes_sent.get())),
    },
    Family {
        name: "wsloop_buffer_pool_buffers",
        help: "Pooled I/O buffers, held by connections (in_use) or spare (idle).",
        kind: MetricType::GAUGE,
        label: Some("state"),
        read: |src, kind| {
            Some(vec![
                sample(kind, vec![label("state", "in_use")], src.sum(|s| s.pool_in_use.get())),
                sample(kind, vec![label("state", "idle")], src.sum(|s| s.pool_idle.get())),
            ])
        },
    },
    Family {
        name: "wsloop_write_backlog_bytes",
        help: "Bytes queued for peers that read slower than they are sent to.",
        kind: MetricType::GAUGE,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.backlog_bytes.get())),
    },
    Family {
        name: "wsloop_memory_budget_bytes",
        help: "What the process holds against --memory-limit, by kind (each shared frame once).",
        kind: MetricType::GAUGE,
        label: Some("kind"),
        read: |src, kind| {
            let usage = src.memory.as_ref()?.usage();
            Some(usage.by_kind().iter().map(|(k, n)| sample(kind, vec![label("kind", k)], *n as f64)).collect())
        },
    },
    Family {
        name: "wsloop_memory_limit_bytes",
        help: "The --memory-limit in effect (0: none); its soft mark is 3/4 of it.",
        kind: MetricType::GAUGE,
        label: None,
        read: |src, kind| one(kind, src.memory.as_ref()?.limit() as f64),
    },
    Family {
        name: "wsloop_memory_budget_level",
        help: "0 under the soft mark, 1 past it (new connections refused, large holders not read), 2 past the limit.",
        kind: MetricType::GAUGE,
        label: None,
        read: |src, kind| one(kind, src.memory.as_ref()?.level_number() as f64),
    },
    Family {
        name: "wsloop_memory_budget_throttled_total",
        help: "Connections no longer read while the process was past its memory budget's soft mark.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.budget_throttled.get())),
    },
    Family {
        name: "wsloop_memory_budget_shed_total",
        help: "Connections closed as the largest holders past the memory budget (1009 or 1013).",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.budget_shed.get())),
    },
    Family {
        name: "wsloop_inbox_dropped_total",
        help: "Room publishes a loop missed because its inbox held 65,536 messages already.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.inbox_dropped.as_ref()?.load(Relaxed) as f64),
    },
    Family {
        name: "wsloop_accept_pauses_total",
        help: "Times accepting paused because descriptors ran out.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.accept_pauses.get())),
    },
    Family {
        name: "wsloop_handed_off_total",
        help: "Connections handed to a new process by a live hand-off (--takeover).",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.handed_off.get())),
    },
    Family {
        name: "wsloop_adopted_total",
        help: "Connections adopted from an earlier process by a live hand-off, or taken back after one failed.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.adopted.get())),
    },
    Family {
        name: "wsloop_adopt_failed_total",
        help: "Carried connections a live hand-off could not adopt (closed).",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.adopt_failed.get())),
    },
    Family {
        name: "wsloop_admin_kicks_kept_total",
        help: "Admin kicks from other hosts kept by a loop frozen for a live hand-off, carried out at its thaw.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.admin_kicks_kept.get())),
    },
    Family {
        name: "wsloop_admin_kicks_missed_total",
        help: "Admin kicks from other hosts a frozen loop could not keep (over its bound of 1024).",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.admin_kicks_missed.get())),
    },
    Family {
        name: "wsloop_memory_releases_total",
        help: "Times a loop gave its peak's memory back after its connections left (--release-memory-after).",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.memory_releases.get())),
    },
    Family {
        name: "wsloop_io_driver",
        help: "Event loops running each I/O driver (epoll or uring).",
        kind: MetricType::GAUGE,
        label: Some("driver"),
        read: |src, kind| {
            let uring = src.sum(|s| s.uring.get());
            Some(vec![
                sample(kind, vec![label("driver", "epoll")], src.loops.len() as f64 - uring),
                sample(kind, vec![label("driver", "uring")], uring),
            ])
        },
    },
    Family {
        name: "wsloop_uring_enobufs_total",
        help: "io_uring receives that found the provided-buffer ring empty (the ring then grows).",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.uring_enobufs.get())),
    },
    Family {
        name: "wsloop_uring_cq_overflow_total",
        help: "io_uring completions the kernel dropped because the completion queue was full.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.uring_cq_overflow.get())),
    },
    Family {
        name: "wsloop_uring_buffers",
        help: "io_uring receive buffers provided to the kernel, across loops.",
        kind: MetricType::GAUGE,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.uring_buffers.get())),
    },
    Family {
        name: "wsloop_tls_handshakes_total",
        help: "TLS handshakes completed.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.tls_handshakes.get())),
    },
    Family {
        name: "wsloop_tls_handshake_failures_total",
        help: "TLS handshakes that failed, by reason.",
        kind: MetricType::COUNTER,
        label: Some("reason"),
        read: |src, kind| {
            let by = |f: &TlsFailure| sample(kind, vec![label("reason", f.label())], src.sum(|s| s.tls_failures_by(*f)));
            Some(TlsFailure::ALL.iter().map(by).collect())
        },
    },
    Family {
        name: "wsloop_proxy_refused_total",
        help: "Connections refused for their PROXY protocol header, by reason: from outside --trusted-proxies (untrusted), a broken or missing header (malformed), none by the handshake deadline (timeout).",
        kind: MetricType::COUNTER,
        label: Some("reason"),
        read: |src, kind| {
            let by = |r: &ProxyRefusal| sample(kind, vec![label("reason", r.label())], src.sum(|s| s.proxy_refused_by(*r)));
            Some(ProxyRefusal::ALL.iter().map(by).collect())
        },
    },
    Family {
        name: "wsloop_forwarded_unusable_total",
        help: "Upgrades from a trusted proxy whose X-Forwarded-For or Forwarded named no usable client (the proxy's address was kept).",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.forwarded_unusable.get())),
    },
    Family {
        name: "wsloop_tls_handshake_seconds",
        help: "Time from accept to TLS keys agreed.",
        kind: MetricType::HISTOGRAM,
        label: Some("loop"),
        read: |src, _| {
            let of = |i: String, s: &LoopStats| {
                histogram(&TLS_HANDSHAKE_BUCKETS, &s.tls_handshake_buckets, s.tls_handshake_nanos.get(), &i)
            };
            Some(per_loop(src, of))
        },
    },
    Family {
        name: "wsloop_tls_handshakes_deferred_total",
        help: "TLS handshake turns put off to a later loop pass by the per-pass handshake budget.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.tls_deferred.get())),
    },
    Family {
        name: "wsloop_rate_limited_total",
        help: "Per-connection message rate (--rate-messages, --rate-bytes), by action: warned (the rate_limited error, once per episode), dropped (messages not handed to the application), closed (1008, a second burst owed).",
        kind: MetricType::COUNTER,
        label: Some("action"),
        read: |src, kind| {
            let of = |action, read: fn(&LoopStats) -> u64| sample(kind, vec![label("action", action)], src.sum(read));
            Some(vec![
                of("warned", |s| s.rate_warned.get()),
                of("dropped", |s| s.rate_dropped.get()),
                of("closed", |s| s.rate_closed.get()),
            ])
        },
    },
    Family {
        name: "wsloop_loop_iteration_seconds",
        help: "Time one event loop pass spent handling events.",
        kind: MetricType::HISTOGRAM,
        label: Some("loop"),
        read: |src, _| {
            let of = |i: String, s: &LoopStats| {
                histogram(&ITERATION_BUCKETS, &s.iteration_buckets, s.iteration_nanos.get(), &i)
            };
            Some(per_loop(src, of))
        },
    },
    Family {
        name: "wsloop_rooms",
        help: "Rooms with members, counted once per event loop that has members in them.",
        kind: MetricType::GAUGE,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.rooms.get())),
    },
    Family {
        name: "wsloop_room_members",
        help: "Room memberships.",
        kind: MetricType::GAUGE,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.room_members.get())),
    },
    Family {
        name: "wsloop_room_messages_published_total",
        help: "Messages published to rooms.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.room_published.get())),
    },
    Family {
        name: "wsloop_room_messages_delivered_total",
        help: "Room messages delivered to members (besides the publisher's own copy).",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.room_delivered.get())),
    },
    Family {
        name: "wsloop_room_writes_total",
        help: "Writes that carried room deliveries: one per member per loop pass, however many it was owed.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.room_writes.get())),
    },
    Family {
        name: "wsloop_publish_refused_total",
        help: "Publishes and broadcasts from clients the application refused, by reason (its error reply's code).",
        kind: MetricType::COUNTER,
        label: Some("reason"),
        read: |src, kind| {
            let refused = src.publish_refusals.as_ref()?;
            let by = |r: &PublishRefusal| sample(kind, vec![label("reason", r.label())], refused.get(*r) as f64);
            Some(PublishRefusal::ALL.iter().map(by).collect())
        },
    },
    Family {
        name: "wsloop_auth_refused_total",
        help: "Tokens refused (--jwt-key), at upgrade (401/403/429) or in a refresh, by reason.",
        kind: MetricType::COUNTER,
        label: Some("reason"),
        read: |src, kind| {
            let counts = &src.jwt.as_ref()?.counts;
            let by = |r: &Rejection| sample(kind, vec![label("reason", r.label())], counts.refused(*r) as f64);
            Some(Rejection::ALL.iter().map(by).collect())
        },
    },
    Family {
        name: "wsloop_auth_denied_total",
        help: "Joins, publishes and broadcasts the connection's token did not allow, by action.",
        kind: MetricType::COUNTER,
        label: Some("action"),
        read: |src, kind| {
            let counts = &src.jwt.as_ref()?.counts;
            let by = |d: &Denied| sample(kind, vec![label("action", d.label())], counts.denied(*d) as f64);
            Some(Denied::ALL.iter().map(by).collect())
        },
    },
    Family {
        name: "wsloop_token_refreshes_total",
        help: "Refreshes of a connection's token, by result: taken, or refused (the old token stays; the connection is closed 1008).",
        kind: MetricType::COUNTER,
        label: Some("result"),
        read: |src, kind| {
            let counts = &src.jwt.as_ref()?.counts;
            let by = |(result, taken): (&str, bool)| sample(kind, vec![label("result", result)], counts.refreshed(taken) as f64);
            Some([("taken", true), ("refused", false)].into_iter().map(by).collect())
        },
    },
    Family {
        name: "wsloop_compressed_messages_total",
        help: "Messages sent compressed (permessage-deflate); a room publish counts once per window it was compressed for.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.compressed_messages.get())),
    },
    Family {
        name: "wsloop_compression_plain_bytes_total",
        help: "Payload bytes of the messages sent compressed, before compression.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.compressed_plain_bytes.get())),
    },
    Family {
        name: "wsloop_compression_deflated_bytes_total",
        help: "Payload bytes of the messages sent compressed, after compression.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.compressed_bytes.get())),
    },
    Family {
        name: "wsloop_compression_dedicated_connections",
        help: "Connections holding a compression context of their own (--compression dedicated).",
        kind: MetricType::GAUGE,
        label: None,
        read: |src, kind| one(kind, src.sum(|s| s.dedicated_codecs.get())),
    },
    Family {
        name: "wsloop_resident_anon_bytes",
        help: "This process's anonymous resident memory (heap, stacks, buffers): RSS less the binary's shared file pages.",
        kind: MetricType::GAUGE,
        label: None,
        read: |src, kind| one(kind, crate::tune::procfs::resident_anon_bytes(&src.proc_root.join("self/status"))? as f64),
    },
    Family {
        name: "wsloop_kernel_tcp_memory_bytes",
        help: "Memory the kernel's TCP stack holds (all sockets on the host), from /proc/net/sockstat.",
        kind: MetricType::GAUGE,
        label: None,
        read: |src, kind| one(kind, crate::tune::sockstat::tcp_memory_bytes(&src.proc_root)? as f64),
    },
    Family {
        name: "wsloop_redis_bridge_up",
        help: "1 while both connections to Redis are up (--redis-url); 0 while rooms are local only.",
        kind: MetricType::GAUGE,
        label: None,
        read: |src, kind| one(kind, src.bridge.as_ref()?.is_up() as u8 as f64),
    },
    Family {
        name: "wsloop_redis_subscribed_rooms",
        help: "Room channels subscribed in Redis: the rooms with members in this process.",
        kind: MetricType::GAUGE,
        label: None,
        read: |src, kind| one(kind, src.bridge.as_ref()?.subscriptions.load(Relaxed) as f64),
    },
    Family {
        name: "wsloop_redis_publishes_total",
        help: "Room publishes sent to Redis for other processes and hosts.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.bridge.as_ref()?.published.load(Relaxed) as f64),
    },
    Family {
        name: "wsloop_redis_messages_received_total",
        help: "Room publishes from other processes and hosts, passed to this process's loops.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.bridge.as_ref()?.received.load(Relaxed) as f64),
    },
    Family {
        name: "wsloop_redis_publishes_dropped_total",
        help: "Room publishes other hosts did not get, by reason (local members got them).",
        kind: MetricType::COUNTER,
        label: Some("reason"),
        read: |src, kind| {
            let b = src.bridge.as_ref()?;
            let reasons = [
                ("redis_down", &b.dropped_redis_down),
                ("queue_full", &b.dropped_queue_full),
                ("too_large", &b.dropped_too_large),
                ("bad_room", &b.dropped_bad_room),
                ("malformed", &b.dropped_malformed),
                ("handoff_held", &b.dropped_handoff_held),
            ];
            Some(reasons.iter().map(|(r, n)| sample(kind, vec![label("reason", r)], n.load(Relaxed) as f64)).collect())
        },
    },
    Family {
        name: "wsloop_redis_queued_bytes",
        help: "Bytes of publishes waiting for (or being sent by) the Redis publisher; at most --redis-queue-bytes.",
        kind: MetricType::GAUGE,
        label: None,
        read: |src, kind| one(kind, src.bridge.as_ref()?.queued_bytes() as f64),
    },
    Family {
        name: "wsloop_redis_max_publish_bytes",
        help: "The largest publish sent to Redis now: --redis-max-publish-size, or half of Redis's pubsub output-buffer limit if less.",
        kind: MetricType::GAUGE,
        label: None,
        read: |src, kind| one(kind, src.bridge.as_ref()?.max_publish_bytes() as f64),
    },
    Family {
        name: "wsloop_redis_reconnects_total",
        help: "Connections to Redis made again after one was lost or refused.",
        kind: MetricType::COUNTER,
        label: None,
        read: |src, kind| one(kind, src.bridge.as_ref()?.reconnects.load(Relaxed) as f64),
    },
];

impl Source {
    /// A counter summed over every loop.
    fn sum(&self, f: impl Fn(&LoopStats) -> u64) -> f64 {
        self.loops.iter().map(|s| f(s)).sum::<u64>() as f64
    }
}

/// One sample per loop, labelled with the loop's index.
fn per_loop(src: &Source, f: impl Fn(String, &LoopStats) -> Metric) -> Vec<Metric> {
    src.loops.iter().enumerate().map(|(i, s)| f(i.to_string(), s)).collect()
}

/// A family of one unlabelled sample.
fn one(kind: MetricType, value: f64) -> Option<Vec<Metric>> {
    Some(vec![sample(kind, vec![], value)])
}

/// A prometheus collector over a [`Source`].
pub struct WsloopCollector {
    source: Source,
    descs: Vec<Desc>,
}

impl WsloopCollector {
    /// A collector reading `source`.
    pub fn new(source: Source) -> Self {
        WsloopCollector { source, descs: descs(FAMILIES) }
    }
}

/// The metrics port's own families: what its server refused, evicted and
/// timed out (`http.rs`), so a flood of the port shows.
const HTTP_FAMILIES: &[Family<HttpStats>] = &[
    Family {
        name: "wsloop_metrics_http_connections",
        help: "Connections the metrics port holds now.",
        kind: MetricType::GAUGE,
        label: None,
        read: |s, kind| one(kind, s.connections.load(Relaxed) as f64),
    },
    Family {
        name: "wsloop_metrics_http_evicted_total",
        help: "Metrics port connections closed to make room for a newer one (all slots held, or no descriptor left), by the phase they were in.",
        kind: MetricType::COUNTER,
        label: Some("phase"),
        read: |s, kind| by_phase(kind, &s.evicted, &[Phase::Head, Phase::Reply, Phase::Closing]),
    },
    Family {
        name: "wsloop_metrics_http_timeouts_total",
        help: "Metrics port connections closed at a deadline: no complete request head in time (head), reply not taken in time (reply).",
        kind: MetricType::COUNTER,
        label: Some("phase"),
        read: |s, kind| by_phase(kind, &s.timeouts, &[Phase::Head, Phase::Reply]),
    },
    Family {
        name: "wsloop_metrics_http_refused_total",
        help: "Metrics port requests refused, by reason: malformed (400), header_too_large (431), method (405).",
        kind: MetricType::COUNTER,
        label: Some("reason"),
        read: |s, kind| {
            let by = |r: &Refusal| sample(kind, vec![label("reason", r.label())], s.refused[*r as usize].load(Relaxed) as f64);
            Some(Refusal::ALL.iter().map(by).collect())
        },
    },
    Family {
        name: "wsloop_metrics_http_accept_failures_total",
        help: "Accepts on the metrics port that failed (out of descriptors, most often).",
        kind: MetricType::COUNTER,
        label: None,
        read: |s, kind| one(kind, s.accept_failures.load(Relaxed) as f64),
    },
];

/// One sample per phase from counters indexed by phase.
fn by_phase(kind: MetricType, counters: &[std::sync::atomic::AtomicU64; 3], phases: &[Phase]) -> Option<Vec<Metric>> {
    let of = |p: &Phase| sample(kind, vec![label("phase", p.label())], counters[*p as usize].load(Relaxed) as f64);
    Some(phases.iter().map(of).collect())
}

/// A collector over the metrics port's counters.
pub(crate) struct HttpCollector {
    stats: Arc<HttpStats>,
    descs: Vec<Desc>,
}

impl HttpCollector {
    /// A collector reading the counters of the port's server.
    pub(crate) fn new(stats: Arc<HttpStats>) -> Self {
        HttpCollector { stats, descs: descs(HTTP_FAMILIES) }
    }
}

impl Collector for HttpCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        collect(HTTP_FAMILIES, &self.stats)
    }
}

/// The descriptions of a table of families.
fn descs<S>(families: &[Family<S>]) -> Vec<Desc> {
    families
        .iter()
        .map(|f| {
            let labels = f.label.iter().map(|l| l.to_string()).collect();
            Desc::new(f.name.to_string(), f.help.to_string(), labels, HashMap::new()).expect("valid metric desc")
        })
        .collect()
}

/// A table of families, read from their source now.
fn collect<S>(families: &[Family<S>], source: &S) -> Vec<MetricFamily> {
    families.iter().filter_map(|f| Some(family(f.name, f.help, f.kind, (f.read)(source, f.kind)?))).collect()
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

/// A histogram of one loop from its per-bucket counts (the last one past
/// every bound) and the sum of its samples in nanoseconds.
fn histogram(bounds: &[f64], counts: &[LoopCounter], nanos: u64, loop_label: &str) -> Metric {
    debug_assert_eq!(counts.len(), bounds.len() + 1);
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(bounds.len());
    for (i, bound) in bounds.iter().enumerate() {
        cumulative += counts[i].get();
        let mut b = Bucket::default();
        b.set_upper_bound(*bound);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    cumulative += counts[bounds.len()].get();
    let mut h = Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(cumulative);
    h.set_sample_sum(nanos as f64 / 1e9);
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
        collect(FAMILIES, &self.source)
    }
}
