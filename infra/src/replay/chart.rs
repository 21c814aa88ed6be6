//! One picture per replayed alarm: a standalone SVG document ([`render`]) for people who would
//! rather look than read.
//!
//! The picture holds, from top to bottom:
//!
//! - the title and subtitle;
//! - the plot: the metric over time, one datapoint per period (a dot in the middle of its period,
//!   red when it breaches, blue when it does not, the dots joined by a line that breaks where a
//!   period has no data), periods without data as hatched grey columns without a dot, the
//!   threshold as a horizontal orange line, the end of the canary window as a vertical dashed
//!   line labelled "canary window ends", and the decision, when there is one, as a vertical
//!   purple line through the middle of its period with its label;
//! - the y axis: nice round ticks (1, 2 or 5 × 10ᵏ apart) labelled with the unit, the range
//!   always including the threshold;
//! - the alarm's state per period as a coloured strip under the plot (OK green, ALARM red,
//!   INSUFFICIENT_DATA grey; an unknown state white);
//! - the time axis: each label the time since the start of the first period (`+m:ss`, or
//!   `+h:mm:ss` from an hour on), with that start in UTC in the caption under it;
//! - a legend.
//!
//! The output is deterministic (no clock, no randomness, numbers with bounded precision), every
//! text is escaped with [`escape`], and odd inputs do not panic: an empty series or one without
//! any datapoint says "no datapoints", non-finite values are drawn as periods without data,
//! slices shorter than the series count as not breaching and unknown state, a decision beyond
//! the series is drawn at its right edge.

use std::fmt::Write;

use super::{number, significant, utc, Series};
use crate::dashboard_svg::escape;

/// Width of the picture, in pixels.
pub const WIDTH: i64 = 900;

/// Height of the picture, in pixels.
pub const HEIGHT: i64 = 360;

/// Left edge of the plot (room for the y axis' labels on its left).
const LEFT: f64 = 84.0;

/// Right edge of the plot.
const RIGHT: f64 = 876.0;

/// Top edge of the plot (the title and subtitle above it).
const TOP: f64 = 58.0;

/// Bottom edge of the plot.
const BOTTOM: f64 = 244.0;

/// Top of the state strip under the plot.
const STRIP_TOP: f64 = 250.0;

/// Height of the state strip.
const STRIP_HEIGHT: f64 = 12.0;

/// Baseline of the time axis' labels.
const TIME_LABELS: f64 = 278.0;

/// Baseline of the time axis' caption.
const CAPTION: f64 = 298.0;

/// Vertical middle of the legend's row.
const LEGEND: f64 = 328.0;

/// Colour of a breaching datapoint.
const BREACHING: &str = "#d13212";

/// Colour of a datapoint that does not breach, and of the line.
const NORMAL: &str = "#0073bb";

/// Colour of the threshold line.
const THRESHOLD: &str = "#ec7211";

/// Colour of the decision line and label.
const DECISION: &str = "#8a3ffc";

/// Colour of the canary window's end.
const WINDOW_END: &str = "#414d5c";

/// Colours of the states in the strip and the legend.
const STATES: [(&str, &str); 3] = [
    ("OK", "#1d8102"),
    ("ALARM", "#d13212"),
    ("INSUFFICIENT_DATA", "#aab7b8"),
];

/// When the alarm's deployment decision was taken, to mark in the picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    /// The period at which it was taken (an index into the series' points); drawn through the
    /// middle of that period, or at the right edge of the plot when beyond the series.
    pub period_index: usize,
    /// What to write next to it, e.g. `ROLLBACK at 2026-12-01T12:03:00Z`.
    pub label: &'a str,
}

/// What one alarm's picture shows: see the [module documentation](self).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Chart<'a> {
    /// The title at the top (e.g. the alarm's name).
    pub title: &'a str,
    /// The line under the title (e.g. the metric, its statistic and the alarm's rule).
    pub subtitle: &'a str,
    /// The unit of the values, shown with the y axis' ticks: `"ms"`, `"count"`, `"%"`, or `""`.
    pub unit: &'a str,
    /// The datapoints, one per period.
    pub series: &'a Series,
    /// The alarm's threshold, drawn as a horizontal line (not drawn when not finite).
    pub threshold: f64,
    /// Per period, whether its datapoint breaches the threshold; a missing entry does not.
    pub breaching: &'a [bool],
    /// Per period, the alarm's state after it: `"OK"`, `"ALARM"` or `"INSUFFICIENT_DATA"`; a
    /// missing or other entry is drawn as unknown.
    pub states: &'a [&'a str],
    /// The decision, if one was taken.
    pub decision: Option<Decision<'a>>,
    /// The end of the canary window, milliseconds since the epoch, if it is to be shown; drawn
    /// at the edge of the plot when outside the series.
    pub window_end_ms: Option<i64>,
}

