//! `kvcli bench plot`: draws the window CSVs of bench runs (`--window ... --csv FILE`) as one
//! SVG picture, throughput above and p99 latency below, one line per run, with labelled axes.
//!
//! Written by hand with std only (no plotting library is guaranteed on the machines that run
//! the benchmarks). A window is drawn at its middle; a window in which nothing succeeded has
//! no p99 and breaks the latency line there.
//!
//! Invariants: every text taken from the input (labels, the title) is XML-escaped, so the
//! output is well-formed XML whatever the input; the input is bounded by
//! [`PLOT_SERIES_MAX`] series of at most [`PLOT_ROWS_MAX`] rows; a malformed CSV is an error
//! naming the file and the line, never a panic.

use std::fmt::Write as _;

use super::window::WindowReport;

/// Most series in one picture: one colour each, and a legend that still fits.
pub const PLOT_SERIES_MAX: usize = 8;
/// Most rows read from one CSV (a day of 1 s windows is 86,400).
pub const PLOT_ROWS_MAX: usize = 100_000;

/// Line colours, one per series, told apart also in greyscale print.
const COLOURS: [&str; PLOT_SERIES_MAX] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#7f7f7f",
];

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 670.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TITLE_BAND: f64 = 80.0;
const PANEL_HEIGHT: f64 = 230.0;
const PANEL_GAP: f64 = 70.0;
/// About how many steps a value axis is cut into.
const TICKS: f64 = 5.0;
/// About how many steps the time axis is cut into (it is wider).
const TIME_TICKS: f64 = 8.0;

/// Why a picture could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// A CSV could not be read.
    #[error("reading {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// What the system said.
        error: std::io::Error,
    },
    /// A CSV is not a window CSV of `kvcli bench`.
    #[error("{path}, line {line}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing to draw, or too much.
    #[error("{0}")]
    Input(String),
}

/// One window's point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The middle of the window, seconds from the start of the run.
    pub t_s: f64,
    /// The end of the window, seconds from the start of the run.
    pub end_s: f64,
    /// Its throughput.
    pub ops_per_s: f64,
    /// Its p99, milliseconds; `None` when nothing succeeded in it.
    pub p99_ms: Option<f64>,
}

/// One run's windows, as drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend's name for it.
    pub label: String,
    /// Its windows in order.
    pub points: Vec<Point>,
}

/// What is drawn besides the series.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlotOptions {
    /// The title on top.
    pub title: String,
    /// A dashed horizontal line at this p99, milliseconds (a target), when given.
    pub p99_limit_ms: Option<f64>,
}

/// Parses a window CSV (the header of [`WindowReport::CSV_HEADER`], columns found by name)
/// into a series called `label`; `path` only names the file in errors.
pub fn parse_csv(label: &str, path: &str, text: &str) -> Result<Series, PlotError> {
    let parse_error = |line: usize, reason: String| PlotError::Parse {
        path: path.to_owned(),
        line,
        reason,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| parse_error(1, "empty file: no header".to_owned()))?;
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    let column = |name: &str| {
        columns.iter().position(|c| *c == name).ok_or_else(|| {
            parse_error(
                1,
                format!(
                    "no column {name:?} (expected the header {:?})",
                    WindowReport::CSV_HEADER
                ),
            )
        })
    };
    let (start, length, rate, p99) = (
        column("start_s")?,
        column("length_s")?,
        column("ops_per_s")?,
        column("p99_ms")?,
    );
    let mut points = Vec::new();
    for (n, line) in lines {
        if points.len() == PLOT_ROWS_MAX {
            return Err(parse_error(
                n + 1,
                format!("more than {PLOT_ROWS_MAX} rows"),
            ));
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let number = |i: usize, name: &str| -> Result<Option<f64>, PlotError> {
            let field = fields
                .get(i)
                .ok_or_else(|| parse_error(n + 1, format!("no {name} field")))?;
            if field.is_empty() {
                return Ok(None);
            }
            match field.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
                _ => Err(parse_error(
                    n + 1,
                    format!("{name} is {field:?}, not a number ≥ 0"),
                )),
            }
        };
        let required = |i: usize, name: &str| {
            number(i, name)?.ok_or_else(|| parse_error(n + 1, format!("{name} is empty")))
        };
        let start_s = required(start, "start_s")?;
        let length_s = required(length, "length_s")?;
        points.push(Point {
            t_s: start_s + length_s / 2.0,
            end_s: start_s + length_s,
            ops_per_s: required(rate, "ops_per_s")?,
            p99_ms: number(p99, "p99_ms")?,
        });
    }
    if points.is_empty() {
        return Err(parse_error(1, "no window rows after the header".to_owned()));
    }
    Ok(Series {
        label: label.to_owned(),
        points,
    })
}

