//! `rlvr-decomp export`: HF checkpoint → ONNX (external weights, KV-cache I/O).

use anyhow::{Context, Result};
use rlvr_decomp::export::{self, ExportDType, ExportOptions, GraphKind};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// HF model directory (config.json + safetensors), Qwen2 or Qwen3; or a training run folder
    /// (`train --out`), whose newest checkpoint's policy is exported.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Output directory: model.onnx, model.onnx.data, config/tokenizer files, export.json.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Weight / compute dtype of the graph: f32 | f16 (f16 is for the CUDA EP).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Graph: `standard` (opset-17 ops, the cache grows by concatenation; any execution provider
    /// and head size) or `fused` (ONNX Runtime's GroupQueryAttention with rotary inside and
    /// Simplified/SkipSimplifiedLayerNormalization over a pre-allocated cache the sampler updates
    /// in place; head_dim a multiple of 16; CPU execution provider).
    #[arg(long, default_value = "standard", value_name = "KIND")]
    pub graph: String,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let dtype: ExportDType = args.dtype.parse()?;
    let graph: GraphKind = args.graph.parse()?;
    let t0 = std::time::Instant::now();
    let model = if args.model.join("checkpoints").is_dir() {
        let p = rlvr_decomp::rl::trainer::latest_policy(&args.model)?
            .with_context(|| format!("{}: a training run with no complete checkpoint yet", args.model.display()))?;
        tracing::info!("{} is a training run: exporting its newest checkpoint {}", args.model.display(), p.display());
        p
    } else {
        args.model.clone()
    };
    let m = export::export(&model, &args.out, &ExportOptions { dtype, graph })
        .with_context(|| format!("exporting {} to {}", model.display(), args.out.display()))?;
    tracing::info!(
        "exported {} ({} layers, {} dtype, {:.1} MB of weights) to {} in {:.1}s",
        m.arch,
        m.num_layers,
        m.dtype.name(),
        m.data_bytes as f64 / 1e6,
        args.out.display(),
        t0.elapsed().as_secs_f64()
    );
    println!("{}", serde_json::to_string_pretty(&m)?);
    Ok(())
}
