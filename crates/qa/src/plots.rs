//! Inline SVG plots drawn with plotters' SVG backend: no external assets, no scripts.

use plotters::prelude::*;
use std::collections::BTreeMap;

const SIZE: (u32, u32) = (560, 260);
const BAR: RGBColor = RGBColor(0x3b, 0x6e, 0xa5);

/// A vertical marker on a histogram (e.g. a token budget).
pub struct Marker<'a> {
    /// Position on the x axis.
    pub x: f64,
    /// Label drawn beside it.
    pub label: &'a str,
}

fn wrap(result: Result<(), String>, svg: String, title: &str) -> String {
    match result {
        Ok(()) => svg,
        // A plot that cannot be drawn must not cost the report: say so in place.
        Err(e) => format!("<p class=\"plot-error\">{title}: plot unavailable ({e})</p>"),
    }
}

/// A histogram of `values` in 30 bins, with optional vertical markers.
pub fn histogram(title: &str, x_desc: &str, values: &[f64], markers: &[Marker<'_>]) -> String {
    let mut svg = String::new();
    let result = draw_histogram(&mut svg, title, x_desc, values, markers);
    wrap(result, svg, title)
}

fn draw_histogram(
    svg: &mut String,
    title: &str,
    x_desc: &str,
    values: &[f64],
    markers: &[Marker<'_>],
) -> Result<(), String> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return Err("no values".into());
    }
    let mut lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let mut hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    for m in markers {
        // Keep a budget in view only when the data come near it.
        if m.x <= hi * 1.5 {
            hi = hi.max(m.x * 1.05);
        }
    }
    if hi - lo < 1e-9 {
        lo -= 0.5;
        hi += 0.5;
    }
    const BINS: usize = 30;
    let width = (hi - lo) / BINS as f64;
    let mut counts = [0u64; BINS];
    for v in &finite {
        let b = (((v - lo) / width) as usize).min(BINS - 1);
        counts[b] += 1;
    }
    let ymax = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.1;
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(lo..hi, 0f64..ymax)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc(x_desc)
        .y_desc("rows (sample)")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(counts.iter().enumerate().map(|(i, n)| {
            let x0 = lo + i as f64 * width;
            Rectangle::new([(x0, 0.0), (x0 + width, *n as f64)], BAR.mix(0.8).filled())
        }))
        .map_err(|e| e.to_string())?;
    for m in markers.iter().filter(|m| m.x >= lo && m.x <= hi) {
        chart
            .draw_series(LineSeries::new(
                vec![(m.x, 0.0), (m.x, ymax)],
                RED.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(std::iter::once(Text::new(
                m.label.to_string(),
                (m.x, ymax * 0.95),
                ("sans-serif", 13).into_font().color(&RED),
            )))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

/// Box plots (5th-95th whiskers as plotters draws quartiles: min, q1, median, q3, max) by group.
pub fn boxplots(title: &str, y_desc: &str, groups: &BTreeMap<String, Vec<f64>>) -> String {
    let mut svg = String::new();
    let result = draw_boxplots(&mut svg, title, y_desc, groups);
    wrap(result, svg, title)
}

fn draw_boxplots(
    svg: &mut String,
    title: &str,
    y_desc: &str,
    groups: &BTreeMap<String, Vec<f64>>,
) -> Result<(), String> {
    let groups: Vec<(String, Vec<f64>)> = groups
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (format!("{k} (n={})", v.len()), v.clone()))
        .collect();
    if groups.is_empty() {
        return Err("no values".into());
    }
    let labels: Vec<String> = groups.iter().map(|(k, _)| k.clone()).collect();
    let all = groups.iter().flat_map(|(_, v)| v.iter().copied());
    let (mut lo, mut hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let pad = ((hi - lo) * 0.08).max(1e-3);
    lo -= pad;
    hi += pad;
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(labels[..].into_segmented(), (lo as f32)..(hi as f32))
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&|v| match v {
            SegmentValue::Exact(s) | SegmentValue::CenterOf(s) => (*s).clone(),
            SegmentValue::Last => String::new(),
        })
        .y_desc(y_desc)
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(groups.iter().zip(&labels).map(|((_, values), label)| {
            Boxplot::new_vertical(SegmentValue::CenterOf(label), &Quartiles::new(values))
                .width(24)
                .style(BAR)
        }))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_an_svg_with_its_marker() {
        let values: Vec<f64> = (0..200).map(|i| 40.0 + f64::from(i % 50)).collect();
        let svg = histogram(
            "Tokens",
            "tokens",
            &values,
            &[Marker {
                x: 77.0,
                label: "77",
            }],
        );
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(
            svg.contains("Tokens") && svg.contains("\n77\n"),
            "marker label missing"
        );
        assert!(!svg.contains("<script"));
    }

    #[test]
    fn empty_plots_degrade_to_a_note() {
        assert!(histogram("Empty", "x", &[], &[]).contains("plot unavailable"));
        assert!(boxplots("Empty", "y", &BTreeMap::new()).contains("plot unavailable"));
    }

    #[test]
    fn boxplots_draw_with_plain_labels() {
        let mut g = BTreeMap::new();
        g.insert("0".to_string(), vec![0.1, 0.2, 0.3, 0.25]);
        g.insert("4".to_string(), vec![0.05, 0.1]);
        let svg = boxplots("Vessels", "density", &g);
        assert!(svg.starts_with("<svg"));
        assert!(
            svg.contains("0 (n=4)") && !svg.contains("\"0 (n=4)\""),
            "plain labels"
        );
    }
}
