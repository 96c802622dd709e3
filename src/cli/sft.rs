//! `rlvr-decomp sft`: supervised fine-tuning of the mini base model (library: `sft`).

use anyhow::{Context, Result};
use rlvr_decomp::sft::{self, SftConfig};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct SftArgs {
    /// SFT config (TOML: [task] design/seed of the mini task, [model] shape, steps, batch, [optim]).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Override any key, e.g. --set steps=2000 --set task.design=b (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Output run folder: base/ (the model), init/, sft_metrics.jsonl.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(args: SftArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.config).with_context(|| format!("reading {}", args.config.display()))?;
    let cfg = SftConfig::from_toml(&text, &args.sets).with_context(|| format!("{}", args.config.display()))?;
    let mut on_line = |l: &sft::SftLine| {
        if l.eval.is_empty() {
            tracing::info!("sft step {}/{}: loss {:.4} ({:.1} s)", l.step, cfg.steps, l.loss, l.seconds);
        }
        for e in &l.eval {
            tracing::info!(
                "sft step {} {}: pass@1 {:.3}, pass@{} {:.3}, strategy-2 share {:.3}, entropy {:.4}",
                l.step,
                e.tier,
                e.pass_at_1,
                e.samples_per_problem,
                e.pass_at_n,
                e.s2_share,
                e.entropy
            );
        }
    };
    let s = sft::run(&cfg, &args.out, &mut on_line).with_context(|| format!("sft into {}", args.out.display()))?;
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct MiniDataArgs {
    /// A config with the mini task's [task] table (an sft config or a mini RL config).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Output folder: tier-math.jsonl, tier-amc.jsonl, tier-aime.jsonl.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `rlvr-decomp mini-data`: the mini task's held-out tiers as problem files for `sample --problems`.
pub fn run_mini_data(args: MiniDataArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.config).with_context(|| format!("reading {}", args.config.display()))?;
    let cfg = SftConfig::task_from_toml(&text, &args.sets).with_context(|| format!("{}", args.config.display()))?;
    let data = rlvr_decomp::mini::MiniData::generate(&cfg);
    let paths = data.write_tiers(&args.out).with_context(|| format!("writing {}", args.out.display()))?;
    for p in &paths {
        println!("{}", p.display());
    }
    Ok(())
}
