//! SVG charts for the examples (`examples/storm.rs`, `examples/jitter.rs`),
//! drawn with plotters' SVG backend. Included by `#[path]`; the test of
//! its output is `tests/charts.rs`.
//!
//! Each chart renders to a `String`; [`write`] puts it into the directory
//! named by the `CHARTS_DIR` environment variable, by default
//! `target/charts/` of this repository (so that a run in CI leaves the tree
//! clean).

#![allow(dead_code)] // each includer uses a different part

use std::fmt;
use std::path::PathBuf;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The environment variable naming the directory charts are written to.
pub const DIR_VARIABLE: &str = "CHARTS_DIR";

/// Distinct colours, told apart with the common forms of colour blindness
/// too (Okabe and Ito's palette, without its yellow, too light on white).
pub const PALETTE: [RGBColor; 7] = [
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(230, 159, 0),   // orange
    RGBColor(0, 114, 178),   // blue
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(0, 0, 0),       // black
];

const FONT: &str = "sans-serif";

/// Why a chart could not be drawn.
#[derive(Debug)]
pub enum ChartError {
    /// The chart was given no series.
    NoSeries,
    /// More series than [`PALETTE`] has colours.
    TooManySeries(usize),
    /// A bar series has a number of values other than the number of groups.
    ValuesPerGroup {
        /// The series' label.
        label: String,
        /// Its number of values.
        values: usize,
        /// The number of groups.
        groups: usize,
    },
    /// A bin width that is not a positive finite number.
    Bin(f64),
    /// plotters failed to draw.
    Draw(String),
}

impl fmt::Display for ChartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChartError::NoSeries => write!(f, "a chart needs at least one series"),
            ChartError::TooManySeries(n) => {
                write!(f, "{n} series, but only {} distinct colours", PALETTE.len())
            }
            ChartError::ValuesPerGroup {
                label,
                values,
                groups,
            } => write!(
                f,
                "series {label:?} has {values} values for {groups} groups"
            ),
            ChartError::Bin(width) => {
                write!(f, "a bin must be wider than zero and finite, not {width}")
            }
            ChartError::Draw(e) => write!(f, "drawing the chart failed: {e}"),
        }
    }
}

impl std::error::Error for ChartError {}

fn draw_error(e: impl std::error::Error) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// A labelled series of values.
#[derive(Debug, Clone)]
pub struct Series {
    /// Names the series in the chart.
    pub label: String,
    /// Its values: one per bin ([`Panels`]) or per group ([`GroupedBars`]).
    pub values: Vec<f64>,
}

/// A horizontal reference line, labelled.
#[derive(Debug, Clone)]
pub struct Reference {
    /// Written at the line's right end.
    pub label: String,
    /// Where it is, on the y axis.
    pub y: f64,
}

/// One panel per series, stacked in two columns with the same axes:
/// each series' values as bars over consecutive bins of equal width
/// starting at 0 (a histogram of counts per bin), the panel captioned
/// with the series' label in its colour.
#[derive(Debug, Clone)]
pub struct Panels {
    /// Over the whole chart.
    pub title: String,
    /// The x axis, with its unit.
    pub x_desc: String,
    /// The y axis, with its unit.
    pub y_desc: String,
    /// The width of one bin, in x units.
    pub bin: f64,
    /// One panel each, in order (row by row).
    pub series: Vec<Series>,
    /// Drawn dashed across every panel.
    pub reference: Option<Reference>,
}

