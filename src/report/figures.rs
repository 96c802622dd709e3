//! Figures with plotters, PNG and SVG. The PNG text is drawn with the DejaVu Sans font embedded in
//! the binary (the `dejavu` crate through plotters' ab_glyph backend), so it is the same on every
//! machine; the SVG names the font family for the viewer to render. No timestamps anywhere.
//!
//! * `fig2_passk_<tier>` — pass@k against k on a log₂ axis, one line per method (mean over seeds),
//!   the base model dashed; beside ours, the paper's published curves on the benchmark the tier
//!   stands in for: Qwen2.5-Math-7B (Table 1) and Qwen3-4B (Fig. 3). The Fig. 2 / Fig. 3 analogue.
//! * `fig4_dynamics` — held-out accuracy and entropy (the `math` tier), correct-sample ratio and
//!   fully-solved-prompt ratio per training batch, against the step; above them the points the
//!   paper's Fig. 4a–d shows for Qwen2.5-Math-7B (read off the plot).
//! * `fig5_gradient` — the token-level gradient analysis (paper §4.2, Eq. 6–8): how much a PSR
//!   and an NSR step moves each logit, against the token's probability π_v, sampled and unsampled
//!   tokens apart, on log–log axes (`gradient-analysis` outputs in `gradient/`).
//! * `fig6_lambda` — W-REINFORCE's λ sweep: pass@k per tier for λ ∈ {0, 0.1, 0.5, 1}.
//! * `fig7_ablations` — the PPO-structure ablations: training correct ratio per step, and pass@k
//!   on the hardest tier.

use super::paper::{benchmark_of_tier, PaperData};
use super::{io_err, method_label, method_rank, tier_rank, PassRow, ReportError, Result, TrainingRun};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Valid TTFs shipped by the dejavu crate.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// A fixed colour per method (the colour-blind-safe Okabe–Ito palette); other names (ablations,
/// λ values) get a colour from a second fixed list by their position.
pub fn method_color(m: &str) -> RGBColor {
    match m {
        "base" => RGBColor(0, 0, 0),
        "ppo" => RGBColor(230, 159, 0),
        "grpo" => RGBColor(86, 180, 233),
        "psr" => RGBColor(0, 158, 115),
        "nsr" => RGBColor(213, 94, 0),
        "w-reinforce" => RGBColor(204, 121, 167),
        _ => RGBColor(120, 120, 120),
    }
}

/// Colours for named series (ablations, λ values), distinct from the methods' Okabe–Ito colours.
const EXTRA_COLORS: [RGBColor; 8] = [
    RGBColor(0, 60, 140),
    RGBColor(160, 20, 40),
    RGBColor(120, 60, 170),
    RGBColor(128, 128, 0),
    RGBColor(0, 128, 128),
    RGBColor(140, 86, 75),
    RGBColor(200, 0, 160),
    RGBColor(110, 110, 110),
];

/// Runs `$draw` (a generic drawing function taking `&DrawingArea<DB, Shift>` first) on a PNG and
/// an SVG backend of `$size`; evaluates to the two paths.
macro_rules! render_both {
    ($out:expr, $stem:expr, $size:expr, $draw:ident ( $($arg:expr),* )) => {{
        register_font();
        let png = $out.join(format!("{}.png", $stem));
        let svg = $out.join(format!("{}.svg", $stem));
        {
            let root = BitMapBackend::new(&png, $size).into_drawing_area();
            $draw(&root, $($arg),*).map_err(|msg| ReportError::Figure { path: png.clone(), msg })?;
            root.present().map_err(|e| ReportError::Figure { path: png.clone(), msg: e.to_string() })?;
        }
        {
            let root = SVGBackend::new(&svg, $size).into_drawing_area();
            $draw(&root, $($arg),*).map_err(|msg| ReportError::Figure { path: svg.clone(), msg })?;
            root.present().map_err(|e| ReportError::Figure { path: svg.clone(), msg: e.to_string() })?;
        }
        for p in [&png, &svg] {
            std::fs::File::open(p).and_then(|f| f.sync_all()).map_err(io_err(p))?;
        }
        vec![png, svg]
    }};
}

fn e2s<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// How a series is drawn.
#[derive(Debug, Clone)]
struct Line {
    label: String,
    color: RGBColor,
    dashed: bool,
    /// Points only, no line (sparse readings of a published figure).
    markers_only: bool,
    points: Vec<(f64, f64)>,
}

