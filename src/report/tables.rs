//! Table 1 analogue: pass@k for k ∈ {1, 2, 4, …} × method × tier.
//!
//! `table1.csv` is long (`method,seed,tier,k,pass_at_k`, sorted, 6 decimals: canonical bytes);
//! `table1.md` is wide like the paper's (one block per tier, methods as rows, ×100 with one
//! decimal, the mean over seeds and, where several seeds ran, their range).

use super::{io_err, method_label, method_rank, tier_rank, PassRow, ReportError, Result};
use polars::prelude::*;
use std::path::{Path, PathBuf};

/// What each tier stands in for.
fn tier_title(t: &str) -> String {
    let difficulty = match t {
        "math" => "easy problems",
        "amc" => "half easy, half hard",
        "aime" => "hard problems",
        _ => return t.to_string(),
    };
    format!("{t} (stands in for {}: {difficulty})", super::paper::benchmark_of_tier(t))
}

fn pe(e: PolarsError) -> ReportError {
    ReportError::Table(e.to_string())
}

/// The long table as a DataFrame.
pub fn frame(rows: &[PassRow]) -> Result<DataFrame> {
    DataFrame::new_infer_height(vec![
        Column::new("method".into(), rows.iter().map(|r| r.method.clone()).collect::<Vec<_>>()),
        Column::new("seed".into(), rows.iter().map(|r| r.seed).collect::<Vec<_>>()),
        Column::new("tier".into(), rows.iter().map(|r| r.tier.clone()).collect::<Vec<_>>()),
        Column::new("k".into(), rows.iter().map(|r| r.k).collect::<Vec<_>>()),
        Column::new("pass_at_k".into(), rows.iter().map(|r| r.pass_at_k).collect::<Vec<_>>()),
    ])
    .map_err(pe)
}

/// Mean, min and max over seeds per (method, tier, k), in the input's order.
pub fn seed_means(rows: &[PassRow]) -> Result<DataFrame> {
    frame(rows)?
        .lazy()
        .group_by_stable([col("method"), col("tier"), col("k")])
        .agg([
            col("pass_at_k").mean().alias("mean"),
            col("pass_at_k").min().alias("min"),
            col("pass_at_k").max().alias("max"),
            col("seed").count().alias("seeds"),
        ])
        .collect()
        .map_err(pe)
}

fn write_csv(df: &mut DataFrame, path: &Path) -> Result<()> {
    let mut csv = Vec::new();
    CsvWriter::new(&mut csv).with_float_precision(Some(6)).finish(df).map_err(pe)?;
    crate::durable::write(path, &csv).map_err(io_err(path))
}

/// Writes `table1.csv` and `table1.md` into `out`.
pub fn write_table1(rows: &[PassRow], out: &Path) -> Result<Vec<PathBuf>> {
    let csv_path = out.join("table1.csv");
    write_csv(&mut frame(rows)?, &csv_path)?;
    let n_seeds = rows.iter().map(|r| r.seed).collect::<std::collections::BTreeSet<_>>().len();
    let mut md = String::from("# Table 1: pass@k (%) by method and tier\n\n");
    md.push_str(&format!(
        "Unbiased pass@k (Chen et al. 2021) from the run's samples; the mean over {n_seeds} seed(s){}. \
         Long form with every seed: `table1.csv`.\n",
        if n_seeds > 1 { ", with the range over seeds in brackets" } else { "" }
    ));
    md.push_str(&md_blocks(rows, "##")?);
    let md_path = out.join("table1.md");
    crate::durable::write(&md_path, md.as_bytes()).map_err(io_err(&md_path))?;
    Ok(vec![csv_path, md_path])
}

/// Writes `table_experiments.csv` (long, with an `experiment` column) and `table_experiments.md`
/// (one section per experiment, laid out like Table 1).
pub fn write_experiments(exps: &[(String, Vec<PassRow>)], out: &Path) -> Result<Vec<PathBuf>> {
    let all: Vec<&PassRow> = exps.iter().flat_map(|(_, r)| r.iter()).collect();
    let names: Vec<String> = exps.iter().flat_map(|(e, r)| std::iter::repeat_n(e.clone(), r.len())).collect();
    let owned: Vec<PassRow> = all.iter().map(|r| (*r).clone()).collect();
    let mut df = frame(&owned)?;
    df.insert_column(0, Column::new("experiment".into(), names)).map_err(pe)?;
    let csv_path = out.join("table_experiments.csv");
    write_csv(&mut df, &csv_path)?;
    let mut md = String::from("# Experiments: pass@k (%) by method and tier\n\n");
    md.push_str(
        "Design B is the control (an always-correct slow strategy: every method should improve every k); \
         design H is claim (b)'s experiment (hash-bit targets, first-order neutral; PSR and NSR at lr 3e-4); \
         `ablations` are the PPO-structure switches and the λ sweep. Mean over seeds, range in brackets.\n",
    );
    for (e, rows) in exps {
        md.push_str(&format!("\n## {e}\n"));
        md.push_str(&md_blocks(rows, "###")?);
    }
    let md_path = out.join("table_experiments.md");
    crate::durable::write(&md_path, md.as_bytes()).map_err(io_err(&md_path))?;
    Ok(vec![csv_path, md_path])
}

