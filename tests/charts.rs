//! The SVG charts the storm and jitter examples write
//! (`examples/support/chart.rs`): well-formed documents that name every
//! series, and clear errors for input they cannot draw.

#[path = "../examples/support/chart.rs"]
mod chart;

use chart::{ChartError, GroupedBars, Panels, Reference, Series};

/// Checks that `svg` is one `<svg>` element whose tags all nest and close;
/// returns the text between tags, for the labels.
fn well_formed(svg: &str) -> String {
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    let mut open: Vec<&str> = Vec::new();
    let mut text = String::new();
    let mut rest = svg;
    let mut roots = 0;
    while let Some(start) = rest.find('<') {
        text.push_str(&rest[..start]);
        let end = rest[start..].find('>').expect("a tag is closed") + start;
        let tag = &rest[start + 1..end];
        assert!(!tag.contains('<'), "a tag inside a tag: {tag}");
        if let Some(closing) = tag.strip_prefix('/') {
            assert_eq!(open.pop(), Some(closing.trim()), "mismatched </{closing}>");
        } else {
            if open.is_empty() {
                roots += 1;
            }
            if !tag.ends_with('/') {
                open.push(tag.split_whitespace().next().expect("a tag name"));
            }
        }
        rest = &rest[end + 1..];
    }
    assert!(rest.trim().is_empty(), "text after the root: {rest}");
    assert!(open.is_empty(), "unclosed: {open:?}");
    assert_eq!(roots, 1, "one root element");
    text
}

#[test]
#[should_panic(expected = "mismatched")]
fn the_check_rejects_tags_that_do_not_nest() {
    well_formed("<svg><g><text>a</g></text></svg>");
}

fn series(label: &str, values: &[f64]) -> Series {
    Series {
        label: label.to_owned(),
        values: values.to_vec(),
    }
}

fn attempts_chart(series: Vec<Series>) -> Panels {
    Panels {
        title: "Attempts per second".to_owned(),
        x_desc: "time (s)".to_owned(),
        y_desc: "attempts per second".to_owned(),
        bin: 1.0,
        series,
        reference: Some(Reference {
            label: "C = 100 / s".to_owned(),
            y: 100.0,
        }),
    }
}

#[test]
fn a_panel_chart_is_well_formed_svg_naming_every_series_and_the_reference() {
    let labels = [
        "naive retry loop",
        "tower::retry + <budget> & co",
        "tower-cx",
    ];
    let svg = chart::panels(&attempts_chart(vec![
        series(labels[0], &[600.0, 300.0, 0.0, 120.0]),
        series(labels[1], &[400.0, 10.0]),
        series(labels[2], &[100.0, 100.0, 100.0, 100.0, 100.0, 100.0]),
    ]))
    .unwrap();
    let text = well_formed(&svg);
    for label in labels {
        // plotters escapes text: compare with the escaped form
        let escaped = label
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(text.contains(&escaped), "{label:?} missing");
    }
    for caption in [
        "Attempts per second",
        "time (s)",
        "attempts per second",
        "C = 100 / s",
    ] {
        assert!(text.contains(caption), "{caption:?} missing");
    }
    // one filled bar per bin of each series, in the series' own colour
    let bars = |colour: &str| svg.matches(&format!("fill=\"{colour}\"")).count();
    assert_eq!(bars("#D55E00"), 4 + 1, "naive: 4 bins and its caption");
    assert_eq!(bars("#E69F00"), 2 + 1);
    assert_eq!(bars("#0072B2"), 6 + 1);
}

#[test]
fn a_bar_chart_is_well_formed_svg_with_a_legend_and_each_value() {
    let svg = chart::grouped_bars(&GroupedBars {
        title: "Time to the last success".to_owned(),
        x_desc: "clients".to_owned(),
        y_desc: "time (s)".to_owned(),
        groups: vec!["50 clients".to_owned(), "100 clients".to_owned()],
        series: vec![
            series("no jitter", &[16.0, 31.8]),
            series("full jitter", &[2.47, 4.51]),
            series("equal jitter", &[3.34, 5.96]),
            series("decorrelated jitter", &[1.95, 4.14]),
        ],
        value_label: |s| format!("{s:.2} s"),
    })
    .unwrap();
    let text = well_formed(&svg);
    for label in [
        "no jitter",
        "full jitter",
        "equal jitter",
        "decorrelated jitter",
        "50 clients",
        "100 clients",
        "Time to the last success",
        "16.00 s",
        "4.14 s",
    ] {
        assert!(text.contains(label), "{label:?} missing");
    }
}

#[test]
fn input_a_chart_cannot_draw_is_a_typed_error() {
    assert!(matches!(
        chart::panels(&attempts_chart(Vec::new())),
        Err(ChartError::NoSeries)
    ));
    let eight = (0..8).map(|i| series(&format!("s{i}"), &[1.0])).collect();
    assert!(matches!(
        chart::panels(&attempts_chart(eight)),
        Err(ChartError::TooManySeries(8))
    ));
    for bin in [0.0, -1.0, f64::NAN] {
        let chart = Panels {
            bin,
            ..attempts_chart(vec![series("tower-cx", &[100.0])])
        };
        assert!(matches!(chart::panels(&chart), Err(ChartError::Bin(_))));
    }
    let error = chart::grouped_bars(&GroupedBars {
        title: String::new(),
        x_desc: String::new(),
        y_desc: String::new(),
        groups: vec!["50 clients".to_owned(), "100 clients".to_owned()],
        series: vec![series("full jitter", &[2.47])],
        value_label: |s| format!("{s}"),
    })
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "series \"full jitter\" has 1 values for 2 groups"
    );
}