impl Line {
    fn method(m: &str, points: Vec<(f64, f64)>) -> Line {
        Line {
            label: method_label(m).to_string(),
            color: method_color(m),
            dashed: m == "base",
            markers_only: false,
            points,
        }
    }
}

fn draw_lines<DB: DrawingBackend, CT>(
    chart: &mut ChartContext<'_, DB, CT>,
    lines: &[Line],
) -> std::result::Result<(), String>
where
    CT: CoordTranslate<From = (f64, f64)>,
{
    for l in lines {
        let color = l.color;
        let style = ShapeStyle { color: color.to_rgba(), filled: false, stroke_width: 2 };
        // The legend is drawn apart, once per figure ([`legend_column`]).
        if l.markers_only {
            chart.draw_series(l.points.iter().map(|&p| Circle::new(p, 5, color.filled()))).map_err(e2s)?;
            continue;
        }
        if l.dashed {
            chart.draw_series(DashedLineSeries::new(l.points.clone(), 8, 5, style)).map_err(e2s)?;
        } else {
            chart.draw_series(LineSeries::new(l.points.clone(), style)).map_err(e2s)?;
        }
        if l.points.len() <= 40 {
            chart.draw_series(l.points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(e2s)?;
        }
    }
    Ok(())
}

/// The y range of some lines, padded, clamped to [floor, ceil] where given.
fn y_range(lines: &[Line], floor: Option<f64>, ceil: Option<f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(_, y) in lines.iter().flat_map(|l| l.points.iter()) {
        lo = lo.min(y);
        hi = hi.max(y);
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let (mut a, mut b) = (lo - pad, hi + pad);
    if let Some(f) = floor {
        a = a.max(f);
    }
    if let Some(c) = ceil {
        b = b.min(c);
    }
    (a, b)
}

/// One pass@k panel: k on a log₂ axis (points at x = log₂ k), pass@k in [ylo, 1].
fn pass_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    lines: &[Line],
    kmax_log2: f64,
    font: u32,
) -> std::result::Result<(), String> {
    let ymin = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)).fold(1.0f64, f64::min);
    let ylo = ((ymin * 10.0).floor() / 10.0).max(0.0);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, font + 2))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(52)
        .build_cartesian_2d(-0.2f64..kmax_log2 + 0.2, ylo..1.02f64)
        .map_err(e2s)?;
    chart
        .configure_mesh()
        .x_desc("k (log₂ scale)")
        .y_desc("pass@k")
        .x_labels(kmax_log2 as usize + 1)
        .x_label_formatter(&|x| format!("{}", 2f64.powf(x.round()) as u64))
        .y_label_formatter(&|y| if 1.02 - ylo < 0.5 { format!("{y:.2}") } else { format!("{y:.1}") })
        .label_style((FONT, font - 2))
        .axis_desc_style((FONT, font - 1))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(e2s)?;
    draw_lines(&mut chart, lines)?;
    if lines.is_empty() {
        area.draw(&Text::new("(no published curve)", (60, 120), (FONT, font))).map_err(e2s)?;
    }
    Ok(())
}

/// Mean over seeds: tier → method → [(k, value)].
fn curves(rows: &[PassRow]) -> BTreeMap<(usize, String), BTreeMap<(usize, String), Vec<(u64, f64)>>> {
    let mut acc: BTreeMap<(usize, String), BTreeMap<(usize, String), BTreeMap<u64, Vec<f64>>>> = BTreeMap::new();
    for r in rows {
        acc.entry(tier_rank(&r.tier))
            .or_default()
            .entry(method_rank(&r.method))
            .or_default()
            .entry(r.k)
            .or_default()
            .push(r.pass_at_k);
    }
    acc.into_iter()
        .map(|(t, ms)| {
            let m = ms
                .into_iter()
                .map(|(m, ks)| (m, ks.into_iter().map(|(k, v)| (k, v.iter().sum::<f64>() / v.len() as f64)).collect()))
                .collect();
            (t, m)
        })
        .collect()
}

fn log2_points(pts: &[(u64, f64)]) -> Vec<(f64, f64)> {
    pts.iter().map(|&(k, v)| ((k as f64).log2(), v)).collect()
}

/// Width of the legend column at the right of a figure.
const LEGEND_W: u32 = 230;

