//! OSADL-style latency plots as inline SVG: latency in us on the x axis, sample count on a
//! logarithmic y axis, one plot per CPU and per CAN message. Drawn with plotters' SVG
//! backend into a `String`, so the HTML report stays one self-contained file.

use plotters::prelude::*;

use crate::evidence::Distribution;
use crate::fmt::{f, fmt_num};

/// Chart size in pixels.
pub const SIZE: (u32, u32) = (600, 280);

/// Errors drawing a chart.
#[derive(Debug, thiserror::Error)]
#[error("Cannot draw the chart {label}: {message}")]
pub struct ChartError {
    /// Which chart.
    pub label: String,
    /// What plotters said.
    pub message: String,
}

/// The chart in words, for its accessible name.
pub fn describe(d: &Distribution) -> String {
    let width = d.bins.first().map_or(0.0, |b| b.hi_us - b.lo_us);
    format!(
        "Histogram of {}: {} samples in bins of {} us, max {} us",
        d.label,
        d.samples,
        fmt_num(width),
        fmt_num(d.max_us)
    )
}

/// Draw `d` as an SVG document (a string starting with `<svg`).
pub fn latency_svg(d: &Distribution) -> Result<String, ChartError> {
    let mut out = String::new();
    let err = |e: &dyn std::fmt::Display| ChartError {
        label: d.label.clone(),
        message: e.to_string(),
    };
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let x_max = d.bins.last().map(|b| b.hi_us).unwrap_or(1.0).max(1.0);
        let y_max = d.bins.iter().map(|b| b.count).max().unwrap_or(1).max(1);
        // Counts of 1 must stay visible on the log axis: bars start at 0.5.
        let y_top = f(y_max) * 3.0;
        let caption = format!(
            "{} ({} samples, max {} us)",
            d.label,
            d.samples,
            fmt_num(d.max_us)
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max * 1.02, (0.5f64..y_top).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("latency (us)")
            .y_desc("samples (log)")
            .y_label_formatter(&|v| {
                if *v >= 1.0 {
                    format!("{v:.0}")
                } else {
                    String::new()
                }
            })
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
            trace: vec![],
        };
        let svg = latency_svg(&d).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("latency (us)"));
        assert!(svg.contains("1011 samples"));
        // Three bars in the bar colour.
        assert_eq!(svg.matches("#1F5EA8").count(), 3, "{svg}");
    }
}
