//! OSADL-style latency plots as inline SVG: latency in us on the x axis, sample count on a
//! logarithmic y axis, one plot per CPU and per CAN message. Drawn with plotters' SVG
//! backend into a `String`, so the HTML report stays one self-contained file.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::evidence::Distribution;
use crate::fmt::{f, fmt_num};

/// Chart size in pixels.
pub const SIZE: (u32, u32) = (640, 300);

/// Errors drawing a chart.
#[derive(Debug, thiserror::Error)]
#[error("Cannot draw the chart {label}: {message}")]
pub struct ChartError {
    /// Which chart.
    pub label: String,
    /// What plotters said.
    pub message: String,
}

/// The bins' width (us), 0 without bins.
pub fn bin_width(d: &Distribution) -> f64 {
    d.bins.first().map_or(0.0, |b| b.hi_us - b.lo_us)
}

/// The chart in words, for its accessible name.
pub fn describe(d: &Distribution) -> String {
    let bounds: Vec<String> = d
        .bounds_us
        .iter()
        .map(|b| format!("{} us", fmt_num(*b)))
        .collect();
    format!(
        "Histogram of {}: {} samples in bins of {} us, max {} us{}",
        d.label,
        d.samples,
        fmt_num(bin_width(d)),
        fmt_num(d.max_us),
        if bounds.is_empty() {
            String::new()
        } else {
            format!("; requirement bound {}", bounds.join(", "))
        }
    )
}

/// Log-axis tick labels at powers of ten only (1, 10, 100, ...), so they never overlap.
fn decade_label(v: &f64) -> String {
    let l = v.log10();
    if *v >= 1.0 && (l - l.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        String::new()
    }
}

/// Bound line colour (also in the tests).
const BOUND: RGBColor = RGBColor(198, 40, 40);

/// Draw `d` as an SVG document (a string starting with `<svg`): bars per bin, a dashed
/// line at each requirement bound, the bin width in the caption.
pub fn latency_svg(d: &Distribution) -> Result<String, ChartError> {
    let mut out = String::new();
    let err = |e: &dyn std::fmt::Display| ChartError {
        label: d.label.clone(),
        message: e.to_string(),
    };
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let data_max = d.bins.last().map(|b| b.hi_us).unwrap_or(1.0);
        let x_max = d
            .bounds_us
            .iter()
            .copied()
            .fold(data_max, f64::max)
            .max(1.0)
            * 1.05;
        let y_max = d.bins.iter().map(|b| b.count).max().unwrap_or(1).max(1);
        // Counts of 1 must stay visible on the log axis: bars start at 0.5.
        let y_top = f(y_max) * 3.0;
        let caption = format!(
            "{}: n = {}, max {} us",
            d.label,
            d.samples,
            fmt_num(d.max_us)
        );
        let x_desc = format!("latency (us), bins of {} us", fmt_num(bin_width(d)));
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 17))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, (0.5f64..y_top).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("samples (log)")
            .x_labels(7)
            .label_style(("sans-serif", 16))
            .y_label_formatter(&decade_label)
            .x_label_formatter(&|v| fmt_num(*v))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| err(&e))?;
        let bar = RGBColor(31, 94, 168);
        chart
            .draw_series(
                d.bins
                    .iter()
                    .map(|b| Rectangle::new([(b.lo_us, 0.5), (b.hi_us, f(b.count))], bar.filled())),
            )
            .map_err(|e| err(&e))?;
        for b in &d.bounds_us {
            let line = DashedLineSeries::new([(*b, 0.5), (*b, y_top)], 6, 4, BOUND.stroke_width(2));
            chart.draw_series(line).map_err(|e| err(&e))?;
            // Right-aligned against the line, so the label stays inside the plot.
            let style = ("sans-serif", 16)
                .into_font()
                .color(&BOUND)
                .pos(Pos::new(HPos::Right, VPos::Top));
            let label = Text::new(format!("bound {} us ", fmt_num(*b)), (*b, y_top), style);
            chart
                .draw_series(std::iter::once(label))
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::Bin;

    #[test]
    fn draws_an_svg_with_bars_and_axis_labels() {
        let d = Distribution {
            label: "Probe wakeup latency, CPU 1".into(),
            samples: 1011,
            min_us: 3.0,
            max_us: 42.0,
            mean_us: 4.0,
            p99_us: 9.0,
            p9999_us: 42.0,
            bins: vec![
                Bin {
                    lo_us: 3.0,
                    hi_us: 4.0,
                    count: 1000,
                },
                Bin {
                    lo_us: 9.0,
                    hi_us: 10.0,
                    count: 10,
                },
                Bin {
                    lo_us: 42.0,
                    hi_us: 43.0,
                    count: 1,
                },
            ],
            bounds_us: vec![50.0],
            trace: vec![],
        };
        let svg = latency_svg(&d).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("latency (us), bins of 1 us"), "{svg}");
        assert!(svg.contains("CPU 1: n = 1011, max 42 us"), "{svg}");
        // Three bars in the bar colour, a dashed bound line with its label.
        assert_eq!(svg.matches("#1F5EA8").count(), 3, "{svg}");
        assert!(svg.contains("bound 50 us"), "{svg}");
        assert!(svg.to_uppercase().contains("#C62828"), "{svg}");
        // Log ticks only at decades: no "2", "3" ... labels to overlap.
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .filter_map(|t| t.split_once('>').and_then(|(_, r)| r.split_once("</text>")))
            .map(|(t, _)| t.trim())
            .collect();
        for t in ["1", "10", "100", "1000"] {
            assert!(texts.contains(&t), "{t} tick missing: {texts:?}");
        }
        assert!(
            !texts.contains(&"2") && !texts.contains(&"3000"),
            "{texts:?}"
        );
        assert_eq!(
            describe(&d),
            "Histogram of Probe wakeup latency, CPU 1: 1011 samples in bins of 1 us, max 42 us; requirement bound 50 us"
        );
    }
}