/// One legend for a whole figure, in a column of its own (a legend inside a plot hides data):
/// every distinct label of `lines`, in order of first appearance.
fn legend_column<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    lines: &[&Line],
) -> std::result::Result<(), String> {
    // One entry per label, drawn as a line where any series of it is one (the paper's sparse
    // points share the colours), dashed where any is dashed; a note says what bare points are.
    let mut entries: Vec<Line> = vec![];
    for l in lines {
        match entries.iter_mut().find(|e| e.label == l.label) {
            Some(e) => {
                e.markers_only &= l.markers_only;
                e.dashed |= l.dashed;
            }
            None => entries.push((*l).clone()),
        }
    }
    if lines.iter().any(|l| l.markers_only) {
        entries.push(Line {
            label: "points: the paper's, read off its figure".into(),
            color: RGBColor(90, 90, 90),
            dashed: false,
            markers_only: true,
            points: vec![],
        });
    }
    let mut y = 60i32;
    for l in &entries {
        let style = ShapeStyle { color: l.color.to_rgba(), filled: true, stroke_width: 2 };
        if l.markers_only {
            area.draw(&Circle::new((22, y), 5, style)).map_err(e2s)?;
        } else if l.dashed {
            area.draw(&PathElement::new(vec![(8, y), (16, y)], style)).map_err(e2s)?;
            area.draw(&PathElement::new(vec![(22, y), (30, y)], style)).map_err(e2s)?;
        } else {
            area.draw(&PathElement::new(vec![(8, y), (34, y)], style)).map_err(e2s)?;
            area.draw(&Circle::new((21, y), 3, style)).map_err(e2s)?;
        }
        // Long labels wrap at a word boundary.
        let mut line = String::new();
        let mut rows = vec![];
        for w in l.label.split(' ') {
            if !line.is_empty() && line.len() + w.len() > 26 {
                rows.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(w);
        }
        rows.push(line);
        for (i, r) in rows.iter().enumerate() {
            area.draw(&Text::new(r.clone(), (42, y - 7 + 16 * i as i32), (FONT, 13))).map_err(e2s)?;
        }
        y += 16 * rows.len() as i32 + 10;
    }
    Ok(())
}

fn draw_pass_figure<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    panels: &[(String, Vec<Line>)],
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(e2s)?;
    let root = root.titled(title, (FONT, 20)).map_err(e2s)?;
    let (w, _) = root.dim_in_pixel();
    let (plots, legend) = root.split_horizontally(w.saturating_sub(LEGEND_W));
    let all: Vec<&Line> = panels.iter().flat_map(|(_, ls)| ls.iter()).collect();
    legend_column(&legend, &all)?;
    let areas = plots.split_evenly((1, panels.len().max(1)));
    let kmax =
        panels.iter().flat_map(|(_, ls)| ls.iter().flat_map(|l| l.points.iter().map(|p| p.0))).fold(1.0f64, f64::max);
    for (area, (t, lines)) in areas.iter().zip(panels) {
        pass_panel(area, t, lines, kmax, 14)?;
    }
    Ok(())
}

/// One pass@k figure per tier: ours (mean over seeds), and the paper's on the benchmark the tier
/// stands in for, side by side (ours alone for a set the paper did not evaluate).
///
/// `run_name` names our run in the titles (`mini`, `smoke`, `qwen3-4b`, …).
pub fn pass_at_k_figures(rows: &[PassRow], paper: &PaperData, run_name: &str, out: &Path) -> Result<Vec<PathBuf>> {
    let mut files = vec![];
    for ((_, tier), methods) in curves(rows) {
        let ours: Vec<Line> = methods.into_iter().map(|((_, m), pts)| Line::method(&m, log2_points(&pts))).collect();
        let seeds = rows.iter().filter(|r| r.tier == tier).map(|r| r.seed).collect::<std::collections::BTreeSet<_>>();
        let mut panels = vec![];
        for (label, points) in &paper.pass_at_k {
            let mut by_method: BTreeMap<(usize, String), Vec<(u64, f64)>> = BTreeMap::new();
            for p in points.iter().filter(|p| p.series == tier) {
                by_method.entry(method_rank(&p.method)).or_default().push((p.x as u64, p.y));
            }
            let lines: Vec<Line> = by_method
                .into_iter()
                .map(|((_, m), mut pts)| {
                    pts.sort_by_key(|p| p.0);
                    Line::method(&m, log2_points(&pts))
                })
                .collect();
            panels.push((format!("{label}, {}", benchmark_of_tier(&tier)), lines));
        }
        // A set the paper never evaluated (e.g. the real-model profile's word problems): our panel alone.
        let paper_has_tier = panels.iter().any(|(_, lines)| !lines.is_empty());
        if !paper_has_tier {
            panels.clear();
        }
        let n_seeds = seeds.len();
        panels.push((
            format!("ours: {run_name}, {tier} tier ({n_seeds} seed{})", if n_seeds == 1 { "" } else { "s" }),
            ours,
        ));
        let title = if paper_has_tier {
            format!(
                "pass@k on {} — the paper's curves and ours (run `{run_name}`, tier `{tier}`)",
                benchmark_of_tier(&tier)
            )
        } else {
            format!("pass@k on {tier} (run `{run_name}`; not in the paper)")
        };
        let width = 500 * panels.len() as u32 + LEGEND_W;
        files.extend(render_both!(out, format!("fig2_passk_{tier}"), (width, 520), draw_pass_figure(&title, &panels)));
    }
    Ok(files)
}