/// `text` safe inside an XML text node or a quoted attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A round step (1, 2 or 5 times a power of ten) giving about `ticks` steps up to `max`.
fn tick_step(max: f64, ticks: f64) -> f64 {
    let raw = (max / ticks).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    if step > 0.0 { step } else { 1.0 }
}

/// The axis top: `max` rounded up to a whole step (at least one step).
fn axis_top(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, tick_step(1.0, TICKS));
    }
    let step = tick_step(max, TICKS);
    let top = (max / step).ceil().max(1.0) * step;
    (top, step)
}

fn tick_label(v: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{v:.0}")
    } else {
        let decimals = (-step.log10().floor()) as usize;
        format!("{v:.decimals$}")
    }
}

/// One panel: axes, grid, ticks, labels, and a line per series of `value(point)`.
struct Panel<'a> {
    top: f64,
    y_label: &'a str,
    y_max: f64,
    x_max: f64,
}

impl Panel<'_> {
    fn x(&self, t: f64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * t / self.x_max
    }

    fn y(&self, v: f64) -> f64 {
        self.top + PANEL_HEIGHT - PANEL_HEIGHT * v / self.y_max
    }

    fn axes(&self, svg: &mut String, x_step: f64, y_step: f64) {
        let bottom = self.top + PANEL_HEIGHT;
        let right = WIDTH - RIGHT;
        let mut v = 0.0;
        while v <= self.y_max + y_step / 1e6 {
            let y = self.y(v);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT:.1}" y1="{y:.1}" x2="{right:.1}" y2="{y:.1}" stroke="#e0e0e0"/>"##
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="12">{}</text>"#,
                LEFT - 6.0,
                y + 4.0,
                tick_label(v, y_step)
            );
            v += y_step;
        }
        let mut t = 0.0;
        while t <= self.x_max + x_step / 1e6 {
            let x = self.x(t);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{bottom:.1}" x2="{x:.1}" y2="{:.1}" stroke="#333"/>"##,
                bottom + 5.0
            );
            let _ = writeln!(
                svg,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text>"#,
                bottom + 19.0,
                tick_label(t, x_step)
            );
            t += x_step;
        }
        let _ = writeln!(
            svg,
            r##"<polyline points="{LEFT:.1},{:.1} {LEFT:.1},{bottom:.1} {right:.1},{bottom:.1}" fill="none" stroke="#333"/>"##,
            self.top
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">time since start of run (s)</text>"#,
            (LEFT + right) / 2.0,
            bottom + 38.0
        );
        let (lx, ly) = (22.0, self.top + PANEL_HEIGHT / 2.0);
        let _ = writeln!(
            svg,
            r#"<text x="{lx:.1}" y="{ly:.1}" text-anchor="middle" font-size="13" transform="rotate(-90 {lx:.1} {ly:.1})">{}</text>"#,
            escape(self.y_label)
        );
    }

    /// Lines through the points that have a value; a point without one breaks the line.
    fn line(&self, svg: &mut String, colour: &str, points: &[(f64, Option<f64>)]) {
        let mut run: Vec<String> = Vec::new();
        let flush = |run: &mut Vec<String>, svg: &mut String| {
            if !run.is_empty() {
                let _ = writeln!(
                    svg,
                    r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                    run.join(" ")
                );
                run.clear();
            }
        };
        for &(t, v) in points {
            match v {
                Some(v) => {
                    let (x, y) = (self.x(t), self.y(v.min(self.y_max)));
                    run.push(format!("{x:.1},{y:.1}"));
                    let _ = writeln!(
                        svg,
                        r#"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{colour}"/>"#
                    );
                }
                None => flush(&mut run, svg),
            }
        }
        flush(&mut run, svg);
    }
}

