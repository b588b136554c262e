//! The picture an operator wants after a ramp: connections (client and
//! server), server RSS and server descriptors over time, as one SVG.

use std::path::Path;

use plotters::prelude::*;

use super::report::Sample;

/// Draws the timeline into an SVG file at `path`.
pub fn write_svg(path: &Path, title: &str, timeline: &[Sample]) -> Result<(), String> {
    let root = SVGBackend::new(path, (1000, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|e| e.to_string())?;
    let panels = root.split_evenly((3, 1));
    let t_max = timeline.last().map_or(1.0, |s| s.t).max(1.0);
    type Series<'a> = Vec<(&'a str, RGBColor, Box<dyn Fn(&Sample) -> Option<f64>>)>;
    let charts: [(&str, Series<'_>); 3] = [
        (
            "connections",
            vec![
                ("client open", BLUE, Box::new(|s: &Sample| Some(s.open as f64))),
                ("server", RED, Box::new(|s: &Sample| s.server_connections)),
            ],
        ),
        ("server RSS (MB)", vec![("RSS", GREEN, Box::new(|s: &Sample| s.server_rss.map(|b| b / 1e6)))]),
        ("server open FDs", vec![("FDs", MAGENTA, Box::new(|s: &Sample| s.server_fds))]),
    ];
    for (area, (name, series)) in panels.iter().zip(charts.iter()) {
        let y_max = series.iter().flat_map(|(_, _, f)| timeline.iter().filter_map(f)).fold(1.0f64, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .margin(10)
            .caption(*name, ("sans-serif", 16))
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(|e| e.to_string())?;
        chart.configure_mesh().x_desc("seconds").draw().map_err(|e| e.to_string())?;
        for (label, color, f) in series {
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
        chart.configure_series_labels().border_style(BLACK).draw().map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg() {
        let dir = std::env::temp_dir().join(format!("wsloop-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.svg");
        let timeline: Vec<Sample> = (0..10)
            .map(|i| Sample {
                t: i as f64,
                open: i * 10,
                server_connections: Some(i as f64 * 10.0),
                server_rss: Some(1e7),
                server_fds: Some(20.0 + i as f64 * 10.0),
            })
            .collect();
        write_svg(&path, "test", &timeline).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("client open"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