/// Mean over seeds of `field` per step for every method.
fn step_series(runs: &[TrainingRun], pick: &dyn Fn(&TrainingRun) -> Vec<(usize, f64)>) -> Vec<Line> {
    let mut acc: BTreeMap<(usize, String), BTreeMap<usize, Vec<f64>>> = BTreeMap::new();
    for r in runs {
        for (s, v) in pick(r) {
            acc.entry(method_rank(&r.method)).or_default().entry(s).or_default().push(v);
        }
    }
    acc.into_iter()
        .map(|((_, m), pts)| {
            Line::method(&m, pts.into_iter().map(|(s, v)| (s as f64, v.iter().sum::<f64>() / v.len() as f64)).collect())
        })
        .collect()
}

fn smooth(pts: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    (0..pts.len())
        .map(|i| {
            let lo = i.saturating_sub(w / 2);
            let hi = (i + w / 2 + 1).min(pts.len());
            (pts[i].0, pts[lo..hi].iter().map(|p| p.1).sum::<f64>() / (hi - lo) as f64)
        })
        .collect()
}

/// A panel of lines against the training step.
fn step_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    ylabel: &str,
    lines: &[Line],
) -> std::result::Result<(), String> {
    let xmax = lines.iter().flat_map(|l| l.points.iter().map(|x| x.0)).fold(1.0f64, f64::max);
    let (ylo, yhi) = y_range(lines, Some(0.0), None);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 15))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..xmax * 1.02, ylo..yhi)
        .map_err(e2s)?;
    chart
        .configure_mesh()
        .x_desc("training step")
        .y_desc(ylabel)
        .x_label_formatter(&|x| format!("{}", x.round() as i64))
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(e2s)?;
    draw_lines(&mut chart, lines)?;
    Ok(())
}

type Panel = (String, String, Vec<Line>);

fn draw_grid<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    rows: usize,
    panels: &[Panel],
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(e2s)?;
    let root = root.titled(title, (FONT, 20)).map_err(e2s)?;
    let (w, _) = root.dim_in_pixel();
    let (plots, legend) = root.split_horizontally(w.saturating_sub(LEGEND_W));
    let all: Vec<&Line> = panels.iter().flat_map(|(_, _, ls)| ls.iter()).collect();
    legend_column(&legend, &all)?;
    let cols = panels.len().div_ceil(rows.max(1));
    let areas = plots.split_evenly((rows, cols));
    for (area, (t, y, lines)) in areas.iter().zip(panels) {
        step_panel(area, t, y, lines)?;
    }
    Ok(())
}

