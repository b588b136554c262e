//! The picture an operator wants after a ramp, as one SVG: connections
//! (client and server, and those lost and back each second during a
//! deploy), the round trip's p99 second by second, user-space
//! memory (servers and load generator), the kernel's memory (slab, TCP
//! buffers) and server descriptors over time. Tick labels read like the
//! figures people quote: 250k, 1M, 512 MB, 8 GB.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::Sample;

/// A number with an SI suffix and at most three significant digits:
/// 250000 -> "250k", 1000000 -> "1M", 1500000 -> "1.5M", 12.5 -> "12.5".
pub fn si(v: f64) -> String {
    let (scaled, suffix) = match v.abs() {
        a if a >= 1e9 => (v / 1e9, "G"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let digits = match scaled.abs() {
        a if a >= 100.0 || a == a.trunc() => 0,
        a if a >= 10.0 => 1,
        _ => 2,
    };
    let text = format!("{scaled:.digits$}");
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text };
    format!("{text}{suffix}")
}

/// Bytes in decimal units: 0 -> "0 B", 512e6 -> "512 MB", 8.2e9 -> "8.2 GB".
pub fn bytes(v: f64) -> String {
    let text = si(v);
    match text.strip_suffix(['k', 'M', 'G']) {
        Some(n) => format!("{n} {}B", &text[n.len()..]),
        None => format!("{text} B"),
    }
}

type Series<'a> = Vec<(&'a str, RGBColor, Box<dyn Fn(&Sample) -> Option<f64>>)>;

/// One chart: its caption, how its y ticks read, and its lines.
struct Panel<'a> {
    caption: &'a str,
    label: fn(f64) -> String,
    series: Series<'a>,
}

/// Draws the timeline into an SVG file at `path`. Panels with no data
/// (no `--metrics-url`, no round trips) are drawn empty, not left out, so
/// every plot has the same layout.
pub fn write_svg(path: &Path, title: &str, timeline: &[Sample]) -> Result<(), String> {
    let panels = panels();
    let root = SVGBackend::new(path, (1000, 1500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((panels.len(), 1));
    let t_max = timeline.last().map_or(1.0, |s| s.t).max(1.0);
    for (area, panel) in areas.iter().zip(panels.iter()) {
        draw_panel(area, panel, timeline, t_max)?;
    }
    root.present().map_err(|e| e.to_string())
}

/// The charts, top to bottom: connections (and, during a deploy, those
/// lost and back each second), the round trip's p99,
/// user-space memory, the kernel's memory, server descriptors.
fn panels() -> [Panel<'static>; 5] {
    [
        Panel {
            caption: "connections",
            label: si,
            series: vec![
                ("client open", BLUE, Box::new(|s: &Sample| Some(s.open as f64))),
                ("server", RED, Box::new(|s: &Sample| s.server_connections)),
                ("lost per second", MAGENTA, Box::new(|s: &Sample| Some(s.disconnects as f64))),
                ("reconnects per second", GREEN, Box::new(|s: &Sample| Some(s.reconnects as f64))),
            ],
        },
        Panel {
            caption: "round trip p99 per second (ms)",
            label: si,
            series: vec![("p99", BLACK, Box::new(|s: &Sample| s.rtt_p99_ms))],
        },
        Panel {
            caption: "user-space memory",
            label: bytes,
            series: vec![
                ("servers RSS", GREEN, Box::new(|s: &Sample| s.server_rss)),
                ("servers anonymous", CYAN, Box::new(|s: &Sample| s.server_anon)),
                ("load generator anonymous", BLUE, Box::new(|s: &Sample| s.load_anon)),
            ],
        },
        Panel {
            caption: "kernel memory (this host)",
            label: bytes,
            series: vec![
                ("slab", RED, Box::new(|s: &Sample| s.host.map(|h| h.slab))),
                ("slab unreclaimable", MAGENTA, Box::new(|s: &Sample| s.host.map(|h| h.slab_unreclaimable))),
                ("TCP buffers", BLACK, Box::new(|s: &Sample| s.host.map(|h| h.tcp_buffers))),
            ],
        },
        Panel {
            caption: "server open FDs",
            label: si,
            series: vec![("FDs", MAGENTA, Box::new(|s: &Sample| s.server_fds))],
        },
    ]
}

/// Draws one panel into `area`: seconds from 0 to `t_max` across, its
/// largest value and a tenth up, each line that has points, the legend.
fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    panel: &Panel<'_>,
    timeline: &[Sample],
    t_max: f64,
) -> Result<(), String> {
    let y_max = panel.series.iter().flat_map(|(_, _, f)| timeline.iter().filter_map(f)).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .caption(panel.caption, ("sans-serif", 16))
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .x_label_formatter(&|v| si(*v))
        .y_label_formatter(&|v| (panel.label)(*v))
        .draw()
        .map_err(|e| e.to_string())?;
    for (label, color, f) in &panel.series {
        let points: Vec<(f64, f64)> = timeline.iter().filter_map(|s| f(s).map(|v| (s.t, v))).collect();
        if points.is_empty() {
            continue;
        }
        let color = *color;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart.configure_series_labels().border_style(BLACK).draw().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::HostView;

    #[test]
    fn tick_labels_read_like_quoted_figures() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(12.5), "12.5");
        assert_eq!(si(250_000.0), "250k");
        assert_eq!(si(1_000_000.0), "1M");
        assert_eq!(si(1_500_000.0), "1.5M");
        assert_eq!(si(1_250_000.0), "1.25M");
        assert_eq!(si(999.0), "999");
        assert_eq!(bytes(0.0), "0 B");
        assert_eq!(bytes(512e6), "512 MB");
        assert_eq!(bytes(8.2e9), "8.2 GB");
        assert_eq!(bytes(4096.0), "4.1 kB");
    }

    #[test]
    fn writes_an_svg() {
        let dir = std::env::temp_dir().join(format!("wsloop-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.svg");
        let timeline: Vec<Sample> = (0..10)
            .map(|i| Sample {
                t: i as f64,
                open: i * 100_000,
                server_connections: Some(i as f64 * 100_000.0),
                server_rss: Some(1e7),
                server_anon: Some(5e6),
                server_fds: Some(20.0 + i as f64 * 10.0),
                rtt_p99_ms: Some(2.5),
                load_anon: Some(4e6),
                host: Some(HostView { slab: 2e9, slab_unreclaimable: 1e9, tcp_sockets: 10.0, tcp_buffers: 1e6 }),
                disconnects: if i == 5 { 400_000 } else { 0 },
                reconnects: if i == 6 { 400_000 } else { 0 },
            })
            .collect();
        write_svg(&path, "test", &timeline).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("client open"));
        for label in [
            "round trip p99",
            "reconnects per second",
            "slab unreclaimable",
            "load generator anonymous",
            "900k",
            "2 GB",
        ] {
            assert!(svg.contains(label), "the plot shows {label}");
        }
        assert!(!svg.contains("900000"), "no raw tick numbers");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