/// The picture of `chart`: a complete standalone SVG document of [`WIDTH`] × [`HEIGHT`] pixels.
pub fn render(chart: &Chart<'_>) -> String {
    let series = chart.series;
    let count = series.points.len();
    let values: Vec<Option<f64>> = series
        .points
        .iter()
        .map(|point| point.map(|p| p.value).filter(|v| v.is_finite()))
        .collect();
    let threshold = Some(chart.threshold).filter(|t| t.is_finite());
    let axis = Axis::covering(values.iter().flatten().copied().chain(threshold));
    let x = TimeScale {
        count,
        period_s: series.period_s,
    };

    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">"#
    );
    let _ = writeln!(out, "<title>{}</title>", escape(chart.title));
    let _ = writeln!(out, "<desc>{}</desc>", escape(chart.subtitle));
    out.push_str(
        "<style>\
         text { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; font-size: 11px; fill: #16191f; }\
         .title { font-size: 16px; font-weight: bold; }\
         .subtitle { font-size: 12px; fill: #414d5c; }\
         .tick, .caption { fill: #5f6b7a; }\
         .halo { paint-order: stroke; stroke: #ffffff; stroke-width: 3px; stroke-linejoin: round; }\
         .empty { font-size: 14px; fill: #5f6b7a; }\
         </style>\n",
    );
    out.push_str(
        "<defs><pattern id=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" \
         patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#f2f3f3\"/>\
         <line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#d5dbdb\" stroke-width=\"2\"/></pattern></defs>\n",
    );
    let _ = writeln!(
        out,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="16" y="24" class="title">{}</text>"#,
        escape(chart.title)
    );
    let _ = writeln!(
        out,
        r#"<text x="16" y="42" class="subtitle">{}</text>"#,
        escape(chart.subtitle)
    );

    y_axis(&mut out, &axis, chart.unit);
    missing_periods(&mut out, &x, &values);
    if let Some(threshold) = threshold {
        threshold_line(&mut out, &axis, threshold, chart.unit);
    }
    datapoints(&mut out, chart, &x, &axis, &values);
    if values.iter().all(Option::is_none) {
        let message = if count == 0 {
            "no datapoints".to_owned()
        } else {
            format!("no datapoints in {count} {}", plural(count, "period"))
        };
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle" class="empty halo">{message}</text>"#,
            px((LEFT + RIGHT) / 2.0),
            px((TOP + BOTTOM) / 2.0)
        );
    }
    state_strip(&mut out, chart, &x);
    time_axis(&mut out, series, &x);
    markers(&mut out, chart, &x);
    legend(&mut out);
    out.push_str("</svg>\n");
    out
}

/// The y axis: its range and the distance between its ticks.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Axis {
    /// The value at the bottom of the plot.
    min: f64,
    /// The value at the top of the plot.
    max: f64,
    /// The distance between ticks; not finite when only `min` and `max` are labelled.
    step: f64,
}

impl Axis {
    /// A range with nice ticks covering all `values` (finite ones); zero included when the
    /// values are all on one side of it and not far from it; `0..1` without values.
    fn covering(values: impl Iterator<Item = f64>) -> Axis {
        let (mut lo, mut hi) = values
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        if lo > hi {
            (lo, hi) = (0.0, 1.0);
        } else if lo == hi {
            if lo == 0.0 {
                hi = 1.0;
            } else {
                let pad = lo.abs() / 10.0;
                (lo, hi) = (lo - pad, hi + pad);
            }
        } else if lo > 0.0 && lo < hi / 2.0 {
            lo = 0.0;
        } else if hi < 0.0 && hi > lo / 2.0 {
            hi = 0.0;
        }
        let span = hi - lo;
        if span.is_finite() && span > 0.0 {
            let step = nice_step(span / 5.0);
            let (min, max) = ((lo / step).floor() * step, (hi / step).ceil() * step);
            if step.is_finite() && step > 0.0 && min.is_finite() && max.is_finite() && max > min {
                return Axis { min, max, step };
            }
        }
        Axis {
            min: lo,
            max: hi,
            step: f64::NAN,
        }
    }

    /// The tick values, bottom first.
    fn ticks(&self) -> Vec<f64> {
        if !self.step.is_finite() {
            return vec![self.min, self.max];
        }
        let steps = ((self.max - self.min) / self.step).round();
        if !(0.0..=20.0).contains(&steps) {
            return vec![self.min, self.max];
        }
        // At most 20: the conversion is exact.
        let steps = steps as u32;
        (0..=steps).map(|k| self.min + f64::from(k) * self.step).collect()
    }

    /// The decimals with which the ticks are written.
    fn decimals(&self) -> usize {
        if self.step.is_finite() && self.step < 1.0 {
            // Between 1 and 9: the conversion is exact.
            (-self.step.log10().floor()).clamp(1.0, 9.0) as usize
        } else {
            0
        }
    }

    /// The vertical coordinate of `value`, clamped to the plot.
    fn y(&self, value: f64) -> f64 {
        // Halved so that a range as wide as f64's does not overflow.
        let share = (value / 2.0 - self.min / 2.0) / (self.max / 2.0 - self.min / 2.0);
        BOTTOM - share.clamp(0.0, 1.0) * (BOTTOM - TOP)
    }
}

/// The smallest of 1, 2, 5 × 10ᵏ that is at least `raw` (positive and finite).
fn nice_step(raw: f64) -> f64 {
    let base = 10f64.powf(raw.log10().floor());
    let fraction = raw / base;
    let factor = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    factor * base
}

/// The horizontal scale: `count` periods of `period_s` seconds across the plot.
#[derive(Clone, Copy, Debug)]
struct TimeScale {
    /// How many periods.
    count: usize,
    /// Seconds per period.
    period_s: u32,
}

impl TimeScale {
    /// Width of a period's column.
    fn column(&self) -> f64 {
        (RIGHT - LEFT) / (self.count.max(1) as f64)
    }