/// The Fig. 4a–d analogue, under the paper's own points.
pub fn dynamics_figure(runs: &[TrainingRun], paper: &PaperData, run_name: &str, out: &Path) -> Result<Vec<PathBuf>> {
    // The held-out set drawn: the `math` tier (the mini task, like the paper's MATH test), else the
    // first set the runs evaluated (e.g. the real-model profile's `gsm8k`).
    let sets: std::collections::BTreeSet<&str> =
        runs.iter().flat_map(|r| r.evals.iter().filter_map(|e| e.get("dataset")?.as_str())).collect();
    let held: String =
        if sets.is_empty() || sets.contains("math") { "math" } else { sets.iter().next().unwrap() }.into();
    let held = held.as_str();
    let eval = |field: &'static str| {
        move |r: &TrainingRun| -> Vec<(usize, f64)> {
            r.evals
                .iter()
                .filter(|e| e.get("dataset").and_then(|d| d.as_str()) == Some(held))
                .filter_map(|e| Some((e.get("step")?.as_u64()? as usize, e.get(field)?.as_f64()?)))
                .collect()
        }
    };
    let step = |field: &'static str| {
        move |r: &TrainingRun| -> Vec<(usize, f64)> {
            r.steps.iter().filter_map(|e| Some((e.get("step")?.as_u64()? as usize, e.get(field)?.as_f64()?))).collect()
        }
    };
    let smooth_all = |s: Vec<Line>| -> Vec<Line> {
        s.into_iter()
            .map(|mut l| {
                l.points = smooth(&l.points, 9);
                l
            })
            .collect()
    };
    // The paper's points per metric, as markers (sparse readings, not curves); the shared starting
    // point ("all" / "base" rows) is drawn as the base, and Fig. 4b's base entropy as its dashed line.
    let paper_lines = |metric: &str| -> Vec<Line> {
        let pts: Vec<_> = paper.training.iter().filter(|p| p.series == metric).collect();
        let mut by: BTreeMap<(usize, String), Vec<(f64, f64)>> = BTreeMap::new();
        for p in &pts {
            by.entry(method_rank(&p.method)).or_default().push((p.x, p.y));
        }
        by.into_iter()
            .map(|((_, m), mut v)| {
                v.sort_by(|a, b| a.0.total_cmp(&b.0));
                let mut l = Line::method(&m, v);
                if m == "base" && metric == "test_entropy" {
                    l.points = vec![(0.0, l.points[0].1), (120.0, l.points[0].1)];
                } else {
                    l.markers_only = true;
                }
                l
            })
            .collect()
    };
    let mut panels: Vec<Panel> = vec![];
    if !paper.training.is_empty() {
        for (metric, title, y) in [
            ("greedy_test_acc_MATH", "paper (a) greedy accuracy, MATH test", "accuracy (%)"),
            ("test_entropy", "paper (b) entropy, MATH test", "entropy"),
            ("train_correct_sample_ratio", "paper (c) correct-sample ratio", "correct ratio"),
            ("train_fully_solved_ratio", "paper (d) fully-solved prompts", "fully-solved ratio"),
        ] {
            panels.push((title.to_string(), y.into(), paper_lines(metric)));
        }
    }
    panels.extend([
        (
            format!("ours (a) held-out accuracy, {held} tier"),
            "accuracy".to_string(),
            step_series(runs, &eval("accuracy")),
        ),
        (
            format!("ours (b) held-out entropy, {held} tier"),
            "mean token entropy (nats)".to_string(),
            step_series(runs, &eval("entropy")),
        ),
        (
            "ours (c) correct-sample ratio (9-step mean)".to_string(),
            "correct ratio".to_string(),
            smooth_all(step_series(runs, &step("correct_ratio"))),
        ),
        (
            "ours (d) fully-solved prompts (9-step mean)".to_string(),
            "fully-solved ratio".to_string(),
            smooth_all(step_series(runs, &step("fully_solved_ratio"))),
        ),
    ]);
    let rows = panels.len() / 4;
    let title = format!(
        "Training dynamics. Top: Qwen2.5-Math-7B, points read off the paper's Fig. 4. Bottom: ours (run `{run_name}`), mean over seeds"
    );
    Ok(render_both!(out, "fig4_dynamics", (1800 + LEGEND_W, 430 * rows as u32 + 40), draw_grid(&title, rows, &panels)))
}

/// One point of the gradient figure.
#[derive(Debug, Clone, Copy)]
struct GradPoint {
    prob: f64,
    /// The descent direction −∂L/∂z_v (probability form, Eq. 6) for PSR and NSR.
    psr: f64,
    nsr: f64,
    sampled: bool,
    /// The response's verdict, where the analysis knew the problem.
    correct: Option<bool>,
}

