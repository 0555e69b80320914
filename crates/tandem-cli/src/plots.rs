//! Training curves and Recall@K curves as PNG and SVG (plotters), for `tandem report`.

use std::path::Path;
use std::sync::Once;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;

/// The font every label is drawn with, bundled so that plots look the same on any machine
/// (DejaVu Sans; licence beside it in `assets/`).
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bundled font is valid; if registration failed, text would be missing, not wrong.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// One line of a chart.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// One panel: title, axis names and lines.
pub struct Panel {
    pub title: String,
    pub x: String,
    pub y: String,
    pub series: Vec<Series>,
    /// Draw the x axis on a log scale (Recall@K over K = 1..100).
    pub log_x: bool,
    /// Draw each point as a dot instead of joining them (values of separate trials).
    pub markers: bool,
    /// Where the legend sits: away from where the lines run.
    pub legend: SeriesLabelPosition,
}

/// Writes `panels` stacked vertically to `stem.png` and `stem.svg`, each atomically (drawn to a
/// temporary file in the same folder, then renamed), so a killed report leaves no half image.
pub fn write(stem: &Path, panels: &[Panel]) -> Result<()> {
    register_font();
    let size = (1000, 380 * panels.len() as u32);
    let temporary = |ext: &str| {
        let name = stem
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The backend picks the image format from the extension, so it stays last.
        stem.with_file_name(format!(".{name}.{}.tmp.{ext}", std::process::id()))
    };
    let (png, png_tmp) = (stem.with_extension("png"), temporary("png"));
    let (svg, svg_tmp) = (stem.with_extension("svg"), temporary("svg"));
    let drawn = draw(
        BitMapBackend::new(&png_tmp, size).into_drawing_area(),
        panels,
    )
    .map_err(|e| anyhow!("{}: {e}", png.display()))
    .and_then(|()| {
        draw(SVGBackend::new(&svg_tmp, size).into_drawing_area(), panels)
            .map_err(|e| anyhow!("{}: {e}", svg.display()))
    })
    .and_then(|()| {
        std::fs::rename(&png_tmp, &png)?;
        std::fs::rename(&svg_tmp, &svg)?;
        Ok(())
    });
    if drawn.is_err() {
        let _ = std::fs::remove_file(&png_tmp);
        let _ = std::fs::remove_file(&svg_tmp);
    }
    drawn
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, panels: &[Panel]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    root.fill(&WHITE).map_err(err)?;
    for (area, panel) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
        let points = panel.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in points {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        let pad = ((y1 - y0) * 0.05).max(1e-6);
        let (y0, y1) = (y0 - pad, y1 + pad);
        let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
        let mut builder = ChartBuilder::on(area);
        builder
            .caption(&panel.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60);
        macro_rules! finish {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(&panel.x)
                    .y_desc(&panel.y)
                    .label_style(("sans-serif", 13))
                    .draw()
                    .map_err(err)?;
                for (k, s) in panel.series.iter().enumerate() {
                    let color = Palette99::pick(k).to_rgba();
                    let drawn = if panel.markers {
                        chart.draw_series(
                            s.points.iter().map(|&p| Circle::new(p, 4, color.filled())),
                        )
                    } else {
                        chart.draw_series(LineSeries::new(
                            s.points.iter().copied(),
                            color.stroke_width(2),
                        ))
                    };
                    drawn.map_err(err)?.label(&s.label).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 13))
                    .position(panel.legend.clone())
                    .draw()
                    .map_err(err)?;
            }};
        }
        if panel.log_x {
            finish!(
                builder
                    .build_cartesian_2d((x0.max(1.0)..x1).log_scale(), y0..y1)
                    .map_err(err)?
            );
        } else {
            finish!(builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?);
        }
    }
    root.present().map_err(err)?;
    Ok(())
}