    /// The horizontal coordinate of `periods` periods after the start (fractions allowed),
    /// clamped to the plot.
    fn at(&self, periods: f64) -> f64 {
        (LEFT + periods * self.column()).clamp(LEFT, RIGHT)
    }

    /// The horizontal coordinate of the middle of period `index`.
    fn middle(&self, index: usize) -> f64 {
        self.at(index as f64 + 0.5)
    }

    /// The time from the start to the start of period `index`, as [`relative_time`] writes it.
    fn offset(&self, index: usize) -> String {
        relative_time((index as u64).saturating_mul(u64::from(self.period_s)))
    }

    /// The horizontal coordinate of the instant `ms` (milliseconds since the epoch) for a series
    /// starting at `start_ms`.
    fn instant(&self, start_ms: i64, ms: i64) -> f64 {
        let period_ms = (f64::from(self.period_s) * 1000.0).max(1.0);
        self.at(ms.saturating_sub(start_ms) as f64 / period_ms)
    }
}

/// The y axis: grid lines, ticks labelled with the unit, the axis line.
fn y_axis(out: &mut String, axis: &Axis, unit: &str) {
    let decimals = axis.decimals();
    for value in axis.ticks() {
        let y = px(axis.y(value));
        let _ = writeln!(
            out,
            r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#e9ebed"/><text x="{}" y="{y}" dy="4" text-anchor="end" class="tick">{}</text>"##,
            px(LEFT),
            px(RIGHT),
            px(LEFT - 6.0),
            escape(&with_unit(&number(value, decimals), unit))
        );
    }
    let _ = writeln!(
        out,
        r##"<line x1="{left}" y1="{}" x2="{left}" y2="{}" stroke="#879596"/><line x1="{left}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#879596"/>"##,
        px(TOP),
        px(BOTTOM),
        px(RIGHT),
        left = px(LEFT),
        bottom = px(BOTTOM),
    );
}

/// A hatched column for each period without a (finite) datapoint.
fn missing_periods(out: &mut String, x: &TimeScale, values: &[Option<f64>]) {
    for (index, value) in values.iter().enumerate() {
        if value.is_none() {
            let _ = writeln!(
                out,
                r#"<rect class="missing" x="{}" y="{}" width="{}" height="{}" fill="url(#hatch)"><title>{} · no data</title></rect>"#,
                px(x.at(index as f64)),
                px(TOP),
                px(x.column()),
                px(BOTTOM - TOP),
                x.offset(index)
            );
        }
    }
}

/// The threshold's horizontal line and its label at the right end.
fn threshold_line(out: &mut String, axis: &Axis, threshold: f64, unit: &str) {
    let y = axis.y(threshold);
    // The label above the line, or under it when the line is near the top.
    let label_y = if y - TOP < 30.0 { y + 13.0 } else { y - 5.0 };
    let _ = writeln!(
        out,
        r#"<line class="threshold" x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{THRESHOLD}" stroke-width="1.5"/><text x="{}" y="{}" text-anchor="end" class="halo" fill="{THRESHOLD}">threshold {}</text>"#,
        px(LEFT),
        px(RIGHT),
        px(RIGHT - 4.0),
        px(label_y),
        escape(&with_unit(&significant(threshold, 4), unit)),
        y = px(y),
    );
}

/// The line through the datapoints (broken at periods without data) and a dot per datapoint.
fn datapoints(out: &mut String, chart: &Chart<'_>, x: &TimeScale, axis: &Axis, values: &[Option<f64>]) {
    let mut path = String::new();
    let mut previous = false;
    for (index, value) in values.iter().enumerate() {
        if let Some(value) = value {
            let command = if previous { 'L' } else { 'M' };
            let _ = write!(
                path,
                "{}{command}{} {}",
                if path.is_empty() { "" } else { " " },
                px(x.middle(index)),
                px(axis.y(*value))
            );
        }
        previous = value.is_some();
    }
    if !path.is_empty() {
        let _ = writeln!(
            out,
            r#"<path class="line" d="{path}" fill="none" stroke="{NORMAL}" stroke-width="1.5" stroke-linejoin="round" opacity="0.7"/>"#
        );
    }
    let radius = px((x.column() * 0.35).clamp(1.5, 4.0));
    for (index, value) in values.iter().enumerate() {
        let Some(value) = value else { continue };
        let breaching = chart.breaching.get(index).copied().unwrap_or(false);
        let (class, colour, note) = if breaching {
            ("dot breaching", BREACHING, "breaching")
        } else {
            ("dot normal", NORMAL, "not breaching")
        };
        let _ = writeln!(
            out,
            r##"<circle class="{class}" cx="{}" cy="{}" r="{radius}" fill="{colour}" stroke="#ffffff" stroke-width="0.5"><title>{} · {} · {note}</title></circle>"##,
            px(x.middle(index)),
            px(axis.y(*value)),
            x.offset(index),
            escape(&with_unit(&significant(*value, 4), chart.unit)),
        );
    }
}