/// Reads `gradient-analysis` outputs (`probs` [T][V], `grad.{psr,nsr}.prob` [T][V] = ∂L/∂z, `tokens`).
fn gradient_points(files: &[PathBuf]) -> Result<Vec<GradPoint>> {
    let mut out = vec![];
    for f in files {
        let text = std::fs::read_to_string(f).map_err(io_err(f))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ReportError::BadFile { path: f.clone(), msg: e.to_string() })?;
        let bad = |m: &str| ReportError::BadFile { path: f.clone(), msg: m.to_string() };
        let rows = |ptr: &str| -> Result<Vec<Vec<f64>>> {
            let a = v.pointer(ptr).and_then(|x| x.as_array()).ok_or_else(|| bad(&format!("no {ptr}")))?;
            a.iter()
                .map(|r| {
                    r.as_array()
                        .ok_or_else(|| bad(&format!("{ptr}: not a matrix")))?
                        .iter()
                        .map(|x| x.as_f64().ok_or_else(|| bad(&format!("{ptr}: not a number"))))
                        .collect()
                })
                .collect()
        };
        let (probs, psr, nsr) = (rows("/probs")?, rows("/grad/psr/prob")?, rows("/grad/nsr/prob")?);
        let tokens: Vec<i64> = v
            .get("tokens")
            .and_then(|t| t.as_array())
            .ok_or_else(|| bad("no tokens"))?
            .iter()
            .map(|t| t.as_i64().unwrap_or(-1))
            .collect();
        let correct = v.get("correct").and_then(|c| c.as_bool());
        if probs.len() != tokens.len() || psr.len() != tokens.len() || nsr.len() != tokens.len() {
            return Err(bad("probs, grads and tokens disagree in length"));
        }
        for (t, &tok) in tokens.iter().enumerate() {
            for (j, &p) in probs[t].iter().enumerate() {
                out.push(GradPoint { prob: p, psr: -psr[t][j], nsr: -nsr[t][j], sampled: j as i64 == tok, correct });
            }
        }
    }
    Ok(out)
}

fn draw_gradient<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    points: &[GradPoint],
    counts: (usize, usize),
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(e2s)?;
    let title = "Token-level gradient w.r.t. the logits (Eq. 6, probability form): how one step moves each logit";
    let root = root.titled(title, (FONT, 19)).map_err(e2s)?;
    let areas = root.split_evenly((1, 2));
    let raise = RGBColor(0, 114, 178);
    let lower = RGBColor(213, 94, 0);
    let live: Vec<&GradPoint> = points.iter().filter(|p| p.prob > 1e-9).collect();
    let xlo = live.iter().map(|p| p.prob).fold(1.0f64, f64::min).max(1e-9) * 0.5;
    let mags = || live.iter().flat_map(|p| [p.psr.abs(), p.nsr.abs()]).filter(|m| *m > 1e-14);
    let ylo = mags().fold(1.0f64, f64::min) * 0.5;
    let yhi = mags().fold(1e-14f64, f64::max) * 3.0;
    let panels = [
        (format!("PSR step on correct responses ({} of them), R = +1", counts.0), false),
        (format!("NSR step on wrong responses ({} of them), R = −1", counts.1), true),
    ];
    for (area, (name, nsr)) in areas.iter().zip(panels) {
        let mut chart = ChartBuilder::on(area)
            .caption(&name, (FONT, 16))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(66)
            .build_cartesian_2d((xlo..1.5f64).log_scale(), (ylo..yhi).log_scale())
            .map_err(e2s)?;
        chart
            .configure_mesh()
            .x_desc("π_v, the token's probability under the model")
            .y_desc("|change of the logit z_v| per unit step, −∂L/∂z_v")
            .x_label_formatter(&|x| format!("{x:.0e}"))
            .y_label_formatter(&|y| format!("{y:.0e}"))
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .light_line_style(RGBColor(238, 238, 238))
            .draw()
            .map_err(e2s)?;
        // Correct responses under PSR and wrong ones under NSR, where verdicts are known.
        let mine: Vec<&&GradPoint> = live.iter().filter(|p| p.correct != Some(nsr)).collect();
        let groups: [(&str, bool, bool); 4] = [
            ("unsampled token, raised (∝ π_v)", false, true),
            ("unsampled token, lowered (∝ π_v)", false, false),
            ("sampled token, raised", true, true),
            ("sampled token, lowered", true, false),
        ];
        for (label, sampled, up) in groups {
            let pts: Vec<(f64, f64)> = mine
                .iter()
                .filter(|p| p.sampled == sampled)
                .map(|p| {
                    let d = if nsr { p.nsr } else { p.psr };
                    (p.prob, d)
                })
                .filter(|&(_, d)| (d > 0.0) == up && d.abs() > ylo)
                .map(|(x, d)| (x, d.abs()))
                .collect();
            if pts.is_empty() {
                continue;
            }
            let color = if up { raise } else { lower };
            if sampled {
                chart
                    .draw_series(pts.iter().map(|&p| TriangleMarker::new(p, 6, color.filled())))
                    .map_err(e2s)?
                    .label(label)
                    .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 6, color.filled()));
            } else {
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.stroke_width(1))))
                    .map_err(e2s)?
                    .label(label)
                    .legend(move |(x, y)| Circle::new((x + 10, y), 3, color.stroke_width(1)));
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(150, 150, 150))
            .draw()
            .map_err(e2s)?;
    }
    Ok(())
}