/// The wide blocks (one per tier; methods as rows, k as columns; mean [min–max] over seeds).
fn md_blocks(rows: &[PassRow], heading: &str) -> Result<String> {
    let agg = seed_means(rows)?;
    let n = agg.height();
    let get_str = |c: &str| -> Result<Vec<String>> {
        let ca = agg.column(c).map_err(pe)?.str().map_err(pe)?.clone();
        Ok((0..n).map(|i| ca.get(i).unwrap_or("").to_string()).collect())
    };
    let get_f = |c: &str| -> Result<Vec<f64>> {
        let ca = agg.column(c).map_err(pe)?.f64().map_err(pe)?.clone();
        Ok((0..n).map(|i| ca.get(i).unwrap_or(f64::NAN)).collect())
    };
    let (methods, tiers) = (get_str("method")?, get_str("tier")?);
    let kc = agg.column("k").map_err(pe)?.u64().map_err(pe)?.clone();
    let ks: Vec<u64> = (0..n).map(|i| kc.get(i).unwrap_or(0)).collect();
    let (mean, min, max) = (get_f("mean")?, get_f("min")?, get_f("max")?);
    let sc = agg.column("seeds").map_err(pe)?.u32().map_err(pe)?.clone();
    let seeds: Vec<u32> = (0..n).map(|i| sc.get(i).unwrap_or(0)).collect();

    let mut tier_list: Vec<String> = tiers.clone();
    tier_list.sort_by_key(|t| tier_rank(t));
    tier_list.dedup();
    let mut method_list: Vec<String> = methods.clone();
    method_list.sort_by_key(|m| method_rank(m));
    method_list.dedup();
    let mut k_list = ks.clone();
    k_list.sort_unstable();
    k_list.dedup();
    let mut md = String::new();
    for tier in &tier_list {
        md.push_str(&format!("\n{heading} {}\n\n| method |", tier_title(tier)));
        for k in &k_list {
            md.push_str(&format!(" k={k} |"));
        }
        md.push_str("\n|---|");
        md.push_str(&"---:|".repeat(k_list.len()));
        md.push('\n');
        for m in &method_list {
            md.push_str(&format!("| {} |", method_label(m)));
            for k in &k_list {
                let i = (0..methods.len()).find(|&i| &methods[i] == m && &tiers[i] == tier && ks[i] == *k);
                match i {
                    Some(i) if seeds[i] > 1 => {
                        md.push_str(&format!(" {:.1} [{:.1}–{:.1}] |", 100.0 * mean[i], 100.0 * min[i], 100.0 * max[i]))
                    }
                    Some(i) => md.push_str(&format!(" {:.1} |", 100.0 * mean[i])),
                    None => md.push_str(" – |"),
                }
            }
            md.push('\n');
        }
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(m: &str, seed: u64, tier: &str, k: u64, p: f64) -> PassRow {
        PassRow { method: m.into(), seed, tier: tier.into(), k, pass_at_k: p }
    }

    #[test]
    fn long_csv_is_canonical_and_markdown_shows_means_and_ranges() {
        let t = tempfile::tempdir().unwrap();
        let rows = vec![
            row("base", 0, "aime", 1, 0.1),
            row("base", 0, "aime", 256, 1.0),
            row("psr", 0, "aime", 1, 0.3),
            row("psr", 0, "aime", 256, 0.6),
            row("psr", 1, "aime", 1, 0.5),
            row("psr", 1, "aime", 256, 0.7),
        ];
        write_table1(&rows, t.path()).unwrap();
        let csv = std::fs::read_to_string(t.path().join("table1.csv")).unwrap();
        assert!(csv.starts_with("method,seed,tier,k,pass_at_k\nbase,0,aime,1,0.100000\n"), "{csv}");
        let md = std::fs::read_to_string(t.path().join("table1.md")).unwrap();
        assert!(md.contains("| PSR | 40.0 [30.0–50.0] | 65.0 [60.0–70.0] |"), "{md}");
        assert!(
            md.contains("| Base | 10.0 [10.0–10.0] | 100.0 [100.0–100.0] |") || md.contains("| Base | 10.0 | 100.0 |"),
            "{md}"
        );
    }
}