/// The SVG picture of `series`: throughput (ops/s) above, p99 latency (ms) below, against
/// the time since the start of each run.
pub fn svg(series: &[Series], options: &PlotOptions) -> Result<String, PlotError> {
    if series.is_empty() || series.len() > PLOT_SERIES_MAX {
        return Err(PlotError::Input(format!(
            "plot takes 1 to {PLOT_SERIES_MAX} CSV files, not {}",
            series.len()
        )));
    }
    let all = || series.iter().flat_map(|s| s.points.iter());
    let x_end = all().map(|p| p.end_s.max(p.t_s)).fold(0.0, f64::max);
    // The time axis ends where the runs end (a run's last window may run a little over its
    // duration), with round ticks inside it.
    let x_max = if x_end > 0.0 && x_end.is_finite() {
        x_end
    } else {
        1.0
    };
    let x_step = tick_step(x_max, TIME_TICKS);
    let (rate_max, rate_step) = axis_top(all().map(|p| p.ops_per_s).fold(0.0, f64::max) * 1.05);
    let p99_seen = all().filter_map(|p| p.p99_ms).fold(0.0, f64::max);
    let p99_top = p99_seen.max(options.p99_limit_ms.unwrap_or(0.0)) * 1.05;
    let (p99_max, p99_step) = axis_top(p99_top);

    let mut svg = String::new();
    let _ = writeln!(svg, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="28" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(&options.title)
    );
    let rate = Panel {
        top: TITLE_BAND,
        y_label: "throughput (ops/s)",
        y_max: rate_max,
        x_max,
    };
    let p99 = Panel {
        top: TITLE_BAND + PANEL_HEIGHT + PANEL_GAP,
        y_label: "p99 latency (ms)",
        y_max: p99_max,
        x_max,
    };
    rate.axes(&mut svg, x_step, rate_step);
    p99.axes(&mut svg, x_step, p99_step);
    if let Some(limit) = options.p99_limit_ms {
        let y = p99.y(limit);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#555" stroke-dasharray="6 4"/>"##,
            WIDTH - RIGHT
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="12">target {}</text>"#,
            WIDTH - RIGHT - 4.0,
            y - 5.0,
            escape(&format!("{limit} ms"))
        );
    }
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let _ = writeln!(svg, r#"<g id="series-{i}">"#);
        let rates: Vec<(f64, Option<f64>)> = s
            .points
            .iter()
            .map(|p| (p.t_s, Some(p.ops_per_s)))
            .collect();
        rate.line(&mut svg, colour, &rates);
        let p99s: Vec<(f64, Option<f64>)> = s.points.iter().map(|p| (p.t_s, p.p99_ms)).collect();
        p99.line(&mut svg, colour, &p99s);
        // the legend, in rows of four between the title and the throughput panel
        let (lx, ly) = (LEFT + 190.0 * (i % 4) as f64, 44.0 + 18.0 * (i / 4) as f64);
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/>"#,
            lx + 24.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            lx + 30.0,
            ly + 4.0,
            escape(&s.label)
        );
        let _ = writeln!(svg, "</g>");
    }
    let _ = writeln!(svg, "</svg>");
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "\
window,start_s,length_s,ops,ops_per_s,p50_ms,p99_ms,max_ms,errors,errors_by_kind
0,0.000,10.000,200000,20000.0,2.000,4.500,30.000,0,
1,10.000,10.000,0,0.0,,,,3,503/no_leader=3
2,20.000,10.010,190000,18981.0,2.100,5.000,31.000,0,
";

    #[test]
    fn a_window_csv_parses_into_points_at_window_middles() {
        let s = parse_csv("one node", "run.csv", CSV).expect("valid");
        assert_eq!(s.points.len(), 3);
        assert_eq!(
            s.points[0],
            Point {
                t_s: 5.0,
                end_s: 10.0,
                ops_per_s: 20000.0,
                p99_ms: Some(4.5)
            }
        );
        assert_eq!(s.points[1].p99_ms, None);
        assert!((s.points[2].t_s - 25.005).abs() < 1e-9);
    }

    #[test]
    fn malformed_csvs_name_the_file_and_line() {
        let err = parse_csv("x", "a.csv", "").expect_err("empty");
        assert!(err.to_string().starts_with("a.csv, line 1"), "{err}");
        let err = parse_csv("x", "a.csv", "time,rate\n1,2\n").expect_err("wrong header");
        assert!(err.to_string().contains("start_s"), "{err}");
        let bad = CSV.replace("18981.0", "fast");
        let err = parse_csv("x", "b.csv", &bad).expect_err("not a number");
        assert!(err.to_string().starts_with("b.csv, line 4"), "{err}");
        let err = parse_csv("x", "c.csv", WindowReport::CSV_HEADER).expect_err("no rows");
        assert!(err.to_string().contains("no window rows"), "{err}");
    }

    /// A small check that `text` is well-formed XML: one root element, every tag closed in
    /// order, attribute values quoted, and no raw `<` or stray `&` in text.
    fn check_well_formed(text: &str) -> Result<String, String> {
        let mut rest = text.trim_start();
        if let Some(after) = rest.strip_prefix("<?xml") {
            let end = after.find("?>").ok_or("unclosed XML declaration")?;
            rest = &after[end + 2..];
        }
        let mut stack: Vec<String> = Vec::new();
        let mut root = None;
        let check_text = |t: &str| -> Result<(), String> {
            let mut parts = t.split('&');
            parts.next();
            for part in parts {
                let entity = part.split(';').next().unwrap_or("");
                if !["amp", "lt", "gt", "quot", "apos"].contains(&entity) || !part.contains(';') {
                    return Err(format!("stray & before {part:?}"));
                }
            }
            Ok(())
        };
        while !rest.is_empty() {
            let lt = rest.find('<').unwrap_or(rest.len());
            check_text(&rest[..lt])?;
            if lt == rest.len() {
                if !rest.trim().is_empty() {
                    return Err("text after the root".to_owned());
                }
                break;
            }
            rest = &rest[lt + 1..];
            let gt = rest.find('>').ok_or("unclosed tag")?;
            let tag = &rest[..gt];
            rest = &rest[gt + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or(format!("</{name}> closes nothing"))?;
                if open != name.trim() {
                    return Err(format!("</{name}> closes <{open}>"));
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name = body
                .split_whitespace()
                .next()
                .ok_or("empty tag")?
                .to_owned();
            // attributes: name="value" pairs, values without < or an unescaped quote
            let mut attrs = body[name.len()..].trim();
            while !attrs.is_empty() {
                let eq = attrs
                    .find('=')
                    .ok_or(format!("attribute without = in <{name}>"))?;
                let after = attrs[eq + 1..].trim_start();
                let quote = after.chars().next().ok_or("attribute without value")?;
                if quote != '"' && quote != '\'' {
                    return Err(format!("unquoted attribute in <{name}>"));
                }
                let close = after[1..].find(quote).ok_or("unclosed attribute value")?;
                let value = &after[1..1 + close];
                if value.contains('<') {
                    return Err(format!("< in an attribute of <{name}>"));
                }
                check_text(value)?;
                attrs = after[close + 2..].trim_start();
            }
            if stack.is_empty() {
                if root.is_some() {
                    return Err("two root elements".to_owned());
                }
                root = Some(name.clone());
            }
            if !self_closing {
                stack.push(name);
            }
        }
        if let Some(open) = stack.pop() {
            return Err(format!("<{open}> never closed"));
        }
        root.ok_or_else(|| "no root element".to_owned())
    }

    #[test]
    fn the_checker_itself_rejects_broken_xml() {
        assert!(check_well_formed("<svg><g></svg>").is_err());
        assert!(check_well_formed("<svg a=1/>").is_err());
        assert!(check_well_formed("<svg>a & b</svg>").is_err());
        assert!(check_well_formed("<svg/><svg/>").is_err());
        assert_eq!(
            check_well_formed("<svg><g x=\"1\"/>&amp;</svg>"),
            Ok("svg".to_owned())
        );
    }

    #[test]
    fn the_picture_is_well_formed_svg_with_a_line_per_series_and_panel() {
        // Given two runs, one with a window where nothing succeeded, and labels that need
        // escaping
        let one = parse_csv("1 node <fresh>", "a.csv", CSV).expect("valid");
        let three = Series {
            label: "3 nodes & \"quotes\"".to_owned(),
            points: (0..30)
                .map(|i| Point {
                    t_s: 5.0 + 10.0 * f64::from(i),
                    end_s: 10.0 + 10.0 * f64::from(i),
                    ops_per_s: 15_000.0 - 10.0 * f64::from(i),
                    p99_ms: Some(6.0),
                })
                .collect(),
        };
        let options = PlotOptions {
            title: "new-key writes, 64 clients".to_owned(),
            p99_limit_ms: Some(10.0),
        };
        // When drawn
        let text = svg(&[one, three], &options).expect("draws");
        // Then it is well-formed XML rooted at <svg>, with both legends escaped, both axes
        // labelled with units, the target line, and the broken p99 line of the first run in
        // two pieces (so 1 + 2 polylines for it, 2 for the other, and 4 axis frames... each
        // panel's axes are one polyline)
        assert_eq!(check_well_formed(&text), Ok("svg".to_owned()));
        assert!(text.contains("1 node &lt;fresh&gt;"));
        assert!(text.contains("3 nodes &amp; &quot;quotes&quot;"));
        assert!(text.contains("throughput (ops/s)") && text.contains("p99 latency (ms)"));
        assert!(text.contains("time since start of run (s)"));
        assert!(text.contains("target 10 ms"));
        // the time axis runs to the end of the longer run (300 s), ticked every 50 s
        assert!(text.contains(">300</text>") && text.contains(">250</text>"));
        let series0 = text
            .split(r#"<g id="series-0">"#)
            .nth(1)
            .and_then(|t| t.split("</g>").next())
            .expect("first series group");
        assert_eq!(series0.matches("<polyline").count(), 3, "{series0}");
        assert_eq!(text.matches("<polyline").count(), 2 + 3 + 2);
    }

    #[test]
    fn no_series_or_too_many_is_an_error() {
        assert!(svg(&[], &PlotOptions::default()).is_err());
        let s = Series {
            label: "x".into(),
            points: vec![Point {
                t_s: 1.0,
                end_s: 2.0,
                ops_per_s: 0.0,
                p99_ms: None,
            }],
        };
        assert!(
            svg(
                &vec![s.clone(); PLOT_SERIES_MAX + 1],
                &PlotOptions::default()
            )
            .is_err()
        );
        // a flat, all-zero run still draws
        let text = svg(&[s], &PlotOptions::default()).expect("draws");
        assert_eq!(check_well_formed(&text), Ok("svg".to_owned()));
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(axis_top(23_456.0), (25_000.0, 5_000.0));
        assert_eq!(axis_top(0.0), (1.0, 0.2));
        assert_eq!(axis_top(310.0), (400.0, 100.0));
        assert_eq!(tick_label(0.4, 0.2), "0.4");
        assert_eq!(tick_step(300.02, TIME_TICKS), 50.0);
        assert_eq!(tick_step(30.0, TIME_TICKS), 5.0);
    }
}