/// The alarm's state per period as a coloured strip under the plot.
fn state_strip(out: &mut String, chart: &Chart<'_>, x: &TimeScale) {
    if x.count == 0 {
        return;
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end" class="tick">state</text>"#,
        px(LEFT - 6.0),
        px(STRIP_TOP + STRIP_HEIGHT - 2.0)
    );
    for index in 0..x.count {
        let state = chart.states.get(index).copied();
        let colour = state.and_then(|s| STATES.iter().find(|(name, _)| *name == s));
        let (class, fill, stroke) = match colour {
            Some((name, colour)) => (*name, *colour, "none"),
            None => ("unknown", "#ffffff", "#d5dbdb"),
        };
        let _ = writeln!(
            out,
            r#"<rect class="state {class}" x="{}" y="{}" width="{}" height="{}" fill="{fill}" stroke="{stroke}" stroke-width="0.5"><title>{} · {}</title></rect>"#,
            px(x.at(index as f64)),
            px(STRIP_TOP),
            px(x.column()),
            px(STRIP_HEIGHT),
            x.offset(index),
            escape(state.unwrap_or("unknown")),
        );
    }
}

/// The time axis' ticks and labels (time since the start of the first period) and its caption.
fn time_axis(out: &mut String, series: &Series, x: &TimeScale) {
    if x.count > 0 {
        // About 10 labels at most, a nice number of periods apart.
        let every = nice_step(x.count.div_ceil(10) as f64).max(1.0);
        // A whole number between 1 and 10 × count: the conversion is exact.
        let every = every as usize;
        for boundary in (0..=x.count).step_by(every) {
            let at = px(x.at(boundary as f64));
            let _ = writeln!(
                out,
                r##"<line x1="{at}" y1="{}" x2="{at}" y2="{}" stroke="#879596"/><text x="{at}" y="{}" text-anchor="middle" class="tick">{}</text>"##,
                px(STRIP_TOP + STRIP_HEIGHT),
                px(STRIP_TOP + STRIP_HEIGHT + 4.0),
                px(TIME_LABELS),
                x.offset(boundary)
            );
        }
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" class="caption">time since {} · one datapoint per {} s period · {} {}</text>"#,
        px(LEFT),
        px(CAPTION),
        utc(series.start_ms),
        series.period_s,
        x.count,
        plural(x.count, "period")
    );
}

/// The canary window's end and the decision: vertical lines with their labels.
fn markers(out: &mut String, chart: &Chart<'_>, x: &TimeScale) {
    if x.count == 0 {
        return;
    }
    if let Some(end) = chart.window_end_ms {
        let at = x.instant(chart.series.start_ms, end);
        let _ = writeln!(
            out,
            r#"<line class="window-end" x1="{}" y1="{}" x2="{}" y2="{}" stroke="{WINDOW_END}" stroke-width="1.5" stroke-dasharray="6 4"/>{}"#,
            px(at),
            px(TOP),
            px(at),
            px(STRIP_TOP + STRIP_HEIGHT),
            vertical_label(at, TOP + 12.0, WINDOW_END, "canary window ends")
        );
    }
    if let Some(decision) = chart.decision {
        let at = if decision.period_index < x.count {
            x.middle(decision.period_index)
        } else {
            RIGHT
        };
        let _ = writeln!(
            out,
            r#"<line class="decision" x1="{}" y1="{}" x2="{}" y2="{}" stroke="{DECISION}" stroke-width="2"/>{}"#,
            px(at),
            px(TOP),
            px(at),
            px(STRIP_TOP + STRIP_HEIGHT),
            vertical_label(at, TOP + 26.0, DECISION, decision.label)
        );
    }
}

/// A label `text` next to a vertical line at `at`: on its right in the left half of the plot,
/// on its left in the right half.
fn vertical_label(at: f64, y: f64, colour: &str, text: &str) -> String {
    let (anchor, offset) = if at <= (LEFT + RIGHT) / 2.0 {
        ("start", 4.0)
    } else {
        ("end", -4.0)
    };
    format!(
        r#"<text x="{}" y="{}" text-anchor="{anchor}" class="halo" fill="{colour}">{}</text>"#,
        px(at + offset),
        px(y),
        escape(text)
    )
}