/// Render `chart` as an SVG document.
pub fn panels(chart: &Panels) -> Result<String, ChartError> {
    check_series(&chart.series)?;
    if !(chart.bin.is_finite() && chart.bin > 0.0) {
        return Err(ChartError::Bin(chart.bin));
    }
    let bins = chart
        .series
        .iter()
        .map(|s| s.values.len())
        .max()
        .unwrap_or(0);
    let x_max = (bins.max(1) as f64) * chart.bin;
    let highest = chart
        .series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .chain(chart.reference.iter().map(|r| r.y))
        .fold(0.0, f64::max);
    let y_max = (highest * 1.1).max(1.0);
    let rows = chart.series.len().div_ceil(2);
    let columns = chart.series.len().min(2);
    let size = (600 * columns as u32, 60 + 280 * rows as u32);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let root = root.titled(&chart.title, (FONT, 26)).map_err(draw_error)?;
        for ((area, series), colour) in root
            .split_evenly((rows, columns))
            .iter()
            .zip(&chart.series)
            .zip(PALETTE)
        {
            let mut panel = ChartBuilder::on(area)
                .caption(&series.label, (FONT, 18).into_font().color(&colour))
                .margin(8)
                .x_label_area_size(38)
                .y_label_area_size(52)
                .build_cartesian_2d(0.0..x_max, 0.0..y_max)
                .map_err(draw_error)?;
            panel
                .configure_mesh()
                .disable_x_mesh()
                .light_line_style(TRANSPARENT)
                .x_desc(&chart.x_desc)
                .y_desc(&chart.y_desc)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| format!("{y:.0}"))
                .label_style((FONT, 14))
                .axis_desc_style((FONT, 15))
                .draw()
                .map_err(draw_error)?;
            panel
                .draw_series(series.values.iter().enumerate().map(|(i, &v)| {
                    let x = i as f64 * chart.bin;
                    Rectangle::new([(x, 0.0), (x + chart.bin, v)], colour.mix(0.85).filled())
                }))
                .map_err(draw_error)?;
            if let Some(reference) = &chart.reference {
                panel
                    .draw_series(DashedLineSeries::new(
                        [(0.0, reference.y), (x_max, reference.y)],
                        12,
                        6,
                        BLACK.stroke_width(1),
                    ))
                    .map_err(draw_error)?;
                let style = TextStyle::from((FONT, 15).into_font())
                    .pos(Pos::new(HPos::Right, VPos::Bottom));
                panel
                    .draw_series([Text::new(
                        reference.label.clone(),
                        (x_max, reference.y),
                        style,
                    )])
                    .map_err(draw_error)?;
            }
        }
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// Bars in groups: one bar per series in each group, each bar labelled with
/// its value, a legend naming the series.
#[derive(Debug, Clone)]
pub struct GroupedBars {
    /// Over the chart.
    pub title: String,
    /// The x axis (what the groups are).
    pub x_desc: String,
    /// The y axis, with its unit.
    pub y_desc: String,
    /// The groups' names, left to right.
    pub groups: Vec<String>,
    /// One value per group each, drawn in this order within a group.
    pub series: Vec<Series>,
    /// Formats a bar's value for the label above it.
    pub value_label: fn(f64) -> String,
}

/// Render `chart` as an SVG document.
pub fn grouped_bars(chart: &GroupedBars) -> Result<String, ChartError> {
    check_series(&chart.series)?;
    let groups = chart.groups.len();
    if let Some(s) = chart.series.iter().find(|s| s.values.len() != groups) {
        return Err(ChartError::ValuesPerGroup {
            label: s.label.clone(),
            values: s.values.len(),
            groups,
        });
    }
    let highest = chart
        .series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0, f64::max);
    let y_max = (highest * 1.12).max(1.0);
    // group g is centred on g (where its axis label goes); its bars fill
    // the middle 80 % of [g - 0.5, g + 0.5)
    let width = 0.8 / chart.series.len() as f64;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let mut plot = ChartBuilder::on(&root)
            .caption(&chart.title, (FONT, 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..groups.max(1) as f64 - 0.5, 0.0..y_max)
            .map_err(draw_error)?;
        plot.configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc(&chart.x_desc)
            .y_desc(&chart.y_desc)
            // at most one label per group: on the integers, the centres
            .x_labels(groups)
            .x_label_formatter(&|x| match chart.groups.get(x.round() as usize) {
                Some(name) if (x - x.round()).abs() < 1e-9 && *x >= 0.0 => name.clone(),
                _ => String::new(),
            })
            .y_label_formatter(&|y| format!("{y}"))
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(draw_error)?;
        let label_style =
            TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        for (k, (series, colour)) in chart.series.iter().zip(PALETTE).enumerate() {
            let left = |g: usize| g as f64 - 0.4 + k as f64 * width;
            plot.draw_series(series.values.iter().enumerate().map(|(g, &v)| {
                Rectangle::new(
                    [(left(g) + 0.01, 0.0), (left(g) + width - 0.01, v)],
                    colour.filled(),
                )
            }))
            .map_err(draw_error)?
            .label(&series.label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled()));
            plot.draw_series(series.values.iter().enumerate().map(|(g, &v)| {
                Text::new(
                    (chart.value_label)(v),
                    (left(g) + width / 2.0, v),
                    label_style.clone(),
                )
            }))
            .map_err(draw_error)?;
        }
        plot.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.5))
            .label_font((FONT, 16))
            .draw()
            .map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

fn check_series(series: &[Series]) -> Result<(), ChartError> {
    match series.len() {
        0 => Err(ChartError::NoSeries),
        n if n > PALETTE.len() => Err(ChartError::TooManySeries(n)),
        _ => Ok(()),
    }
}

/// The directory charts go to: `CHARTS_DIR` if set, else `target/charts`
/// of this repository.
pub fn output_dir() -> PathBuf {
    std::env::var_os(DIR_VARIABLE)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/charts"))
}

/// Write `svg` as `name` into [`output_dir`], creating it if needed;
/// returns the file's path.
pub fn write(name: &str, svg: &str) -> std::io::Result<PathBuf> {
    let dir = output_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    std::fs::write(&path, svg)?;
    Ok(path)
}
