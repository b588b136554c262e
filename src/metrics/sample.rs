//! One Prometheus sample, built the same way by every collector here (the
//! loops' families and the admin API's): its labels, its value, and
//! whether it is a counter or a gauge.

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricType};

/// A label pair.
pub(super) fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

/// A sample of `kind` (a counter, else a gauge) with `labels`.
pub(super) fn sample(kind: MetricType, labels: Vec<LabelPair>, value: f64) -> Metric {
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