/// The gradient-analysis figure from `gradient-analysis` JSON files.
pub fn gradient_figure(files: &[PathBuf], out: &Path) -> Result<Vec<PathBuf>> {
    let points = gradient_points(files)?;
    // Responses per panel (a response without a verdict counts in both).
    let mut counts = (0, 0);
    for f in files {
        let v: Option<bool> = std::fs::read_to_string(f)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("correct")?.as_bool());
        counts.0 += (v != Some(false)) as usize;
        counts.1 += (v != Some(true)) as usize;
    }
    Ok(render_both!(out, "fig5_gradient", (1400, 580), draw_gradient(&points, counts)))
}

/// Pass@k figure over tiers for named series: (tier → [(name, label, colour, dashed, points)]).
fn named_pass_figure(
    out: &Path,
    stem: &str,
    title: &str,
    by_tier: &BTreeMap<(usize, String), Vec<Line>>,
) -> Result<Vec<PathBuf>> {
    let panels: Vec<(String, Vec<Line>)> =
        by_tier.iter().map(|((_, t), ls)| (format!("{t} tier (for {})", benchmark_of_tier(t)), ls.clone())).collect();
    let width = 500 * panels.len().max(1) as u32 + LEGEND_W;
    Ok(render_both!(out, stem, (width, 520), draw_pass_figure(title, &panels)))
}

/// W-REINFORCE's λ sweep: the main run's W-REINFORCE (λ = 0.1) and `lambda-<λ>` runs of the
/// ablations experiment, with the base dashed.
pub fn lambda_figure(main: &[PassRow], ablations: &[PassRow], out: &Path) -> Result<Vec<PathBuf>> {
    let mut named: Vec<(f64, String, Vec<PassRow>)> = vec![];
    let main_wr: Vec<PassRow> = main.iter().filter(|r| r.method == "w-reinforce").cloned().collect();
    if !main_wr.is_empty() {
        let n = main_wr.iter().map(|r| r.seed).collect::<std::collections::BTreeSet<_>>().len();
        named.push((
            0.1,
            format!("λ = 0.1 (the paper's; main run), {n} seed{}", if n == 1 { "" } else { "s" }),
            main_wr,
        ));
    }
    let mut lambdas: BTreeMap<String, Vec<PassRow>> = BTreeMap::new();
    for r in ablations.iter().filter(|r| r.method.starts_with("lambda-")) {
        lambdas.entry(r.method.clone()).or_default().push(r.clone());
    }
    for (m, rows) in lambdas {
        let l: f64 = m.trim_start_matches("lambda-").parse().unwrap_or(f64::NAN);
        let note = if l == 0.0 {
            " (NSR only)"
        } else if l == 1.0 {
            " (REINFORCE)"
        } else {
            ""
        };
        let n = rows.iter().map(|r| r.seed).collect::<std::collections::BTreeSet<_>>().len();
        named.push((l, format!("λ = {l}{note}, {n} seed{}", if n == 1 { "" } else { "s" }), rows));
    }
    named.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut by_tier: BTreeMap<(usize, String), Vec<Line>> = BTreeMap::new();
    let base: Vec<PassRow> = main.iter().filter(|r| r.method == "base").cloned().collect();
    for (t, ms) in curves(&base) {
        for ((_, m), pts) in ms {
            by_tier.entry(t.clone()).or_default().push(Line::method(&m, log2_points(&pts)));
        }
    }
    for (i, (_, label, rows)) in named.iter().enumerate() {
        for (t, ms) in curves(rows) {
            for (_, pts) in ms {
                by_tier.entry(t.clone()).or_default().push(Line {
                    label: label.clone(),
                    color: EXTRA_COLORS[i % EXTRA_COLORS.len()],
                    dashed: false,
                    markers_only: false,
                    points: log2_points(&pts),
                });
            }
        }
    }
    named_pass_figure(
        out,
        "fig6_lambda",
        "W-REINFORCE λ sweep (λ·PSR + NSR): pass@k, mean over the seeds each ran",
        &by_tier,
    )
}

