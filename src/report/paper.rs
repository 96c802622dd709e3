//! The paper's published numbers (`paper/data/*.csv`, see `paper/data/README.md` for their
//! sources), read with polars so that the figures can draw them beside ours.
//!
//! * `table1_qwen2.5-math-7b.csv` — Table 1, exact (pass@k in %, k = 1…256).
//! * `fig3_qwen3-4b_approx.csv` — Fig. 3 read off the plot (± 1–2 points; values like `~83.0`).
//! * `fig4_training_curves_approx.csv` — a few points of Fig. 4a–d read off the plot.
//!
//! Method names map to ours (`Base Model` → `base`, `W-REINFORCE` → `w-reinforce`, …) and
//! benchmarks to our tiers ([`tier_of_benchmark`]).

use super::{ReportError, Result};
use polars::prelude::*;
use std::path::{Path, PathBuf};

/// The folder of the paper's numbers, relative to the project root.
pub const DATA_DIR: &str = "paper/data";

/// Our tier standing in for a benchmark of the paper (or the benchmark's own name).
pub fn tier_of_benchmark(name: &str) -> String {
    let n = name.strip_prefix("tier-").unwrap_or(name);
    match n {
        "MATH" | "math500" | "math-test" | "paper-math-test" => "math".into(),
        "AMC23" | "amc23" => "amc".into(),
        "AIME 2025" | "aime2025" => "aime".into(),
        other => other.to_string(),
    }
}

/// The benchmark a tier stands in for, for titles.
pub fn benchmark_of_tier(tier: &str) -> &str {
    match tier {
        "math" => "MATH",
        "amc" => "AMC 2023",
        "aime" => "AIME 2025",
        other => other,
    }
}

/// Our method name for the paper's.
pub fn method_of(paper: &str) -> String {
    match paper {
        "Base Model" | "base" | "all" => "base".into(),
        other => other.to_lowercase(),
    }
}

/// `~83.0`, `77.6 (peak)`, `63.2` → the number.
pub fn parse_value(s: &str) -> Option<f64> {
    s.trim().trim_start_matches('~').split_whitespace().next()?.parse().ok()
}

/// One published point.
#[derive(Debug, Clone, PartialEq)]
pub struct PaperPoint {
    pub model: String,
    pub method: String,
    /// Our tier (pass@k files) or the metric name (training curves).
    pub series: String,
    /// k (pass@k) or the training step.
    pub x: f64,
    /// pass@k as a fraction (pass@k files); the value as published (training curves).
    pub y: f64,
}

fn read_csv(path: &Path) -> Result<DataFrame> {
    CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0)) // every column as text: values carry `~` and notes
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|r| r.finish())
        .map_err(|e| ReportError::BadFile { path: path.to_path_buf(), msg: e.to_string() })
}

fn column(df: &DataFrame, path: &Path, name: &str) -> Result<Vec<String>> {
    let bad = |msg: String| ReportError::BadFile { path: path.to_path_buf(), msg };
    let c = df.column(name).map_err(|e| bad(e.to_string()))?;
    let ca = c.str().map_err(|e| bad(e.to_string()))?;
    Ok((0..ca.len()).map(|i| ca.get(i).unwrap_or("").to_string()).collect())
}

/// Reads a file of the paper's numbers: pass@k files have columns `model,method,dataset,k,pass_at_k`;
/// training-curve files `model,method,metric,step,value`.
pub fn load(path: &Path) -> Result<Vec<PaperPoint>> {
    let df = read_csv(path)?;
    let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    let passk = names.iter().any(|n| n == "pass_at_k");
    let (series_col, x_col, y_col) = if passk { ("dataset", "k", "pass_at_k") } else { ("metric", "step", "value") };
    let (model, method) = (column(&df, path, "model")?, column(&df, path, "method")?);
    let (series, x, y) = (column(&df, path, series_col)?, column(&df, path, x_col)?, column(&df, path, y_col)?);
    let mut out = vec![];
    for i in 0..df.height() {
        let (Some(xv), Some(yv)) = (parse_value(&x[i]), parse_value(&y[i])) else {
            return Err(ReportError::BadFile {
                path: path.to_path_buf(),
                msg: format!("row {}: {x_col} {:?} / {y_col} {:?} is not a number", i + 2, x[i], y[i]),
            });
        };
        out.push(PaperPoint {
            model: model[i].clone(),
            method: method_of(&method[i]),
            series: if passk { tier_of_benchmark(&series[i]) } else { series[i].clone() },
            x: xv,
            y: if passk { yv / 100.0 } else { yv },
        });
    }
    Ok(out)
}

/// The paper's numbers the figures use, from `root/paper/data/` (absent files give no points).
#[derive(Debug, Clone, Default)]
pub struct PaperData {
    /// (label, points): Table 1 (Qwen2.5-Math-7B) and Fig. 3 (Qwen3-4B).
    pub pass_at_k: Vec<(String, Vec<PaperPoint>)>,
    pub training: Vec<PaperPoint>,
    pub files: Vec<PathBuf>,
}

impl PaperData {
    pub fn load(root: &Path) -> Result<PaperData> {
        let dir = root.join(DATA_DIR);
        let mut d = PaperData::default();
        for (file, label) in [
            ("table1_qwen2.5-math-7b.csv", "paper: Qwen2.5-Math-7B (Table 1)"),
            ("fig3_qwen3-4b_approx.csv", "paper: Qwen3-4B (Fig. 3, read off the plot)"),
        ] {
            let p = dir.join(file);
            if p.is_file() {
                // One model per panel: the file's first (Fig. 3's file also quotes the thinking
                // mode's two numbers from the text, a different model).
                let mut pts = load(&p)?;
                if let Some(first) = pts.first().map(|x| x.model.clone()) {
                    pts.retain(|x| x.model == first);
                }
                d.pass_at_k.push((label.to_string(), pts));
                d.files.push(p);
            }
        }
        let p = dir.join("fig4_training_curves_approx.csv");
        if p.is_file() {
            d.training = load(&p)?;
            d.files.push(p);
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_names_map_to_ours() {
        assert_eq!(parse_value("~77.6 (peak)"), Some(77.6));
        assert_eq!(parse_value("63.2"), Some(63.2));
        assert_eq!(parse_value("n/a"), None);
        assert_eq!(tier_of_benchmark("AIME 2025"), "aime");
        assert_eq!(tier_of_benchmark("tier-amc"), "amc");
        assert_eq!(method_of("Base Model"), "base");
        assert_eq!(method_of("W-REINFORCE"), "w-reinforce");
    }

    #[test]
    fn reads_the_shipped_paper_files() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let d = PaperData::load(root).unwrap();
        assert_eq!(d.pass_at_k.len(), 2);
        let t1 = &d.pass_at_k[0].1;
        assert_eq!(t1.len(), 162, "Table 1: 6 methods × 3 benchmarks × 9 k");
        let base_math_1 = t1.iter().find(|p| p.method == "base" && p.series == "math" && p.x == 1.0).unwrap();
        assert!((base_math_1.y - 0.632).abs() < 1e-12);
        assert!(d.training.iter().any(|p| p.series == "test_entropy" && p.method == "psr"));
    }
}
