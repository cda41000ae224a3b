//! Pictures of a violation: a self-contained SVG, and an HTML page around it.
//!
//! One horizontal lane per process; each call is a bar from its invocation to its return
//! (placed by time *rank*, like the text timeline); a call with unknown outcome fades out to the
//! right edge. Calls in the search's longest linearizable order carry their position (`L1`,
//! `L2`, ...); the culprit is red. A bar shows as much of its call as fits; the list under the
//! lanes and the hover text show it in full. All text is escaped;
//! nothing is loaded from outside the file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::history::{Call, History, ProcessId, Time};
use super::shrink::MinimalFailure;

/// Horizontal distance between consecutive time ranks, in pixels.
const RANK_SPACING_PX: usize = 90;
/// Height of one process lane, in pixels.
const LANE_HEIGHT_PX: usize = 44;
/// Room on the left for the lane names, in pixels.
const LEFT_MARGIN_PX: usize = 90;
/// Width of one character of the 12 px monospace font, rounded up, in pixels.
const CHAR_WIDTH_PX: usize = 8;
/// Height of one line of the operation list under the lanes, in pixels.
const LIST_LINE_PX: usize = 18;

/// Draws the failing calls as an SVG document.
pub fn svg(history: &History, minimal: &MinimalFailure, title: &str) -> String {
    let calls: Vec<&Call> = minimal
        .calls
        .iter()
        .filter_map(|&id| history.calls.get(id))
        .collect();
    let mut times: Vec<Time> = calls
        .iter()
        .flat_map(|c| std::iter::once(c.invoke).chain(c.ret))
        .collect();
    times.sort_unstable();
    times.dedup();
    let x_of = |t: Time| LEFT_MARGIN_PX + 20 + times.partition_point(|&x| x < t) * RANK_SPACING_PX;
    let chart_right = LEFT_MARGIN_PX + 20 + times.len() * RANK_SPACING_PX + 40;

    let mut lanes: BTreeMap<ProcessId, usize> = BTreeMap::new();
    for call in &calls {
        let next = lanes.len();
        lanes.entry(call.process).or_insert(next);
    }
    let order: BTreeMap<usize, usize> = minimal
        .best_prefix
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i + 1))
        .collect();
    // The list under the lanes: one line per call, in full.
    let list: Vec<(String, bool)> = calls
        .iter()
        .map(|call| {
            let culprit = Some(call.id) == minimal.culprit;
            let lines = match call.return_line {
                Some(line) => format!("lines {}-{line}", call.invoke_line),
                None => format!("line {}", call.invoke_line),
            };
            let mark = if culprit {
                "   <- cannot be linearized"
            } else {
                ""
            };
            (
                format!(
                    "#{}  process {}  {call}  [{lines}]{mark}",
                    call.id, call.process
                ),
                culprit,
            )
        })
        .collect();
    let legend = [
        "Time runs left to right by order of events. Blue: completed; grey, fading: unknown",
        "outcome; red: cannot be linearized. Ln: position in the longest linearizable order found.",
    ];
    let text_width = list
        .iter()
        .map(|(line, _)| line.chars().count())
        .chain(legend.iter().map(|l| l.chars().count()))
        .chain(std::iter::once(title.chars().count()))
        .max()
        .unwrap_or(0)
        * CHAR_WIDTH_PX
        + 20;
    let right_edge = chart_right.max(text_width);
    let top = 50;
    let list_top = top + lanes.len() * LANE_HEIGHT_PX + 30;
    let legend_top = list_top + list.len() * LIST_LINE_PX + 20;
    let height = legend_top + legend.len() * LIST_LINE_PX + 10;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{right_edge}" height="{height}" viewBox="0 0 {right_edge} {height}" font-family="monospace" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r##"<defs><linearGradient id="pending"><stop offset="0" stop-color="#8a8a8a"/><stop offset="1" stop-color="#8a8a8a" stop-opacity="0.1"/></linearGradient></defs>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="10" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for (process, lane) in &lanes {
        let y = top + lane * LANE_HEIGHT_PX;
        let fill = if lane % 2 == 0 { "#f4f6f8" } else { "#ffffff" };
        let _ = writeln!(
            out,
            r#"<rect x="0" y="{y}" width="{chart_right}" height="{LANE_HEIGHT_PX}" fill="{fill}"/><text x="10" y="{}">process {process}</text>"#,
            y + LANE_HEIGHT_PX / 2 + 4
        );
    }
    for call in &calls {
        let lane = lanes.get(&call.process).copied().unwrap_or(0);
        let y = top + lane * LANE_HEIGHT_PX + 10;
        let x0 = x_of(call.invoke);
        let x1 = call.ret.map_or(chart_right - 10, x_of);
        let width = x1.saturating_sub(x0).max(6);
        let culprit = Some(call.id) == minimal.culprit;
        let (fill, stroke) = match (culprit, call.ret.is_some()) {
            (true, _) => ("#d64541", "#8b1a17"),
            (false, true) => ("#4a90d9", "#23578f"),
            (false, false) => ("url(#pending)", "#666666"),
        };
        let full = format!("#{} process {}: {call}", call.id, call.process);
        // As much of the call as fits inside the bar; the list below has all of it.
        let fits = (width.saturating_sub(8) / CHAR_WIDTH_PX).max(1);
        let mut label = format!("#{} {call}", call.id);
        if label.chars().count() > fits {
            let short = format!("#{}", call.id);
            label = if short.chars().count() + 2 > fits {
                short
            } else {
                label.chars().take(fits - 1).collect::<String>() + "…"
            };
        }
        let _ = writeln!(
            out,
            r#"<g><title>{}</title><rect x="{x0}" y="{y}" width="{width}" height="{}" rx="4" fill="{fill}" stroke="{stroke}"/><text x="{}" y="{}" fill="{}">{}</text>"#,
            escape(&full),
            LANE_HEIGHT_PX - 20,
            x0 + 4,
            y + LANE_HEIGHT_PX / 2 - 6,
            if call.ret.is_some() || culprit {
                "#ffffff"
            } else {
                "#000000"
            },
            escape(&label)
        );
        if let Some(position) = order.get(&call.id) {
            let _ = writeln!(
                out,
                r##"<text x="{x0}" y="{}" font-size="10" fill="#23578f">L{position}</text>"##,
                y - 2
            );
        }
        if culprit {
            let _ = writeln!(
                out,
                r##"<text x="{x0}" y="{}" font-size="10" fill="#d64541">cannot be linearized</text>"##,
                y - 2
            );
        }
        out.push_str("</g>\n");
    }
    for (i, (line, culprit)) in list.iter().enumerate() {
        let color = if *culprit { "#d64541" } else { "#222222" };
        let _ = writeln!(
            out,
            r#"<text x="10" y="{}" fill="{color}">{}</text>"#,
            list_top + i * LIST_LINE_PX,
            escape(line)
        );
    }
    for (i, line) in legend.iter().enumerate() {
        let _ = writeln!(
            out,
            r##"<text x="10" y="{}" font-size="11" fill="#555555">{line}</text>"##,
            legend_top + i * LIST_LINE_PX
        );
    }
    out.push_str("</svg>\n");
    out
}