/// The legend's row.
fn legend(out: &mut String) {
    let y = LEGEND;
    let mut items: Vec<(String, &str)> = Vec::new();
    for (label, colour) in [("breaching", BREACHING), ("not breaching", NORMAL)] {
        items.push((format!(r#"<circle cx="5" cy="0" r="4" fill="{colour}"/>"#), label));
    }
    items.push((
        format!(r#"<line x1="0" y1="0" x2="12" y2="0" stroke="{THRESHOLD}" stroke-width="1.5"/>"#),
        "threshold",
    ));
    items.push((
        r##"<rect x="0" y="-5" width="12" height="10" fill="url(#hatch)" stroke="#d5dbdb" stroke-width="0.5"/>"##
            .to_owned(),
        "no data",
    ));
    for (state, colour) in STATES {
        items.push((
            format!(r#"<rect x="0" y="-5" width="12" height="10" fill="{colour}"/>"#),
            state,
        ));
    }
    let mut at = LEFT;
    for (swatch, label) in items {
        let _ = writeln!(
            out,
            r#"<g class="legend" transform="translate({},{})">{swatch}<text x="16" y="4">{}</text></g>"#,
            px(at),
            px(y),
            escape(label)
        );
        // About 6 px per character at 11 px, and a gap.
        at += 16.0 + 6.0 * label.chars().count() as f64 + 18.0;
    }
}

/// A coordinate: one decimal at most, `0` when not finite.
fn px(value: f64) -> String {
    if value.is_finite() {
        number(value, 1)
    } else {
        "0".to_owned()
    }
}

/// `number` followed by `unit`: `%` without a space, nothing for no unit.
fn with_unit(number: &str, unit: &str) -> String {
    match unit {
        "" => number.to_owned(),
        "%" => format!("{number}%"),
        unit => format!("{number} {unit}"),
    }
}

/// `noun` in the plural unless `count` is 1.
fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        noun.to_owned()
    } else {
        format!("{noun}s")
    }
}

/// `seconds` after the start: `+m:ss`, or `+h:mm:ss` from an hour on.
fn relative_time(seconds: u64) -> String {
    let (hours, minutes, seconds) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    if hours > 0 {
        format!("+{hours}:{minutes:02}:{seconds:02}")
    } else {
        format!("+{minutes}:{seconds:02}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use xmlparser::{ElementEnd, Token, Tokenizer};

    use super::super::Datapoint;
    use super::*;

    /// 2026-12-01T12:00:00Z.
    const START_MS: i64 = 1_796_126_400_000;

    /// An element of a parsed document: its name, attributes and the text directly in it.
    #[derive(Debug)]
    struct Element {
        name: String,
        attributes: BTreeMap<String, String>,
        text: String,
    }

    impl Element {
        fn class(&self) -> &str {
            self.attributes.get("class").map_or("", String::as_str)
        }

        fn number(&self, attribute: &str) -> f64 {
            self.attributes[attribute]
                .parse()
                .unwrap_or_else(|_| panic!("{attribute} of {self:?}"))
        }
    }

    /// The elements of `svg`, in document order, after checking that it is well-formed XML with
    /// one `svg` root.
    fn parse(svg: &str) -> Vec<Element> {
        let mut elements: Vec<Element> = Vec::new();
        let mut open: Vec<(String, usize)> = Vec::new();
        let mut roots = 0;
        for token in Tokenizer::from(svg) {
            match token.unwrap_or_else(|error| panic!("not XML: {error}")) {
                Token::ElementStart { local, .. } => {
                    if open.is_empty() {
                        roots += 1;
                        assert_eq!(local.as_str(), "svg", "the root element");
                    }
                    open.push((local.as_str().to_owned(), elements.len()));
                    elements.push(Element {
                        name: local.as_str().to_owned(),
                        attributes: BTreeMap::new(),
                        text: String::new(),
                    });
                }
                Token::Attribute { local, value, .. } => {
                    let element = elements.last_mut().expect("an attribute in an element");
                    let previous = element
                        .attributes
                        .insert(local.as_str().to_owned(), value.as_str().to_owned());
                    assert!(previous.is_none(), "a repeated attribute {local}");
                }
                Token::Text { text } => {
                    if let Some((_, index)) = open.last() {
                        elements[*index].text.push_str(text.as_str());
                    }
                }
                Token::ElementEnd { end, .. } => match end {
                    ElementEnd::Open => {}
                    ElementEnd::Empty => {
                        open.pop();
                    }
                    ElementEnd::Close(_, local) => {
                        let (name, _) = open.pop().expect("an open element");
                        assert_eq!(name, local.as_str(), "mismatched </{local}>");
                    }
                },
                _ => {}
            }
        }
        assert!(open.is_empty(), "unclosed: {open:?}");
        assert_eq!(roots, 1);
        elements
    }

    fn with_class<'e>(elements: &'e [Element], class: &str) -> Vec<&'e Element> {
        elements.iter().filter(|e| e.class() == class).collect()
    }

    fn texts(elements: &[Element]) -> Vec<&str> {
        elements
            .iter()
            .filter(|e| e.name == "text")
            .map(|e| e.text.as_str())
            .collect()
    }

    fn series(values: &[Option<f64>]) -> Series {
        Series {
            start_ms: START_MS,
            period_s: 60,
            points: values
                .iter()
                .map(|v| v.map(|value| Datapoint { value, samples: 10.0 }))
                .collect(),
        }
    }

    fn chart<'a>(series: &'a Series, breaching: &'a [bool], states: &'a [&'a str]) -> Chart<'a> {
        Chart {
            title: "booking-api: p99 latency",
            subtitle: "Duration p99 > 500 ms for 3 of 3 periods",
            unit: "ms",
            series,
            threshold: 500.0,
            breaching,
            states,
            decision: None,
            window_end_ms: None,
        }
    }

    /// Six periods: two fine, one missing, three breaching; the decision at the fifth, the
    /// window ending after the sixth.
    fn sample() -> (Series, Vec<bool>, Vec<&'static str>) {
        let series = series(&[
            Some(210.0),
            Some(320.5),
            None,
            Some(640.0),
            Some(720.25),
            Some(810.0),
        ]);
        let breaching = vec![false, false, true, true, true, true];
        let states = vec!["INSUFFICIENT_DATA", "OK", "OK", "OK", "ALARM", "ALARM"];
        (series, breaching, states)
    }

    #[test]
    fn a_full_chart_is_well_formed_and_deterministic() {
        let (series, breaching, states) = sample();
        let mut chart = chart(&series, &breaching, &states);
        chart.decision = Some(Decision {
            period_index: 4,
            label: "ROLLBACK at 2026-12-01T12:05:00Z",
        });
        chart.window_end_ms = Some(START_MS + 6 * 60_000);
        let svg = render(&chart);
        assert_eq!(svg, render(&chart), "deterministic");
        let elements = parse(&svg);
        assert_eq!(elements[0].attributes["width"], WIDTH.to_string());
        assert_eq!(elements[0].attributes["height"], HEIGHT.to_string());
        let texts = texts(&elements);
        assert!(texts.contains(&"booking-api: p99 latency"));
        assert!(texts.contains(&"Duration p99 &gt; 500 ms for 3 of 3 periods"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn the_threshold_is_a_horizontal_line_within_the_plot() {
        let (series, breaching, states) = sample();
        let svg = render(&chart(&series, &breaching, &states));
        let elements = parse(&svg);
        let lines = with_class(&elements, "threshold");
        assert_eq!(lines.len(), 1);
        let line = lines[0];
        assert_eq!(line.name, "line");
        assert_eq!(line.number("y1"), line.number("y2"));
        assert!((TOP..=BOTTOM).contains(&line.number("y1")));
        assert!(texts(&elements).contains(&"threshold 500 ms"));
        // The breaching dots above it, the others below.
        for dot in with_class(&elements, "dot breaching") {
            assert!(dot.number("cy") < line.number("y1"));
        }
        for dot in with_class(&elements, "dot normal") {
            assert!(dot.number("cy") > line.number("y1"));
        }
    }

    #[test]
    fn breaching_markers_are_the_breaching_periods_with_a_datapoint() {
        let (series, breaching, states) = sample();
        let elements = parse(&render(&chart(&series, &breaching, &states)));
        let expected = series
            .points
            .iter()
            .zip(&breaching)
            .filter(|(point, breaching)| point.is_some() && **breaching)
            .count();
        assert_eq!(expected, 3);
        assert_eq!(with_class(&elements, "dot breaching").len(), expected);
        assert_eq!(with_class(&elements, "dot normal").len(), 2);
        for dot in with_class(&elements, "dot breaching") {
            assert_eq!(dot.attributes["fill"], BREACHING);
        }
    }

    #[test]
    fn missing_periods_are_hatched_without_a_dot_and_break_the_line() {
        let (series, breaching, states) = sample();
        let elements = parse(&render(&chart(&series, &breaching, &states)));
        let missing = with_class(&elements, "missing");
        assert_eq!(missing.len(), 1);
        let column = (RIGHT - LEFT) / 6.0;
        let x = missing[0].number("x");
        assert!((x - (LEFT + 2.0 * column)).abs() < 0.1, "{x}");
        assert_eq!(missing[0].attributes["fill"], "url(#hatch)");
        // No dot in the missing column.
        for dot in elements
            .iter()
            .filter(|e| e.name == "circle" && e.class().starts_with("dot"))
        {
            let cx = dot.number("cx");
            assert!(!(x..x + column).contains(&cx), "a dot at {cx}");
        }
        let lines = with_class(&elements, "line");
        assert_eq!(lines.len(), 1);
        let d = &lines[0].attributes["d"];
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert_eq!(d.matches('L').count(), 3, "{d}");
    }

    #[test]
    fn the_decision_is_marked_with_its_label_escaped() {
        let (series, breaching, states) = sample();
        let mut chart = chart(&series, &breaching, &states);
        chart.decision = Some(Decision {
            period_index: 4,
            label: "ROLLBACK at 2026-12-01T12:05:00Z",
        });
        let elements = parse(&render(&chart));
        let lines = with_class(&elements, "decision");
        assert_eq!(lines.len(), 1);
        let column = (RIGHT - LEFT) / 6.0;
        assert!((lines[0].number("x1") - (LEFT + 4.5 * column)).abs() < 0.1);
        assert!(texts(&elements).contains(&"ROLLBACK at 2026-12-01T12:05:00Z"));

        chart.decision = Some(Decision {
            period_index: 4,
            label: "ROLLBACK <now> & \"then\"",
        });
        let svg = render(&chart);
        let elements = parse(&svg);
        assert!(texts(&elements).contains(&"ROLLBACK &lt;now&gt; &amp; &quot;then&quot;"));
        assert!(!svg.contains("<now>"));

        chart.decision = None;
        let elements = parse(&render(&chart));
        assert!(with_class(&elements, "decision").is_empty());
    }

    #[test]
    fn the_window_end_is_a_dashed_line_at_its_time() {
        let (series, breaching, states) = sample();
        let mut chart = chart(&series, &breaching, &states);
        chart.window_end_ms = Some(START_MS + 4 * 60_000);
        let elements = parse(&render(&chart));
        let lines = with_class(&elements, "window-end");
        assert_eq!(lines.len(), 1);
        let column = (RIGHT - LEFT) / 6.0;
        assert!((lines[0].number("x1") - (LEFT + 4.0 * column)).abs() < 0.1);
        assert!(lines[0].attributes.contains_key("stroke-dasharray"));
        assert!(texts(&elements).contains(&"canary window ends"));

        // Outside the series: at the edge.
        chart.window_end_ms = Some(START_MS + 100 * 60_000);
        let elements = parse(&render(&chart));
        assert_eq!(with_class(&elements, "window-end")[0].number("x1"), RIGHT);
        chart.window_end_ms = Some(i64::MIN);
        let elements = parse(&render(&chart));
        assert_eq!(with_class(&elements, "window-end")[0].number("x1"), LEFT);
    }

    #[test]
    fn the_states_are_a_strip_of_colours() {
        let (series, breaching, states) = sample();
        let elements = parse(&render(&chart(&series, &breaching, &states)));
        assert_eq!(with_class(&elements, "state OK").len(), 3);
        assert_eq!(with_class(&elements, "state ALARM").len(), 2);
        assert_eq!(with_class(&elements, "state INSUFFICIENT_DATA").len(), 1);
        assert!(with_class(&elements, "state unknown").is_empty());
        for (class, colour) in STATES {
            for cell in with_class(&elements, &format!("state {class}")) {
                assert_eq!(cell.attributes["fill"], colour);
            }
        }
        let texts = texts(&elements);
        for label in ["OK", "ALARM", "INSUFFICIENT_DATA", "breaching", "no data"] {
            assert!(texts.contains(&label), "legend {label}");
        }
    }

    #[test]
    fn the_time_axis_counts_from_the_first_period() {
        let (series, breaching, states) = sample();
        let elements = parse(&render(&chart(&series, &breaching, &states)));
        let labels_seen = texts(&elements);
        for label in ["+0:00", "+1:00", "+5:00", "+6:00"] {
            assert!(labels_seen.contains(&label), "{label}");
        }
        assert!(
            labels_seen
                .iter()
                .any(|t| t.starts_with("time since 2026-12-01T12:00:00Z")),
            "{labels_seen:?}"
        );
        // Many periods: about ten labels.
        let long = Series {
            start_ms: START_MS,
            period_s: 60,
            points: vec![
                Some(Datapoint {
                    value: 1.0,
                    samples: 1.0
                });
                180
            ],
        };
        let elements = parse(&render(&chart(&long, &[], &[])));
        let labels: Vec<&str> = texts(&elements)
            .into_iter()
            .filter(|t| t.starts_with('+'))
            .collect();
        assert_eq!(
            labels,
            [
                "+0:00", "+20:00", "+40:00", "+1:00:00", "+1:20:00", "+1:40:00", "+2:00:00", "+2:20:00",
                "+2:40:00", "+3:00:00"
            ]
        );
    }

    #[test]
    fn an_empty_series_says_no_datapoints() {
        let series = series(&[]);
        let mut chart = chart(&series, &[true], &["ALARM"]);
        chart.decision = Some(Decision {
            period_index: 0,
            label: "ROLLBACK",
        });
        chart.window_end_ms = Some(START_MS);
        let svg = render(&chart);
        let elements = parse(&svg);
        assert!(texts(&elements).contains(&"no datapoints"));
        assert!(elements.iter().all(|e| !e.class().starts_with("dot")));
        assert_eq!(with_class(&elements, "threshold").len(), 1);
    }

    #[test]
    fn a_series_without_datapoints_is_all_missing() {
        let series = series(&[None, None, None]);
        let states = ["INSUFFICIENT_DATA"; 3];
        let elements = parse(&render(&chart(&series, &[true, true, true], &states)));
        assert!(texts(&elements).contains(&"no datapoints in 3 periods"));
        assert_eq!(with_class(&elements, "missing").len(), 3);
        assert!(elements.iter().all(|e| !e.class().starts_with("dot")));
        assert!(with_class(&elements, "line").is_empty());
    }

    #[test]
    fn equal_values_get_a_range_of_their_own() {
        let sevens = series(&[Some(7.0), Some(7.0), Some(7.0)]);
        let mut chart = chart(&sevens, &[], &[]);
        chart.threshold = 7.0;
        chart.unit = "count";
        let elements = parse(&render(&chart));
        let dots = with_class(&elements, "dot normal");
        assert_eq!(dots.len(), 3);
        let threshold = with_class(&elements, "threshold")[0].number("y1");
        for dot in dots {
            let cy = dot.number("cy");
            assert!(TOP < cy && cy < BOTTOM, "{cy}");
            assert_eq!(cy, threshold);
        }
        let ticks: Vec<&str> = texts(&elements)
            .into_iter()
            .filter(|t| t.ends_with(" count"))
            .collect();
        assert!(ticks.len() >= 2, "{ticks:?}");
        let mut unique = ticks.clone();
        unique.dedup();
        assert_eq!(unique, ticks, "distinct ticks");

        // All zero.
        let zeros = series(&[Some(0.0), Some(0.0)]);
        chart.series = &zeros;
        chart.threshold = 0.0;
        let elements = parse(&render(&chart));
        assert_eq!(with_class(&elements, "dot normal").len(), 2);
    }

    #[test]
    fn the_y_range_includes_a_far_threshold() {
        for threshold in [1e6, -250.0, 0.001] {
            let (series, breaching, states) = sample();
            let mut chart = chart(&series, &breaching, &states);
            chart.threshold = threshold;
            let svg = render(&chart);
            let elements = parse(&svg);
            let line = with_class(&elements, "threshold")[0];
            let y = line.number("y1");
            assert!((TOP..=BOTTOM).contains(&y), "{threshold}: {y}");
            let axis = Axis::covering(series.points.iter().flatten().map(|p| p.value).chain([threshold]));
            assert!(axis.min <= threshold && threshold <= axis.max, "{axis:?}");
            assert!(axis.min <= 210.0 && 810.0 <= axis.max, "{axis:?}");
            let dots: Vec<f64> = elements
                .iter()
                .filter(|e| e.class().starts_with("dot"))
                .map(|e| e.number("cy"))
                .collect();
            assert_eq!(dots.len(), 5);
            // The dots not clamped together: the highest and lowest apart.
            let spread = dots.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                - dots.iter().copied().fold(f64::INFINITY, f64::min);
            assert!(spread > 0.0, "{threshold}");
        }
    }

    #[test]
    fn the_y_axis_has_nice_ticks_with_the_unit() {
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(1.0), 1.0);
        assert_eq!(nice_step(1.2), 2.0);
        assert_eq!(nice_step(37.0), 50.0);
        assert_eq!(nice_step(600.0), 1000.0);
        let axis = Axis::covering([210.0, 810.0, 500.0].into_iter());
        assert_eq!(
            axis,
            Axis {
                min: 0.0,
                max: 1000.0,
                step: 200.0
            }
        );
        assert_eq!(axis.ticks(), [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]);
        let labels = |axis: &Axis| -> Vec<String> {
            axis.ticks().iter().map(|t| number(*t, axis.decimals())).collect()
        };
        let axis = Axis::covering([0.12, 0.31].into_iter());
        assert_eq!(axis.decimals(), 1);
        assert_eq!(labels(&axis), ["0", "0.1", "0.2", "0.3", "0.4"]);
        let axis = Axis::covering([0.22, 0.31].into_iter());
        assert_eq!(axis.decimals(), 2);
        assert_eq!(labels(&axis), ["0.22", "0.24", "0.26", "0.28", "0.3", "0.32"]);
        assert_eq!(
            labels(&Axis::covering([].into_iter())),
            ["0", "0.2", "0.4", "0.6", "0.8", "1"]
        );
        // A range as wide as f64's.
        let wide = Axis::covering([f64::MAX, -f64::MAX].into_iter());
        assert!(wide.y(0.0).is_finite());

        let (series, breaching, states) = sample();
        let mut chart = chart(&series, &breaching, &states);
        for (unit, top) in [("ms", "1000 ms"), ("%", "1000%"), ("", "1000")] {
            chart.unit = unit;
            let elements = parse(&render(&chart));
            let ticks: Vec<&str> = elements
                .iter()
                .filter(|e| e.class() == "tick")
                .map(|e| e.text.as_str())
                .collect();
            assert!(ticks.contains(&top), "{unit}: {ticks:?}");
        }
    }

    #[test]
    fn mismatched_lengths_do_not_panic() {
        let (series, _, _) = sample();
        let mut chart = chart(&series, &[true], &["ALARM", "OK", "bogus"]);
        chart.decision = Some(Decision {
            period_index: 99,
            label: "ROLLBACK",
        });
        let elements = parse(&render(&chart));
        assert_eq!(with_class(&elements, "dot breaching").len(), 1);
        assert_eq!(with_class(&elements, "dot normal").len(), 4);
        assert_eq!(with_class(&elements, "state unknown").len(), 4);
        assert_eq!(with_class(&elements, "decision")[0].number("x1"), RIGHT);

        let long_breaching = [true; 20];
        let long_states = ["ALARM"; 20];
        let chart = self::chart(&series, &long_breaching, &long_states);
        let elements = parse(&render(&chart));
        assert_eq!(with_class(&elements, "dot breaching").len(), 5);
        assert_eq!(with_class(&elements, "state ALARM").len(), 6);
    }

    #[test]
    fn non_finite_values_are_skipped() {
        let series = series(&[Some(1.0), Some(f64::NAN), Some(f64::INFINITY), Some(2.0)]);
        let mut chart = chart(&series, &[true; 4], &[]);
        chart.threshold = f64::NAN;
        let svg = render(&chart);
        let elements = parse(&svg);
        assert_eq!(with_class(&elements, "dot breaching").len(), 2);
        assert_eq!(with_class(&elements, "missing").len(), 2);
        assert!(with_class(&elements, "threshold").is_empty());
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn titles_are_escaped() {
        let (series, breaching, states) = sample();
        let mut chart = chart(&series, &breaching, &states);
        chart.title = "p99 < 500 & \"fast\"";
        chart.subtitle = "a 'b' <c/>";
        chart.unit = "<u>";
        let svg = render(&chart);
        let elements = parse(&svg);
        let texts = texts(&elements);
        assert!(texts.contains(&"p99 &lt; 500 &amp; &quot;fast&quot;"));
        assert!(texts.contains(&"a &apos;b&apos; &lt;c/&gt;"));
        assert!(svg.contains("<title>p99 &lt; 500 &amp; &quot;fast&quot;</title>"));
        assert!(texts.contains(&"1000 &lt;u&gt;"), "{texts:?}");
        assert!(!svg.contains("<c/>") && !svg.contains("<u>"));
    }

    #[test]
    fn numbers_and_times_are_written_plainly() {
        assert_eq!(number(0.30000000000000004, 2), "0.3");
        assert_eq!(number(-0.0001, 2), "0");
        assert_eq!(number(1200.0, 0), "1200");
        assert_eq!(number(2.5e12, 0), "2.500e12");
        assert_eq!(significant(720.26, 4), "720.3");
        assert_eq!(significant(0.012346, 4), "0.01235");
        assert_eq!(significant(0.0, 4), "0");
        assert_eq!(px(f64::NAN), "0");
        assert_eq!(relative_time(0), "+0:00");
        assert_eq!(relative_time(90), "+1:30");
        assert_eq!(relative_time(3725), "+1:02:05");
        assert_eq!(utc(START_MS), "2026-12-01T12:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
    }
}
