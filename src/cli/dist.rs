//! `dist-check`: joins the process group the launcher describes and checks every collective the
//! trainer uses against its known answer (library: `dist`).

use anyhow::{bail, Result};
use rlvr_decomp::dist::{self, Backend, Launch, ProcessGroup, ReduceOp};
use std::time::Duration;
use tch::{Kind, Tensor};

#[derive(clap::Args, Debug, Clone)]
pub struct DistCheckArgs {
    /// Collective backend: gloo (CPU tensors) or nccl (CUDA tensors; `cuda` builds).
    #[arg(long, default_value = "gloo")]
    pub backend: String,
    /// Seconds any collective (and joining) may take before it fails (env RLVR_DIST_TIMEOUT_S).
    #[arg(long, env = "RLVR_DIST_TIMEOUT_S", default_value_t = 60.0)]
    pub timeout_s: f64,
    /// Repeat the all-reduce check this many times, `--pause-ms` apart (to watch a job, or to test
    /// what happens when a rank dies mid-way).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u64,
}

fn expect(what: &str, got: &Tensor, want: &Tensor) -> Result<()> {
    let d = (got.to_kind(Kind::Double) - want.to_kind(Kind::Double)).abs().max().double_value(&[]);
    if d != 0.0 {
        bail!("{what}: got {got:?}, expected {want:?} (max difference {d})");
    }
    Ok(())
}

pub fn run(a: DistCheckArgs) -> Result<()> {
    let Some(launch) = Launch::from_env()? else {
        bail!("not launched as a multi-process job (no WORLD_SIZE > 1): run under torchrun or srun, e.g. torchrun --nproc-per-node 2 --no-python rlvr-decomp dist-check");
    };
    let backend: Backend = a.backend.parse()?;
    let timeout = dist::timeout_from_env(Duration::from_secs_f64(a.timeout_s))?;
    let dev = match backend {
        Backend::Gloo => tch::Device::Cpu,
        Backend::Nccl => rlvr_decomp::model::parse_device(&format!("cuda:{}", launch.local_rank))?,
    };
    let pg = ProcessGroup::init(&launch, backend, timeout)?;
    let (r, w) = (pg.rank() as f64, pg.world() as i64);
    let opts = (Kind::Float, dev);
    for round in 0..a.rounds {
        let t = Tensor::full([3], r + 1.0, opts);
        pg.all_reduce(&[&t], ReduceOp::Sum)?;
        expect("all-reduce sum", &t, &Tensor::full([3], (w * (w + 1) / 2) as f64, opts))?;
        if a.rounds > 1 {
            eprintln!("rank {}: round {}/{} ok", pg.rank(), round + 1, a.rounds);
        }
        std::thread::sleep(Duration::from_millis(a.pause_ms));
    }
    let t = Tensor::full([2], r, opts);
    pg.all_reduce(&[&t], ReduceOp::Max)?;
    expect("all-reduce max", &t, &Tensor::full([2], (w - 1) as f64, opts))?;
    let t = Tensor::full([4], r * 10.0, opts);
    pg.broadcast(&t, (w - 1) as usize)?;
    expect("broadcast", &t, &Tensor::full([4], (w - 1) as f64 * 10.0, opts))?;
    let out = Tensor::zeros([2 * w], opts);
    pg.all_gather(&out, &Tensor::full([2], r, opts))?;
    expect("all-gather", &out, &Tensor::arange(w, opts).repeat_interleave_self_int(2, None, None))?;
    // Every rank sends [0, 1, .., 2w-1] + rank; slice r of the sum is Σ_q (2r + j + q).
    let input = Tensor::arange(2 * w, opts) + r;
    let out = Tensor::zeros([2], opts);
    pg.reduce_scatter(&out, &input)?;
    let base = Tensor::arange_start(2 * pg.rank() as i64, 2 * pg.rank() as i64 + 2, opts);
    expect("reduce-scatter", &out, &(base * w as f64 + (w * (w - 1) / 2) as f64))?;
    let mine = format!("rank {}", pg.rank()).repeat(pg.rank() + 1);
    let all = pg.all_gather_bytes(mine.as_bytes())?;
    for (q, b) in all.iter().enumerate() {
        if b != format!("rank {q}").repeat(q + 1).as_bytes() {
            bail!("all-gather of bytes: rank {q}'s entry is wrong");
        }
    }
    pg.barrier()?;
    println!(
        "dist-check: rank {} of {} ({}, store at {}:{}{}): all-reduce, broadcast, all-gather, reduce-scatter, barrier ok",
        pg.rank(),
        pg.world(),
        backend.name(),
        launch.master_addr,
        launch.master_port,
        if launch.agent_store { ", torchrun's agent store" } else { "" }
    );
    Ok(())
}