/// An HTML page: the title, the text report, and the picture when there is a violation.
pub fn html(
    history: &History,
    minimal: Option<&MinimalFailure>,
    title: &str,
    text: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n\
         <style>body{{font-family:sans-serif;margin:1.5em}}pre{{background:#f4f6f8;padding:1em;overflow-x:auto}}\
         .pic{{overflow-x:auto;border:1px solid #ccc}}</style>\n</head>\n<body>\n<h1>{}</h1>",
        escape(title),
        escape(title)
    );
    if let Some(minimal) = minimal {
        let _ = writeln!(
            out,
            "<div class=\"pic\">\n{}</div>",
            svg(history, minimal, title)
        );
    }
    let _ = writeln!(out, "<pre>{}</pre>\n</body>\n</html>", escape(text));
    out
}

/// Escapes text for XML and HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lincheck::history::{Operation, Output};

    fn sample() -> (History, MinimalFailure) {
        let call = |id: usize, process: u64, invoke: u64, ret: Option<u64>, value: &str| Call {
            id,
            process,
            op: Operation::Put {
                key: "<k>".into(),
                value: value.into(),
            },
            output: if ret.is_some() {
                Output::Done
            } else {
                Output::Unknown
            },
            invoke,
            ret,
            invoke_line: 1,
            return_line: None,
        };
        let history = History {
            calls: vec![
                call(0, 1, 0, Some(3), "a&b"),
                call(1, 2, 1, None, "c"),
                call(2, 1, 4, Some(5), "d"),
            ],
            ..History::default()
        };
        let minimal = MinimalFailure {
            label: "key \"<k>\"".into(),
            calls: vec![0, 1, 2],
            best_prefix: vec![0],
            culprit: Some(2),
            relaxed: 0,
            one_minimal: true,
            original_len: 3,
        };
        (history, minimal)
    }

    #[test]
    fn given_a_failure_when_drawn_then_the_svg_has_a_lane_per_process_and_a_red_culprit() {
        let (history, minimal) = sample();
        let picture = svg(&history, &minimal, "t");
        assert!(picture.starts_with("<svg"));
        assert!(picture.contains("process 1") && picture.contains("process 2"));
        assert_eq!(picture.matches("#d64541\" stroke").count(), 1);
        assert!(picture.contains("L1"));
        assert!(picture.contains("&lt;k&gt;") && picture.contains("a&amp;b"));
        assert!(!picture.contains("<k>"));
    }

    #[test]
    fn given_a_failure_when_rendered_as_html_then_the_page_embeds_svg_and_escaped_text() {
        let (history, minimal) = sample();
        let page = html(&history, Some(&minimal), "x < y", "a <b> c");
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<svg"));
        assert!(page.contains("a &lt;b&gt; c"));
        assert!(page.contains("<title>x &lt; y</title>"));
    }
}
