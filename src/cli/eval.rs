//! `rlvr-decomp eval`: samples directories → per-problem counts + pass@k curve (JSON + parquet).

use anyhow::{Context, Result};
use rlvr_decomp::eval::pass_at_k::parse_k_list;
use rlvr_decomp::sample::eval::evaluate;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// Samples directories written by `rlvr-decomp sample` (one per dataset); repeatable.
    #[arg(long, value_name = "DIR", required = true, num_args = 1..)]
    pub samples: Vec<PathBuf>,
    /// k values, e.g. 1,2,4,256 (default: powers of two up to the samples per problem).
    #[arg(long)]
    pub k: Option<String>,
    /// Output directory (default: results/<run>/eval for samples in results/<run>/samples[/<dataset>]).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let ks = args.k.as_deref().map(parse_k_list).transpose()?;
    let out = match &args.out {
        Some(o) => o.clone(),
        None => {
            let first = args.samples[0].canonicalize().with_context(|| format!("{}", args.samples[0].display()))?;
            // results/<run>/samples/<dataset> or results/<run>/samples → results/<run>/eval
            let run = if first.file_name().is_some_and(|n| n == "samples") {
                first.parent()
            } else {
                first.parent().and_then(|p| {
                    if p.file_name().is_some_and(|n| n == "samples") {
                        p.parent()
                    } else {
                        Some(p)
                    }
                })
            };
            run.map(|p| p.join("eval")).unwrap_or_else(|| PathBuf::from("eval"))
        }
    };
    let evals = evaluate(&args.samples, ks.as_deref(), &out)?;
    for e in &evals {
        if !e.complete {
            tracing::warn!(
                "{}: incomplete run ({} of {} problems, min {} of {} samples); resume `sample` to finish",
                e.dataset,
                e.problems_with_samples,
                e.problems_expected,
                e.min_samples,
                e.k_requested
            );
        }
    }
    let summary: serde_json::Value = evals
        .iter()
        .map(|e| (e.dataset.name().to_string(), serde_json::json!({"pass_at_k": e.report.pass_at_k, "n_problems": e.report.n_problems, "complete": e.complete})))
        .collect::<serde_json::Map<_, _>>()
        .into();
    println!("{}", serde_json::to_string_pretty(&serde_json::json!({"out": out, "datasets": summary}))?);
    Ok(())
}
