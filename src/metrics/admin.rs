//! The admin API's counters: written by its thread, read at scrape time,
//! so every request it answers (refusals included) shows on `/metrics`.
//!
//! The label sets are fixed ([`ROUTES`] x [`STATUSES`]): a peer's path or
//! method never becomes a label value, so no request can grow the series.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Metric, MetricFamily, MetricType};

/// The `route` label values; anything not one of the API's routes is `other`.
pub const ROUTES: [&str; 6] = ["publish", "disconnect", "rooms", "room", "user_connections", "other"];
/// The statuses the admin API answers with (the `status` label values).
pub const STATUSES: [u16; 11] = [200, 400, 401, 404, 405, 408, 411, 413, 431, 500, 503];

/// See the module docs.
#[derive(Debug, Default)]
pub struct AdminStats {
    /// Requests answered, by route and status (indices into the tables).
    requests: [[AtomicU64; STATUSES.len()]; ROUTES.len()],
    /// Connections the admin port holds now.
    pub connections: AtomicU64,
    /// Connections of this process closed by the API's disconnects.
    pub disconnected: AtomicU64,
    /// Messages this process's members were owed by the API's publishes.
    pub delivered: AtomicU64,
    /// Connections closed, before a whole request head came, to make room
    /// for a new one (the port's slots were all held).
    pub evicted: AtomicU64,
    /// Warning lines about peers left out of the log (over 20 a second).
    pub log_suppressed: AtomicU64,
}

impl AdminStats {
    /// Counts one answer of `status` on `route` (an index into [`ROUTES`]);
    /// a status outside [`STATUSES`] is counted as 500.
    pub fn count(&self, route: usize, status: u16) {
        let column = STATUSES.iter().position(|&s| s == status).unwrap_or(STATUSES.len() - 2);
        self.requests[route.min(ROUTES.len() - 1)][column].fetch_add(1, Relaxed);
    }

    /// The answers counted of `status` on `route`.
    pub fn requests(&self, route: usize, status: u16) -> u64 {
        STATUSES.iter().position(|&s| s == status).map_or(0, |column| self.requests[route][column].load(Relaxed))
    }
}

/// `wsloop_admin_*` from an [`AdminStats`].
pub struct AdminCollector {
    stats: Arc<AdminStats>,
    descs: Vec<Desc>,
}

const FAMILIES: [(&str, &str, &[&str]); 6] = [
    ("wsloop_admin_requests_total", "Admin API requests answered, by route and HTTP status.", &["route", "status"]),
    ("wsloop_admin_connections", "Connections the admin port holds now.", &[]),
    ("wsloop_admin_disconnected_total", "Connections of this process closed by admin disconnects.", &[]),
    ("wsloop_admin_delivered_total", "Messages owed to this process's members by admin publishes.", &[]),
    ("wsloop_admin_evicted_total", "Admin connections closed before a whole request head, to make room.", &[]),
    ("wsloop_admin_log_suppressed_total", "Admin warning lines about peers left out of the log (over 20/s).", &[]),
];

impl AdminCollector {
    /// A collector reading `stats`.
    pub fn new(stats: Arc<AdminStats>) -> AdminCollector {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, labels)| {
                let labels = labels.iter().map(|l| l.to_string()).collect();
                Desc::new(name.to_string(), help.to_string(), labels, Default::default()).expect("valid metric desc")
            })
            .collect();
        AdminCollector { stats, descs }
    }
}

fn metric(labels: &[(&str, &str)], value: f64, counter: bool) -> Metric {
    let kind = if counter { MetricType::COUNTER } else { MetricType::GAUGE };
    let labels = labels.iter().map(|(name, value)| super::sample::label(name, value)).collect();
    super::sample::sample(kind, labels, value)
}

impl Collector for AdminCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = &self.stats;
        let mut requests = Vec::new();
        for (r, route) in ROUTES.iter().enumerate() {
            for status in STATUSES {
                let n = s.requests(r, status);
                if n > 0 || (route != &"other" && status == 200) {
                    requests.push(metric(&[("route", route), ("status", &status.to_string())], n as f64, true));
                }
            }
        }
        let samples = [
            requests,
            vec![metric(&[], s.connections.load(Relaxed) as f64, false)],
            vec![metric(&[], s.disconnected.load(Relaxed) as f64, true)],
            vec![metric(&[], s.delivered.load(Relaxed) as f64, true)],
            vec![metric(&[], s.evicted.load(Relaxed) as f64, true)],
            vec![metric(&[], s.log_suppressed.load(Relaxed) as f64, true)],
        ];
        FAMILIES
            .iter()
            .zip(samples)
            .map(|((name, help, _), metrics)| {
                let mut f = MetricFamily::default();
                f.set_name(name.to_string());
                f.set_help(help.to_string());
                let counter = name.ends_with("_total");
                f.set_field_type(if counter { MetricType::COUNTER } else { MetricType::GAUGE });
                f.set_metric(metrics);
                f
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_lands_in_a_fixed_series() {
        let stats = Arc::new(AdminStats::default());
        stats.count(0, 200);
        stats.count(5, 401);
        stats.count(99, 404); // out of range: `other`
        stats.count(1, 299); // not a status the API uses: 500
        assert_eq!((stats.requests(0, 200), stats.requests(5, 401), stats.requests(5, 404)), (1, 1, 1));
        assert_eq!(stats.requests(1, 500), 1);
        let families = AdminCollector::new(stats).collect();
        assert_eq!(families.len(), 6);
        let requests = &families[0];
        assert_eq!(requests.get_field_type(), MetricType::COUNTER);
        // One 200 series per real route, plus every nonzero one.
        assert_eq!(requests.get_metric().len(), 5 + 3);
    }
}
