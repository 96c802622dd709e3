//! `passk`: the unbiased pass@k estimator over a JSONL file of counts or verdicts.

use std::path::PathBuf;

use rlvr_decomp::eval::pass_at_k::{self, parse_k_list, powers_of_two_up_to};

#[derive(clap::Args, Debug)]
pub struct PasskArgs {
    /// JSONL input: each line `{"problem_id": .., "n": N, "c": C}` or `{"problem_id": .., "correct": [true, false, ..]}`
    /// (lines with the same problem_id are merged, so one line per sample works too).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Comma-separated k values; default 1,2,4,… up to the smallest n of any problem.
    #[arg(long, value_name = "K,K,..")]
    pub k: Option<String>,
    /// Write `{"n_problems": P, "pass_at_k": {"1": .., ..}, "per_problem": {..}}` here.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(args: PasskArgs) -> anyhow::Result<()> {
    // Validate --k before reading anything, so a typo fails fast.
    let explicit = args.k.as_deref().map(parse_k_list).transpose()?;
    let counts = pass_at_k::read_counts(&args.input)?;
    let min_n = counts.values().map(|c| c.n).min().unwrap_or(0);
    let ks = explicit.unwrap_or_else(|| powers_of_two_up_to(min_n));
    let report = pass_at_k::report(&counts, &ks)?;
    let total_samples: u64 = counts.values().map(|c| c.n).sum();
    println!("{} problems, {} samples (n per problem: min {})", report.n_problems, total_samples, min_n);
    println!("{:>6}  {:>10}", "k", "pass@k");
    for (k, v) in &report.pass_at_k {
        println!("{k:>6}  {v:>10.6}");
    }
    if let Some(out) = &args.out {
        super::write_json_atomic(out, &report)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
