//! A dashboard body's layout drawn as SVG (`dashboards/<service>.svg`), to review a dashboard
//! in a browser or on GitHub without deploying it: each widget a rounded box where the grid puts
//! it ([`COLUMN_PX`] per column, [`ROW_PX`] per row), with its title and kind — a metric widget
//! its series and a sparkline-like placeholder (no data: the lines are made up), an alarm widget
//! the names of its alarms (`${AWS::StackName}` shown as `<stack>`), a text widget its first
//! lines.
//!
//! The output is deterministic (no clock, no randomness, integer coordinates) so that it can be
//! checked in and checked fresh.

use std::fmt::Write;

use serde_json::Value;

/// Pixels per grid column.
pub const COLUMN_PX: i64 = 40;

/// Pixels per grid row.
pub const ROW_PX: i64 = 30;

/// Margin around the grid, in pixels.
const MARGIN: i64 = 16;

/// Height of the title band above the grid.
const TITLE_PX: i64 = 40;

/// Gap between neighbouring widgets.
const GAP: i64 = 4;

/// Line colours of the series.
const PALETTE: [&str; 6] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];

/// `text` escaped for XML character data and attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// `text` cut to `max` characters, with an ellipsis when it was longer.
fn fit(text: &str, max: i64) -> String {
    let max = usize::try_from(max.max(1)).unwrap_or(1);
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

fn int(value: &Value, key: &str) -> i64 {
    value.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// What a metric line shows in the legend, or `None` for a hidden input of an expression.
fn series_label(line: &Value) -> Option<String> {
    let items = line.as_array()?;
    let options = items.last().and_then(Value::as_object);
    if options.and_then(|o| o.get("visible")).and_then(Value::as_bool) == Some(false) {
        return None;
    }
    if let Some(label) = options.and_then(|o| o.get("label")).and_then(Value::as_str) {
        return Some(label.to_owned());
    }
    let name = items.get(1).and_then(Value::as_str)?;
    match options.and_then(|o| o.get("stat")).and_then(Value::as_str) {
        Some(stat) => Some(format!("{name} {stat}")),
        None => Some(name.to_owned()),
    }
}

/// A made-up series of `count` points between 0 and `height`, the same for the same seed.
fn wave(seed: u64, count: usize, height: i64) -> Vec<i64> {
    let mut state = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    let mut level = height / 2;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let step = i64::try_from((state >> 33) % 9).unwrap_or(0) - 4;
            level = (level + step * height / 12).clamp(2, height - 2);
            level
        })
        .collect()
}

/// One widget's box and contents.
fn widget(out: &mut String, index: usize, widget: &Value) {
    let kind = widget.get("type").and_then(Value::as_str).unwrap_or("unknown");
    let properties = widget.get("properties").cloned().unwrap_or(Value::Null);
    let x = MARGIN + int(widget, "x") * COLUMN_PX + GAP / 2;
    let y = MARGIN + TITLE_PX + int(widget, "y") * ROW_PX + GAP / 2;
    let width = int(widget, "width") * COLUMN_PX - GAP;
    let height = int(widget, "height") * ROW_PX - GAP;
    let title = properties.get("title").and_then(Value::as_str).unwrap_or("");
    let fill = if kind == "text" { "#f4f6f8" } else { "#ffffff" };
    let _ = writeln!(out, r#"<g class="widget {kind}">"#);
    if !title.is_empty() {
        let _ = writeln!(out, "<title>{}</title>", escape(title));
    }
    let _ = writeln!(
        out,
        r##"<rect x="{x}" y="{y}" width="{width}" height="{height}" rx="6" fill="{fill}" stroke="#c6cbd1"/>"##
    );
    let text_x = x + 8;
    // Characters that fit in a line: ~7.5 px each in bold at 13 px, ~6.5 px at 11 px.
    let (wide, narrow) = ((width - 16) * 2 / 15, (width - 16) * 2 / 13);
    match kind {
        "text" => {
            let markdown = properties.get("markdown").and_then(Value::as_str).unwrap_or("");
            let lines: Vec<&str> = markdown
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let fits = usize::try_from(((height - 6) / 16).max(1)).unwrap_or(1);
            for (i, line) in lines.iter().take(fits).enumerate() {
                let heading = line.starts_with('#');
                let plain = line.trim_start_matches('#').trim().replace(['`', '*'], "");
                let baseline = y + 17 + 16 * i64::try_from(i).unwrap_or(0);
                let (class, max) = if heading { ("h", wide) } else { ("p", narrow) };
                let _ = writeln!(
                    out,
                    r#"<text x="{text_x}" y="{baseline}" class="{class}">{}</text>"#,
                    escape(&fit(&plain, max))
                );
            }
        }
        _ => {
            let _ = writeln!(
                out,
                r#"<text x="{text_x}" y="{}" class="h">{}</text>"#,
                y + 18,
                escape(&fit(title, wide))
            );
            let bottom = y + height;
            match kind {
                "metric" => metric(out, index, &properties, (text_x, y, width, bottom, narrow)),
                "alarm" => alarm(out, &properties, (text_x, y, width, bottom, narrow)),
                other => {
                    let _ = writeln!(
                        out,
                        r#"<text x="{text_x}" y="{}" class="k">{}</text>"#,
                        y + 34,
                        escape(other)
                    );
                }
            }
        }
    }
    out.push_str("</g>\n");
}

/// A metric widget's kind line, legend and placeholder sparklines. `frame` is the text's x, the
/// box's top, width and bottom, and the characters that fit in a small line.
fn metric(out: &mut String, index: usize, properties: &Value, frame: (i64, i64, i64, i64, i64)) {
    let (text_x, top, width, bottom, narrow) = frame;
    let labels: Vec<String> = properties
        .get("metrics")
        .and_then(Value::as_array)
        .map(|lines| lines.iter().filter_map(series_label).collect())
        .unwrap_or_default();
    let stat = properties.get("stat").and_then(Value::as_str).unwrap_or("");
    let period = properties.get("period").and_then(Value::as_i64).unwrap_or(0);
    let _ = writeln!(
        out,
        r#"<text x="{text_x}" y="{}" class="k">{}</text>"#,
        top + 34,
        escape(&fit(
            &format!("metric · {} series · {stat} · {period} s", labels.len()),
            narrow
        ))
    );
    // The sparkline band at the bottom, the legend between it and the kind line.
    let band = 44;
    let legend_room = usize::try_from(((bottom - band - (top + 40)) / 14).max(0)).unwrap_or(0);
    for (i, label) in labels.iter().enumerate().take(legend_room) {
        let row = top + 52 + 14 * i64::try_from(i).unwrap_or(0);
        let colour = PALETTE[i % PALETTE.len()];
        let _ = writeln!(
            out,
            r#"<rect x="{text_x}" y="{}" width="8" height="8" fill="{colour}"/><text x="{}" y="{row}" class="p">{}</text>"#,
            row - 8,
            text_x + 12,
            escape(&fit(label, narrow - 2))
        );
    }
    let (left, right, base) = (text_x, text_x + width - 16, bottom - 6);
    let _ = writeln!(
        out,
        r##"<line x1="{left}" y1="{base}" x2="{right}" y2="{base}" stroke="#d5d9dd"/>"##
    );
    let points = 24;
    for (i, _) in labels.iter().enumerate().take(3) {
        let seed = (index as u64) * 31 + i as u64;
        let coordinates: Vec<String> = wave(seed, points, band - 8)
            .iter()
            .enumerate()
            .map(|(p, level)| {
                let px = left + (right - left) * i64::try_from(p).unwrap_or(0) / (points as i64 - 1);
                format!("{px},{}", base - level)
            })
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5" opacity="0.8"/>"#,
            coordinates.join(" "),
            PALETTE[i % PALETTE.len()]
        );
    }
}

