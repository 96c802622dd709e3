//! `rlvr-decomp golden check|bless|manifest` (library: `golden`).

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum GoldenCmd {
    /// Recompute the golden outputs from a run and compare: exits non-zero with a diff-style report
    /// naming each item, file and number that moved.
    Check(GoldenArgs),
    /// Rewrite golden/<profile>/golden.json (and manifest.json) from a run. Explicit, never automatic:
    /// review the diff of `golden check` first.
    Bless(GoldenArgs),
    /// Write results/<run>/manifest.json: seeds, git commit, crate and wheel versions, device, threads.
    Manifest(ManifestArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct GoldenArgs {
    /// Run folder (results/<run>) produced by `make reproduce PROFILE=<profile>`.
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Profile name: the golden file is <golden-dir>/<profile>/golden.json.
    #[arg(long, default_value = "smoke")]
    pub profile: String,
    /// The golden folder (with inputs/ and one folder per profile).
    #[arg(long, value_name = "DIR", default_value = "golden")]
    pub golden_dir: PathBuf,
    /// The claims file rendered from the fixed inputs.
    #[arg(long, value_name = "FILE", default_value = "paper/claims.toml")]
    pub claims: PathBuf,
    /// Bless only: absolute tolerance of pass@k bands.
    #[arg(long, default_value_t = rlvr_decomp::golden::Tolerances::default().pass_at_k)]
    pub pass_at_k_tol: f64,
    /// Bless only: relative tolerance of entropy bands.
    #[arg(long, default_value_t = rlvr_decomp::golden::Tolerances::default().entropy_rel)]
    pub entropy_rel_tol: f64,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ManifestArgs {
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    #[arg(long, default_value = "mini")]
    pub profile: String,
}

fn golden_file(a: &GoldenArgs) -> PathBuf {
    a.golden_dir.join(&a.profile).join("golden.json")
}

fn compute(a: &GoldenArgs) -> Result<rlvr_decomp::golden::Golden> {
    let tol = rlvr_decomp::golden::Tolerances {
        pass_at_k: a.pass_at_k_tol,
        entropy_rel: a.entropy_rel_tol,
        ..Default::default()
    };
    rlvr_decomp::golden::compute(&a.run, &a.profile, &a.golden_dir, &a.claims, tol)
        .with_context(|| format!("golden outputs of {}", a.run.display()))
}

fn write_manifest(run: &Path, profile: &str, to: &Path) -> Result<()> {
    super::write_json_atomic(to, &rlvr_decomp::golden::manifest(run, profile))
}

pub fn run(cmd: GoldenCmd) -> Result<()> {
    match cmd {
        GoldenCmd::Check(a) => {
            let path = golden_file(&a);
            let blessed = rlvr_decomp::golden::load(&path)?;
            let now = compute(&a)?;
            let diffs = rlvr_decomp::golden::compare(&blessed, &now);
            let report =
                rlvr_decomp::golden::render_diffs(&path, &a.run, &diffs, (blessed.hashes.len(), blessed.bands.len()));
            print!("{report}");
            let failing = diffs.iter().filter(|d| d.fails()).count();
            anyhow::ensure!(
                failing == 0,
                "{failing} golden output(s) of {} moved (if intended: rlvr-decomp golden bless --run {} --profile {})",
                a.run.display(),
                a.run.display(),
                a.profile
            );
            Ok(())
        }
        GoldenCmd::Bless(a) => {
            let path = golden_file(&a);
            let now = compute(&a)?;
            if let Ok(old) = rlvr_decomp::golden::load(&path) {
                let diffs = rlvr_decomp::golden::compare(&old, &now);
                print!(
                    "{}",
                    rlvr_decomp::golden::render_diffs(&path, &a.run, &diffs, (old.hashes.len(), old.bands.len()))
                );
            }
            rlvr_decomp::golden::save(&path, &now)?;
            write_manifest(&a.run, &a.profile, &path.with_file_name("manifest.json"))?;
            println!("blessed {} ({} hashes, {} bands)", path.display(), now.hashes.len(), now.bands.len());
            Ok(())
        }
        GoldenCmd::Manifest(m) => {
            let to = m.run.join("manifest.json");
            write_manifest(&m.run, &m.profile, &to)?;
            println!("{}", to.display());
            Ok(())
        }
    }
}