fn draw_ablations<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    training: &[Line],
    pass: &[Line],
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(e2s)?;
    let root = root
        .titled("Ablations of the PPO structure (design C, seed 0): clipping, staleness, normalisation", (FONT, 19))
        .map_err(e2s)?;
    let (w, _) = root.dim_in_pixel();
    let (plots, legend) = root.split_horizontally(w.saturating_sub(LEGEND_W + 40));
    let all: Vec<&Line> = training.iter().chain(pass.iter()).collect();
    legend_column(&legend, &all)?;
    let areas = plots.split_evenly((1, 2));
    step_panel(
        &areas[0],
        "training correct ratio per batch (9-step mean; x in 32-prompt steps)",
        "correct ratio",
        training,
    )?;
    let kmax = pass.iter().flat_map(|l| l.points.iter().map(|p| p.0)).fold(1.0f64, f64::max);
    pass_panel(&areas[1], "pass@k, aime tier (for AIME 2025)", pass, kmax, 14)?;
    Ok(())
}

/// The ablations figure: training curves of every ablation run (the main run's PSR and NSR of the
/// same seed for reference) and their pass@k on the hardest tier.
pub fn ablations_figure(
    main_runs: &[TrainingRun],
    main_rows: &[PassRow],
    ab_runs: &[TrainingRun],
    ab_rows: &[PassRow],
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let is_ablation = |m: &str| !m.starts_with("lambda-");
    let mut training = vec![];
    let mut pass = vec![];
    let mut i = 0;
    let mut push = |name: &str, label: String, steps: Option<&TrainingRun>, rows: Vec<PassRow>, color: RGBColor| {
        if let Some(r) = steps {
            let pts: Vec<(f64, f64)> = r
                .steps
                .iter()
                .filter_map(|e| Some((e.get("step")?.as_u64()? as f64, e.get("correct_ratio")?.as_f64()?)))
                .collect();
            // On-policy runs take 4× the steps with a quarter of the prompts: show them per
            // rollout sample seen, i.e. on the same x scale as 32-prompt steps.
            let scale = r.steps.first().and_then(|e| e.get("prompts")?.as_f64()).map(|p| p / 32.0).unwrap_or(1.0);
            let pts: Vec<(f64, f64)> = pts.into_iter().map(|(s, v)| (s * scale, v)).collect();
            training.push(Line {
                label: label.clone(),
                color,
                dashed: false,
                markers_only: false,
                points: smooth(&pts, 9),
            });
        }
        let aime: Vec<PassRow> = rows.into_iter().filter(|r| r.tier == "aime").collect();
        for (_, ms) in curves(&aime) {
            for (_, pts) in ms {
                pass.push(Line {
                    label: label.clone(),
                    color,
                    dashed: name == "base",
                    markers_only: false,
                    points: log2_points(&pts),
                });
            }
        }
    };
    let seed0 = |rows: &[PassRow], m: &str| -> Vec<PassRow> {
        rows.iter().filter(|r| r.method == m && r.seed == 0).cloned().collect()
    };
    push("base", "Base".into(), None, seed0(main_rows, "base"), method_color("base"));
    for m in ["psr", "nsr"] {
        let run = main_runs.iter().find(|r| r.method == m && r.seed == 0);
        push(
            m,
            format!("{} (main: lr 1e-4, clip, 4 mini-batches)", method_label(m)),
            run,
            seed0(main_rows, m),
            method_color(m),
        );
    }
    let mut names: Vec<String> = ab_runs.iter().map(|r| r.method.clone()).filter(|m| is_ablation(m)).collect();
    names.sort();
    names.dedup();
    for m in names {
        let run = ab_runs.iter().find(|r| r.method == m && r.seed == 0);
        push(&m, m.clone(), run, seed0(ab_rows, &m), EXTRA_COLORS[i % EXTRA_COLORS.len()]);
        i += 1;
    }
    Ok(render_both!(out, "fig7_ablations", (1500 + LEGEND_W, 600), draw_ablations(&training, &pass)))
}