/// An alarm widget's kind line and the names of its alarms.
fn alarm(out: &mut String, properties: &Value, frame: (i64, i64, i64, i64, i64)) {
    let (text_x, top, width, bottom, _) = frame;
    let names: Vec<String> = properties
        .get("alarms")
        .and_then(Value::as_array)
        .map(|arns| {
            arns.iter()
                .filter_map(Value::as_str)
                .map(|arn| arn.rsplit_once(":alarm:").map_or(arn, |(_, name)| name))
                .map(|name| name.replace("${AWS::StackName}", "<stack>"))
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        r#"<text x="{text_x}" y="{}" class="k">alarm · {} alarms</text>"#,
        top + 34,
        names.len()
    );
    // In columns of at most 300 px, as many rows as fit.
    let columns = ((width - 16) / 300).max(1);
    let column_px = (width - 16) / columns;
    let rows = ((bottom - (top + 40)) / 16).max(1);
    for (i, name) in names.iter().enumerate() {
        let i = i64::try_from(i).unwrap_or(0);
        if i >= rows * columns {
            break;
        }
        let (column, row) = (i / rows, i % rows);
        let (cx, cy) = (text_x + column * column_px, top + 54 + row * 16);
        let _ = writeln!(
            out,
            r##"<circle cx="{}" cy="{}" r="4" fill="#8c959f"/><text x="{}" y="{cy}" class="p">{}</text>"##,
            cx + 4,
            cy - 4,
            cx + 12,
            escape(&fit(name, (column_px - 16) * 2 / 13))
        );
    }
}

/// The layout of the dashboard `body` (a CloudWatch dashboard body) as an SVG document titled
/// `title`.
pub fn render(body: &Value, title: &str) -> String {
    let widgets: &[Value] = body
        .get("widgets")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let rows = widgets
        .iter()
        .map(|w| int(w, "y") + int(w, "height"))
        .max()
        .unwrap_or(0);
    let width = 2 * MARGIN + 24 * COLUMN_PX;
    let height = 2 * MARGIN + TITLE_PX + rows * ROW_PX;
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(
        "<!-- Generated by `cargo run -p keel-infra` from infra/src (dashboards.rs, dashboard_svg.rs); \
         do not edit by hand. The layout of a CloudWatch dashboard: the lines are placeholders, not data. -->\n",
    );
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">"#
    );
    let _ = writeln!(out, "<title>{}</title>", escape(title));
    out.push_str(
        "<style>\
         text { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; fill: #16191f; }\
         .t { font-size: 18px; font-weight: bold; }\
         .h { font-size: 13px; font-weight: bold; }\
         .k { font-size: 11px; fill: #687078; }\
         .p { font-size: 11px; }\
         </style>\n",
    );
    let _ = writeln!(
        out,
        r##"<rect x="0" y="0" width="{width}" height="{height}" fill="#e9ebed"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN}" y="{}" class="t">{}</text>"#,
        MARGIN + 22,
        escape(title)
    );
    for (index, w) in widgets.iter().enumerate() {
        widget(&mut out, index, w);
    }
    out.push_str("</svg>\n");
    out
}
