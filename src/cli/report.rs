//! `rlvr-decomp report`, `figures` and `claims`: Table 1, the figures and the claims table of a
//! run (library: `report`).

use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// Run folder (results/<run>) with eval/<method>/seed<S>/ and rl/<method>/seed<S>/.
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Only the outputs whose name starts with this (table1, fig2, fig4, fig5, fig6, fig7).
    #[arg(long)]
    pub only: Option<String>,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let s = rlvr_decomp::report::run(&args.run, args.only.as_deref())
        .with_context(|| format!("report for {}", args.run.display()))?;
    for f in &s.files {
        println!("{}", f.display());
    }
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct FiguresArgs {
    /// Run folder (results/<run>).
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Only the figures whose name starts with this: fig2 (pass@k per tier, beside the paper's),
    /// fig4 (training dynamics), fig5 (gradient analysis), fig6 (λ sweep), fig7 (ablations).
    #[arg(long)]
    pub only: Option<String>,
}

/// `figures`: every figure of a run (or one), without the tables.
pub fn run_figures(args: FiguresArgs) -> Result<()> {
    let only = args.only.clone().unwrap_or_else(|| "fig".into());
    anyhow::ensure!(only.starts_with("fig"), "--only {only:?}: figures are named fig2, fig4, fig5, fig6, fig7");
    run(ReportArgs { run: args.run, only: Some(only) })
}

#[derive(clap::Args, Debug, Clone)]
pub struct ClaimsArgs {
    /// Run folder (results/<run>); experiments are read from its experiments/<name>/.
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// The claims file.
    #[arg(long, value_name = "FILE", default_value = "paper/claims.toml")]
    pub claims: PathBuf,
    /// Exit non-zero when a claim of the paper (not a sceptic's reading or an experiment) fails.
    #[arg(long)]
    pub strict: bool,
}

/// `claims`: checks the paper's claims on a run; prints PASS / FAIL / NOT-RUN with the numbers and
/// writes report/claims.json and report/claims.md.
pub fn run_claims(args: ClaimsArgs) -> Result<()> {
    use rlvr_decomp::report::claims::{self, Role, Status};
    let (results, files) =
        claims::run(&args.run, &args.claims).with_context(|| format!("claims for {}", args.run.display()))?;
    print!("{}", claims::render(&results));
    for f in &files {
        println!("wrote {}", f.display());
    }
    let failed = results.iter().filter(|r| r.role == Role::Claim && r.status == Status::Fail).count();
    if args.strict && failed > 0 {
        anyhow::bail!("{failed} of the paper's claims failed on {}", args.run.display());
    }
    Ok(())
}
