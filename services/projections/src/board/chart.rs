//! The board's charts of rates from 0 to 100%, as SVG: a column per cohort
//! month (the trend) or a bar per area (the breakdown). The geometry is
//! worked out here and the markup written by `templates/chart.svg`, which
//! escapes every label. A withheld rate is drawn as `[c]`, one with nothing
//! decided yet as a dash.

use askama::Template;

/// One group of a chart: its label and its published rate.
#[derive(Debug, Clone)]
pub(super) struct Bar {
    /// The group as the reader knows it (`March 2025`, `Cardiff (W06000015)`).
    pub(super) label: String,
    /// The rate (0 to 1); `None` when withheld or nothing is decided yet.
    pub(super) rate: Option<f64>,
    /// True when disclosure control withholds the rate.
    pub(super) withheld: bool,
}

impl Bar {
    /// What is drawn instead of a bar without a rate.
    fn missing(&self) -> &'static str {
        if self.withheld {
            "[c]"
        } else {
            "–"
        }
    }

    /// The rate to draw, if it may be drawn.
    fn shown(&self) -> Option<f64> {
        self.rate.filter(|_| !self.withheld)
    }
}

/// One thing drawn on a chart.
#[derive(Debug)]
enum Mark {
    /// A grid line.
    Grid { x1: f64, x2: f64, y1: f64, y2: f64 },
    /// A bar, with its label and rate as its tooltip.
    Bar {
        x: f64,
        y: f64,
        width: f64,
        height: f64,
        title: String,
    },
    /// A piece of text: an axis label, a group's label or value, or `[c]`.
    Text {
        class: &'static str,
        x: f64,
        y: f64,
        anchor: Option<&'static str>,
        text: String,
    },
}

/// A chart, rendered by `templates/chart.svg`.
#[derive(Debug, Template)]
#[template(path = "chart.svg")]
pub(super) struct Chart {
    /// Unique on the page: the id of the chart's title element.
    id: String,
    /// The text alternative.
    summary: String,
    /// The view box's width.
    width: f64,
    /// The view box's height.
    height: f64,
    /// Everything drawn, in drawing order.
    marks: Vec<Mark>,
}

/// `March 2025` → `Mar 25` for a column's axis label.
pub(super) fn short_month(label: &str) -> String {
    chrono::NaiveDate::parse_from_str(&format!("1 {label}"), "%d %B %Y")
        .map_or_else(|_| label.to_owned(), |d| d.format("%b %y").to_string())
}

fn summary(title: &str, bars: &[Bar]) -> String {
    format!(
        "{title}. {} groups; the table that follows gives every figure.",
        bars.len()
    )
}

fn text(class: &'static str, x: f64, y: f64, anchor: Option<&'static str>, text: String) -> Mark {
    Mark::Text {
        class,
        x,
        y,
        anchor,
        text,
    }
}

impl Chart {
    /// A column chart, for a trend: one column per cohort month, labelled
    /// under the axis (at most about 12 labels). `None` without groups.
    pub(super) fn columns(id: String, title: &str, bars: &[Bar]) -> Option<Chart> {
        if bars.is_empty() {
            return None;
        }
        let (width, height, left, bottom, top) = (680.0, 260.0, 48.0, 48.0, 12.0);
        let plot_h = height - bottom - top;
        let step = (width - left - 8.0) / bars.len() as f64;
        let mut marks = Vec::new();
        for pct in [0, 25, 50, 75, 100] {
            let y = top + plot_h * (1.0 - f64::from(pct) / 100.0);
            marks.push(Mark::Grid {
                x1: left,
                x2: width - 8.0,
                y1: y,
                y2: y,
            });
            marks.push(text(
                "app-chart__axis",
                left - 6.0,
                y + 4.0,
                Some("end"),
                format!("{pct}%"),
            ));
        }
        let label_every = (bars.len() / 12).max(1);
        for (i, b) in bars.iter().enumerate() {
            let x = left + step * i as f64 + step * 0.15;
            let bw = step * 0.7;
            let middle = x + bw / 2.0;
            marks.push(match b.shown() {
                Some(r) => Mark::Bar {
                    x,
                    y: top + plot_h - plot_h * r,
                    width: bw,
                    height: plot_h * r,
                    title: format!("{}: {:.1}%", b.label, r * 100.0),
                },
                None => text(
                    "app-chart__withheld",
                    middle,
                    top + plot_h - 4.0,
                    Some("middle"),
                    b.missing().into(),
                ),
            });
            if i.is_multiple_of(label_every) {
                marks.push(text(
                    "app-chart__axis",
                    middle,
                    height - bottom + 18.0,
                    Some("middle"),
                    short_month(&b.label),
                ));
            }
        }
        Some(Chart {
            id,
            summary: summary(title, bars),
            width,
            height,
            marks,
        })
    }

    /// A bar chart, for a breakdown: one labelled row per group, its rate
    /// written after the bar. `None` without groups.
    pub(super) fn bars(id: String, title: &str, bars: &[Bar]) -> Option<Chart> {
        if bars.is_empty() {
            return None;
        }
        let row = 28.0;
        let (width, left, top) = (680.0, 230.0, 8.0);
        let height = top + row * bars.len() as f64 + 24.0;
        let plot_w = width - left - 60.0;
        let mut marks = Vec::new();
        for pct in [0, 50, 100] {
            let x = left + plot_w * f64::from(pct) / 100.0;
            marks.push(Mark::Grid {
                x1: x,
                x2: x,
                y1: top,
                y2: height - 20.0,
            });
            marks.push(text(
                "app-chart__axis",
                x,
                height - 4.0,
                Some("middle"),
                format!("{pct}%"),
            ));
        }
        for (i, b) in bars.iter().enumerate() {
            let y = top + row * i as f64;
            let baseline = y + row * 0.65;
            marks.push(text(
                "app-chart__label",
                left - 8.0,
                baseline,
                Some("end"),
                b.label.clone(),
            ));
            match b.shown() {
                Some(r) => {
                    let bw = plot_w * r;
                    marks.push(Mark::Bar {
                        x: left,
                        y: y + 4.0,
                        width: bw,
                        height: row - 8.0,
                        title: format!("{}: {:.1}%", b.label, r * 100.0),
                    });
                    marks.push(text(
                        "app-chart__value",
                        left + bw + 4.0,
                        baseline,
                        None,
                        format!("{:.1}%", r * 100.0),
                    ));
                }
                None => marks.push(text(
                    "app-chart__withheld",
                    left + 4.0,
                    baseline,
                    None,
                    b.missing().into(),
                )),
            }
        }
        Some(Chart {
            id,
            summary: summary(title, bars),
            width,
            height,
            marks,
        })
    }
}
