//! `rlvr-decomp`: one subcommand per pipeline stage. Dispatch only; the work is in the library.

mod cli;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Reproduce "The Surprising Effectiveness of Negative Reinforcement in LLM Reasoning"
/// (Zhu et al., 2025): PSR / NSR / W-REINFORCE / GRPO / PPO, pass@k up to 256.
///
/// Stages read the previous stage's files from results/<run>/, so any stage can be rerun alone.
/// Logs: set RUST_LOG=debug for more.
#[derive(Parser)]
#[command(name = "rlvr-decomp", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load every dataset (or one), check row counts, and summarise it (levels, prompt lengths).
    Datasets(cli::data::DatasetsArgs),
    /// Render one problem with a paper prompt template and print it with its token count.
    Prompt(cli::data::PromptArgs),
    /// Unbiased pass@k (Chen et al. 2021) from per-problem counts or per-sample verdicts (JSONL).
    Passk(cli::passk::PasskArgs),
    /// Logits of a Qwen2/Qwen3/Llama model (HF layout) for given token ids, as JSON.
    Logits(cli::model::LogitsArgs),
    /// Generate with a Qwen2/Qwen3/Llama model (tch, KV cache; greedy or seeded sampling).
    Generate(cli::model::GenerateArgs),
    /// Time one training step (forward + backward) of our tch model; see `make bench-model`.
    BenchModel(cli::model::BenchModelArgs),
    /// Write the mini task's held-out tiers as problem files (for `sample --problems`).
    MiniData(cli::sft::MiniDataArgs),
    /// Supervised fine-tuning of the mini task's base model (tiny Qwen3 + its own tokenizer).
    Sft(cli::sft::SftArgs),
    /// Train a policy with PPO, GRPO, PSR, NSR or W-REINFORCE from a config (resumable).
    Train(cli::train::TrainArgs),
    /// One optimizer step of an objective on fixed rollouts (one mini-batch, on-policy).
    TrainStep(cli::train::TrainStepArgs),
    /// Gradients w.r.t. the logits of the PSR/NSR losses (prob and logprob forms), checked
    /// against the closed forms.
    GradientAnalysis(cli::train::GradientArgs),
    /// Time one update (old log-probs, forward, loss, backward, AdamW) on fixed rollouts; see `make bench-train`.
    BenchTrain(cli::train::BenchTrainArgs),
    /// Convert a GGUF file (llama.cpp; Llama architecture, e.g. SmolLM2) into an HF-layout model
    /// folder that every stage (and transformers) loads: weights dequantized, tokenizer rebuilt.
    ImportGguf(cli::model::ImportGgufArgs),
    /// Token ids of a text under any tokenizer.json, as a JSON array (one per line with --jsonl).
    Tokenize(cli::model::TokenizeArgs),
    /// Export a Qwen2/Qwen3/Llama checkpoint (HF layout) to ONNX with KV-cache inputs/outputs.
    Export(cli::export::ExportArgs),
    /// Sample k answers per problem with ONNX Runtime (resumable; verdicts from the verifier).
    Sample(cli::sample::SampleArgs),
    /// Score a samples folder: per-problem counts and the pass@k curve per dataset (JSON + parquet).
    Eval(cli::eval::EvalArgs),
    /// Table 1 and every figure of a run into results/<run>/report/ (or one: --only).
    Report(cli::report::ReportArgs),
    /// Regenerate a run's figures alone (--only fig4 for one).
    Figures(cli::report::FiguresArgs),
    /// Check the paper's claims (paper/claims.toml) on a run: PASS / FAIL / NOT-RUN with the numbers.
    Claims(cli::report::ClaimsArgs),
    /// Golden outputs: check a run against golden/<profile>/ (CI), bless new ones, write a manifest.
    #[command(subcommand)]
    Golden(cli::golden::GoldenCmd),
    /// Verify answers: extract the final answer (last \boxed{}) and check math equivalence with the gold.
    Verify(cli::verify::VerifyArgs),
    /// Check the data-parallel wiring: run under torchrun or srun; every rank runs each collective
    /// (all-reduce, broadcast, all-gather, reduce-scatter, barrier) and checks the answer.
    DistCheck(cli::dist::DistCheckArgs),
    /// Show the native runtimes (libtorch, CUDA, ONNX Runtime) and where data is looked for.
    Env,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Datasets(a) => cli::data::run_datasets(a),
        Cmd::Prompt(a) => cli::data::run_prompt(a),
        Cmd::Passk(a) => cli::passk::run(a),
        Cmd::Verify(a) => cli::verify::run(a),
        Cmd::Export(a) => cli::export::run(a),
        Cmd::ImportGguf(a) => cli::model::run_import_gguf(a),
        Cmd::Tokenize(a) => cli::model::run_tokenize(a),
        Cmd::Sft(a) => cli::sft::run(a),
        Cmd::MiniData(a) => cli::sft::run_mini_data(a),
        Cmd::Train(a) => cli::train::run_train(a),
        Cmd::TrainStep(a) => cli::train::run_train_step(a),
        Cmd::GradientAnalysis(a) => cli::train::run_gradient(a),
        Cmd::BenchTrain(a) => cli::train::run_bench_train(a),
        Cmd::Sample(a) => cli::sample::run(a),
        Cmd::Eval(a) => cli::eval::run(a),
        Cmd::Report(a) => cli::report::run(a),
        Cmd::Figures(a) => cli::report::run_figures(a),
        Cmd::Claims(a) => cli::report::run_claims(a),
        Cmd::Golden(c) => cli::golden::run(c),
        Cmd::Logits(a) => cli::model::run_logits(a),
        Cmd::Generate(a) => cli::model::run_generate(a),
        Cmd::BenchModel(a) => cli::model::run_bench_model(a),
        Cmd::DistCheck(a) => cli::dist::run(a),
        Cmd::Env => {
            println!("{}", serde_json::to_string_pretty(&rlvr_decomp::runtime::describe()).unwrap_or_default());
            Ok(())
        }
    };
    if let Err(e) = res {
        eprintln!("error: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, outermost first; a cause already quoted by the message
/// before it (thiserror messages that include their source) is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = vec![];
    for cause in e.chain() {
        let m = cause.to_string().replace('\n', " ");
        if parts.last().is_some_and(|p| p.contains(&m)) {
            continue;
        }
        parts.push(m);
    }
    parts.join(": ")
}
