//! Data-parallel communication on libtorch's own distributed engine, c10d: a `TCPStore` for
//! rendezvous and a Gloo (CPU tensors) or NCCL (CUDA tensors, `cuda` feature) process group,
//! reached through a small C++ shim (`shim/c10d_shim.cpp`, compiled by `build.rs` against the
//! torch wheel's headers).
//!
//! * [`Launch`] — rank, world size and rendezvous address from the environment that `torchrun`
//!   (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`, and its agent's store) or
//!   a Slurm `srun` step (`SLURM_PROCID`, `SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID`; `MASTER_ADDR`
//!   exported by the batch script) sets. The batch script itself is a step of one task, so a plain
//!   run inside an allocation stays a single process.
//! * [`ProcessGroup`] — all-reduce, broadcast, all-gather, reduce-scatter and barrier on tch
//!   tensors. Every call is bounded by the group's timeout. With Gloo a peer that died or a timeout
//!   is a one-line [`DistError::Collective`]; with NCCL a timeout is caught by c10d's watchdog,
//!   which by default aborts the process (after logging the collective), as in PyTorch.
//! * [`agree`] — turns an error on some ranks into an error on every rank (no rank waits for a
//!   peer that gave up).
//!
//! What the trainer builds on top (gradient buckets, ZeRO-1) lives in [`crate::rl::optim`] and
//! [`crate::rl::update`].

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::time::Duration;
use tch::{Kind, Tensor};

/// Errors of process-group set-up and collectives; one line each.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("environment variable {var}={value:?}: {msg}")]
    Env { var: &'static str, value: String, msg: String },
    #[error("{0}")]
    Launch(String),
    #[error("c10d: cannot join the process group at {addr} as rank {rank} of {world}: {msg}")]
    Init { addr: String, rank: usize, world: usize, msg: String },
    #[error("c10d {op} failed on rank {rank} of {world}: {msg}")]
    Collective { op: &'static str, rank: usize, world: usize, msg: String },
    #[error("c10d {op}: {msg}")]
    BadTensor { op: &'static str, msg: String },
}

pub type Result<T, E = DistError> = std::result::Result<T, E>;

/// Which launcher set the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    Torchrun,
    Slurm,
    /// `RANK` / `WORLD_SIZE` set by hand (or by another launcher).
    Env,
}

/// One process's place in a data-parallel job, read from the launcher's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world: usize,
    /// Rank within this node: the CUDA device index to use.
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent already hosts the TCPStore at MASTER_ADDR:MASTER_PORT; otherwise rank 0 does.
    pub agent_store: bool,
    /// Namespaces our keys in the store (torchrun restarts get a fresh one).
    pub prefix: String,
    pub launcher: Launcher,
}

fn var(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse_num<T: std::str::FromStr>(name: &'static str, v: &str) -> Result<T> {
    v.trim().parse().map_err(|_| DistError::Env {
        var: name,
        value: v.into(),
        msg: "not a non-negative integer".into(),
    })
}

impl Launch {
    /// Reads the environment. `Ok(None)`: not launched as part of a multi-process job (no
    /// `WORLD_SIZE`/`SLURM_NTASKS`, or a world of one): train in this process alone.
    pub fn from_env() -> Result<Option<Launch>> {
        Self::from_lookup(&|k| var(k))
    }

    /// [`Launch::from_env`] over any variable lookup (tests).
    pub fn from_lookup(get: &dyn Fn(&'static str) -> Option<String>) -> Result<Option<Launch>> {
        let (launcher, rank, world, local) = if let Some(w) = get("WORLD_SIZE") {
            let world: usize = parse_num("WORLD_SIZE", &w)?;
            let rank = get("RANK").ok_or_else(|| DistError::Env {
                var: "RANK",
                value: String::new(),
                msg: format!("WORLD_SIZE={world} is set but RANK is not"),
            })?;
            let rank: usize = parse_num("RANK", &rank)?;
            // Without LOCAL_RANK (a launch by hand) every rank is assumed to be on one node.
            let local = match get("LOCAL_RANK") {
                Some(l) => parse_num("LOCAL_RANK", &l)?,
                None => rank,
            };
            let l = if get("TORCHELASTIC_RUN_ID").is_some() { Launcher::Torchrun } else { Launcher::Env };
            (l, rank, world, local)
        } else if let Some(w) = get("SLURM_STEP_NUM_TASKS") {
            let world: usize = parse_num("SLURM_STEP_NUM_TASKS", &w)?;
            let rank = get("SLURM_PROCID").ok_or_else(|| DistError::Env {
                var: "SLURM_PROCID",
                value: String::new(),
                msg: "SLURM_STEP_NUM_TASKS is set but SLURM_PROCID is not (run under srun)".into(),
            })?;
            let rank: usize = parse_num("SLURM_PROCID", &rank)?;
            let local = match get("SLURM_LOCALID") {
                Some(l) => parse_num("SLURM_LOCALID", &l)?,
                None => 0,
            };
            (Launcher::Slurm, rank, world, local)
        } else {
            return Ok(None);
        };
        if world == 0 {
            return Err(DistError::Env { var: "WORLD_SIZE", value: "0".into(), msg: "must be at least 1".into() });
        }
        if rank >= world {
            return Err(DistError::Launch(format!("rank {rank} is outside a world of {world}")));
        }
        if world == 1 {
            return Ok(None);
        }
        let master_addr = get("MASTER_ADDR").ok_or_else(|| {
            DistError::Launch(match launcher {
                Launcher::Slurm => "MASTER_ADDR is not set: in the batch script, export \
                    MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)"
                    .into(),
                _ => "MASTER_ADDR is not set (torchrun sets it; by hand, give rank 0's host name)".into(),
            })
        })?;
        let master_port = match get("MASTER_PORT") {
            Some(p) => parse_num::<u16>("MASTER_PORT", &p)?,
            None => 29500,
        };
        let agent_store = get("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let restart = get("TORCHELASTIC_RESTART_COUNT").unwrap_or_else(|| "0".into());
        Ok(Some(Launch {
            rank,
            world,
            local_rank: local,
            master_addr,
            master_port,
            agent_store,
            prefix: format!("rlvr-decomp/attempt-{restart}"),
            launcher,
        }))
    }
}

/// The collective backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// CPU tensors (and the tests).
    Gloo,
    /// CUDA tensors; needs the `cuda` feature.
    Nccl,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
    /// NCCL for CUDA devices, Gloo for the CPU.
    pub fn for_device(d: tch::Device) -> Backend {
        if d.is_cuda() {
            Backend::Nccl
        } else {
            Backend::Gloo
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = DistError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gloo" => Ok(Backend::Gloo),
            "nccl" => Ok(Backend::Nccl),
            _ => Err(DistError::Launch(format!("unknown backend {s:?} (expected gloo or nccl)"))),
        }
    }
}

/// Reductions the shim offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum = 0,
    Max = 1,
    Min = 2,
}

mod ffi {
    use super::*;
    extern "C" {
        pub fn rlvr_c10d_free_str(s: *mut c_char);
        #[allow(clippy::too_many_arguments)]
        pub fn rlvr_c10d_new(
            backend: *const c_char,
            host: *const c_char,
            port: c_int,
            rank: c_int,
            world: c_int,
            is_server: c_int,
            prefix: *const c_char,
            timeout_ms: i64,
            cuda_device: c_int,
            err: *mut *mut c_char,
        ) -> *mut c_void;
        pub fn rlvr_c10d_free(g: *mut c_void);
        pub fn rlvr_c10d_allreduce(
            g: *mut c_void,
            ts: *const *mut c_void,
            n: usize,
            op: c_int,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn rlvr_c10d_broadcast(g: *mut c_void, t: *mut c_void, root: c_int, err: *mut *mut c_char) -> c_int;
        pub fn rlvr_c10d_allgather(
            g: *mut c_void,
            out: *mut c_void,
            input: *mut c_void,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn rlvr_c10d_reduce_scatter(
            g: *mut c_void,
            out: *mut c_void,
            input: *mut c_void,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn rlvr_c10d_barrier(g: *mut c_void, err: *mut *mut c_char) -> c_int;
        pub fn rlvr_cuda_memory_peaks(device: c_int, out: *mut i64, reset: c_int, err: *mut *mut c_char) -> c_int;
    }
}

/// Takes (and frees) the shim's error string; keeps its first line.
fn take_err(p: *mut c_char) -> String {
    if p.is_null() {
        return "unknown error".into();
    }
    // SAFETY: the shim returns a NUL-terminated malloc'd string, freed once here.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    unsafe { ffi::rlvr_c10d_free_str(p) };
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or("unknown error").trim().to_string()
}

fn tensor_ptr(t: &Tensor) -> *mut c_void {
    // tch's C_tensor is libtorch's `at::Tensor*`; collectives write through it in place.
    t.as_ptr() as *mut c_void
}

/// A joined c10d process group. Collectives are blocking and must be called in the same order on
/// every rank.
pub struct ProcessGroup {
    raw: *mut c_void,
    rank: usize,
    world: usize,
    local_rank: usize,
    backend: Backend,
    timeout: Duration,
}

// The group is used from one thread at a time (&self methods block until the collective ends);
// the C++ objects are themselves thread-safe.
unsafe impl Send for ProcessGroup {}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: raw came from rlvr_c10d_new and is freed once.
        unsafe { ffi::rlvr_c10d_free(self.raw) }
    }
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProcessGroup({} rank {}/{})", self.backend.name(), self.rank, self.world)
    }
}

impl ProcessGroup {
    /// Joins the group `launch` describes (blocks until every rank has joined or `timeout`).
    /// NCCL groups bind to `cuda:local_rank` (see [`join_from_env`] for the device choice).
    pub fn init(launch: &Launch, backend: Backend, timeout: Duration) -> Result<ProcessGroup> {
        let c = |s: &str| CString::new(s).map_err(|_| DistError::Launch(format!("NUL byte in {s:?}")));
        let (b, host, prefix) = (c(backend.name())?, c(&launch.master_addr)?, c(&launch.prefix)?);
        let is_server = !launch.agent_store && launch.rank == 0;
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
        let raw = unsafe {
            ffi::rlvr_c10d_new(
                b.as_ptr(),
                host.as_ptr(),
                launch.master_port as c_int,
                launch.rank as c_int,
                launch.world as c_int,
                is_server as c_int,
                prefix.as_ptr(),
                timeout.as_millis().min(i64::MAX as u128) as i64,
                launch.local_rank as c_int,
                &mut err,
            )
        };
        if raw.is_null() {
            return Err(DistError::Init {
                addr: format!("{}:{}", launch.master_addr, launch.master_port),
                rank: launch.rank,
                world: launch.world,
                msg: take_err(err),
            });
        }
        Ok(ProcessGroup {
            raw,
            rank: launch.rank,
            world: launch.world,
            local_rank: launch.local_rank,
            backend,
            timeout,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn world(&self) -> usize {
        self.world
    }
    pub fn backend(&self) -> Backend {
        self.backend
    }
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn check(&self, op: &'static str, rc: c_int, err: *mut c_char) -> Result<()> {
        if rc == 0 {
            Ok(())
        } else {
            Err(DistError::Collective { op, rank: self.rank, world: self.world, msg: take_err(err) })
        }
    }

    fn check_tensor(&self, op: &'static str, t: &Tensor) -> Result<()> {
        if !t.is_contiguous() {
            return Err(DistError::BadTensor { op, msg: format!("tensor {:?} is not contiguous", t.size()) });
        }
        let on_cuda = t.device().is_cuda();
        if on_cuda != (self.backend == Backend::Nccl) {
            return Err(DistError::BadTensor {
                op,
                msg: format!("a {:?} tensor cannot go through the {} backend", t.device(), self.backend.name()),
            });
        }
        Ok(())
    }

    /// In place: every tensor becomes the reduction over ranks of itself.
    pub fn all_reduce(&self, ts: &[&Tensor], op: ReduceOp) -> Result<()> {
        for t in ts {
            self.check_tensor("all-reduce", t)?;
        }
        let ptrs: Vec<*mut c_void> = ts.iter().map(|t| tensor_ptr(t)).collect();
        let mut err = std::ptr::null_mut();
        // SAFETY: the tensors outlive the blocking call.
        let rc = unsafe { ffi::rlvr_c10d_allreduce(self.raw, ptrs.as_ptr(), ptrs.len(), op as c_int, &mut err) };
        self.check("all-reduce", rc, err)
    }

    /// In place: `t` becomes rank `root`'s `t`.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        self.check_tensor("broadcast", t)?;
        let mut err = std::ptr::null_mut();
        // SAFETY: as above.
        let rc = unsafe { ffi::rlvr_c10d_broadcast(self.raw, tensor_ptr(t), root as c_int, &mut err) };
        self.check("broadcast", rc, err)
    }

    /// `out` [world·n] ← every rank's `input` [n], in rank order (same dtype).
    pub fn all_gather(&self, out: &Tensor, input: &Tensor) -> Result<()> {
        self.check_tensor("all-gather", out)?;
        self.check_tensor("all-gather", input)?;
        if out.numel() != input.numel() * self.world || out.kind() != input.kind() {
            return Err(DistError::BadTensor {
                op: "all-gather",
                msg: format!("output {:?} must hold {} × input {:?}", out.size(), self.world, input.size()),
            });
        }
        let mut err = std::ptr::null_mut();
        // SAFETY: as above.
        let rc = unsafe { ffi::rlvr_c10d_allgather(self.raw, tensor_ptr(out), tensor_ptr(input), &mut err) };
        self.check("all-gather", rc, err)
    }

    /// `out` [n] ← Σ over ranks of slice `rank` of their `input` [world·n].
    pub fn reduce_scatter(&self, out: &Tensor, input: &Tensor) -> Result<()> {
        self.check_tensor("reduce-scatter", out)?;
        self.check_tensor("reduce-scatter", input)?;
        if input.numel() != out.numel() * self.world || out.kind() != input.kind() {
            return Err(DistError::BadTensor {
                op: "reduce-scatter",
                msg: format!("input {:?} must hold {} × output {:?}", input.size(), self.world, out.size()),
            });
        }
        let mut err = std::ptr::null_mut();
        // SAFETY: as above.
        let rc = unsafe { ffi::rlvr_c10d_reduce_scatter(self.raw, tensor_ptr(out), tensor_ptr(input), &mut err) };
        self.check("reduce-scatter", rc, err)
    }

    pub fn barrier(&self) -> Result<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: raw is a live group.
        let rc = unsafe { ffi::rlvr_c10d_barrier(self.raw, &mut err) };
        self.check("barrier", rc, err)
    }

    /// Host values reduced over ranks (f64 sums of metrics, counts).
    pub fn all_reduce_f64(&self, vals: &mut [f64], op: ReduceOp) -> Result<()> {
        if vals.is_empty() {
            return Ok(());
        }
        let dev = self.comm_device();
        let t = Tensor::from_slice(vals).to_device(dev);
        self.all_reduce(&[&t], op)?;
        let back = Vec::<f64>::try_from(t.to_device(tch::Device::Cpu))
            .map_err(|e| DistError::BadTensor { op: "all-reduce", msg: e.to_string() })?;
        vals.copy_from_slice(&back);
        Ok(())
    }

    /// Every rank's bytes, in rank order (lengths may differ).
    pub fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let dev = self.comm_device();
        let len = Tensor::from_slice(&[bytes.len() as i64]).to_device(dev);
        let lens = Tensor::zeros([self.world as i64], (Kind::Int64, dev));
        self.all_gather(&lens, &len)?;
        let lens = Vec::<i64>::try_from(lens.to_device(tch::Device::Cpu))
            .map_err(|e| DistError::BadTensor { op: "all-gather", msg: e.to_string() })?;
        let max = lens.iter().copied().max().unwrap_or(0).max(1);
        let mut padded = bytes.to_vec();
        padded.resize(max as usize, 0);
        let input = Tensor::from_slice(&padded).to_device(dev);
        let out = Tensor::zeros([max * self.world as i64], (Kind::Uint8, dev));
        self.all_gather(&out, &input)?;
        let all = Vec::<u8>::try_from(out.to_device(tch::Device::Cpu))
            .map_err(|e| DistError::BadTensor { op: "all-gather", msg: e.to_string() })?;
        Ok(lens
            .iter()
            .enumerate()
            .map(|(r, &n)| all[r * max as usize..r * max as usize + n as usize].to_vec())
            .collect())
    }

    /// Where host-side values are staged for this backend (NCCL moves only CUDA tensors).
    fn comm_device(&self) -> tch::Device {
        match self.backend {
            Backend::Gloo => tch::Device::Cpu,
            Backend::Nccl => tch::Device::Cuda(self.local_rank),
        }
    }
}

/// Joins the job the environment describes, if any: `Ok(None)` for a single process. `device` is
/// what the config asks for; a CUDA device becomes `cuda:LOCAL_RANK` (one GPU per process) with
/// NCCL, the CPU uses Gloo. Returns the group and the device this rank computes on.
pub fn join_from_env(device: tch::Device, timeout: Duration) -> Result<Option<(ProcessGroup, tch::Device)>> {
    let Some(mut launch) = Launch::from_env()? else { return Ok(None) };
    let device = match device {
        tch::Device::Cuda(_) => {
            // One GPU per process: cuda:LOCAL_RANK, or the GPU this task was given when the
            // scheduler shows it only its own (Slurm --gpus-per-task, CUDA_VISIBLE_DEVICES).
            let n = tch::Cuda::device_count().max(1) as usize;
            launch.local_rank %= n;
            tch::Device::Cuda(launch.local_rank)
        }
        d => d,
    };
    let pg = ProcessGroup::init(&launch, Backend::for_device(device), timeout)?;
    tracing::info!(
        "data-parallel: rank {} of {} ({}, {:?}), rendezvous at {}:{}",
        pg.rank(),
        pg.world(),
        pg.backend().name(),
        launch.launcher,
        launch.master_addr,
        launch.master_port
    );
    Ok(Some((pg, device)))
}

/// Every rank learns whether any rank failed: `res` comes back unchanged where it failed, and as
/// an error naming the failed ranks' count elsewhere (one small all-reduce; call it on every rank
/// at the same point, after work that only some ranks do, such as rank 0's file I/O).
pub fn agree<T, E: std::fmt::Display>(
    pg: &ProcessGroup,
    what: &str,
    res: std::result::Result<T, E>,
) -> std::result::Result<T, String> {
    let mut failed = [if res.is_err() { 1.0 } else { 0.0 }];
    if let Err(e) = pg.all_reduce_f64(&mut failed, ReduceOp::Sum) {
        return Err(match res {
            Err(own) => own.to_string(),
            Ok(_) => e.to_string(),
        });
    }
    match res {
        Err(e) => Err(e.to_string()),
        Ok(v) if failed[0] == 0.0 => Ok(v),
        Ok(_) => Err(format!(
            "{what} failed on {} of {} ranks (their logs say why); stopping rank {} too",
            failed[0] as usize,
            pg.world(),
            pg.rank()
        )),
    }
}

/// Makes every rank's tensors equal to rank 0's (the initial weights), in a fixed (name) order.
pub fn broadcast_named(pg: &ProcessGroup, vars: &[(String, Tensor)]) -> Result<()> {
    let mut vars: Vec<&(String, Tensor)> = vars.iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (_, t) in vars {
            // Broadcast needs a contiguous tensor; parameters are.
            pg.broadcast(t, 0)?;
        }
        Ok(())
    })
}

/// The default collective timeout (`RLVR_DIST_TIMEOUT_S` overrides): long enough for a
/// paper-scale rollout phase between two collectives.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Peak (allocated, reserved) bytes of libtorch's CUDA caching allocator on `device` since the
/// last reset (`reset` starts a new window). An error in builds without the `cuda` feature.
pub fn cuda_memory_peaks(device: usize, reset: bool) -> Result<(u64, u64)> {
    let mut out = [0i64; 2];
    let mut err = std::ptr::null_mut();
    // SAFETY: out has room for the two values.
    let rc = unsafe { ffi::rlvr_cuda_memory_peaks(device as c_int, out.as_mut_ptr(), reset as c_int, &mut err) };
    if rc != 0 {
        return Err(DistError::Launch(take_err(err)));
    }
    Ok((out[0] as u64, out[1] as u64))
}

/// The timeout for collectives: `RLVR_DIST_TIMEOUT_S` when set, else `default`.
pub fn timeout_from_env(default: Duration) -> Result<Duration> {
    match var("RLVR_DIST_TIMEOUT_S") {
        Some(v) => {
            let s: f64 = v.trim().parse().map_err(|_| DistError::Env {
                var: "RLVR_DIST_TIMEOUT_S",
                value: v.clone(),
                msg: "not a number of seconds".into(),
            })?;
            if !(s > 0.0 && s.is_finite()) {
                return Err(DistError::Env { var: "RLVR_DIST_TIMEOUT_S", value: v, msg: "must be positive".into() });
            }
            Ok(Duration::from_secs_f64(s))
        }
        None => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&'static str, &str)]) -> Result<Option<Launch>> {
        let m: HashMap<&'static str, String> = vars.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Launch::from_lookup(&|k| m.get(k).cloned())
    }

    #[test]
    fn torchrun_environment() {
        let l = launch(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29511"),
            ("TORCHELASTIC_RUN_ID", "none"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((l.rank, l.world, l.local_rank, l.master_port), (1, 2, 1, 29511));
        assert!(l.agent_store);
        assert_eq!(l.launcher, Launcher::Torchrun);
        assert_eq!(l.prefix, "rlvr-decomp/attempt-2");
    }

    #[test]
    fn slurm_environment_and_errors() {
        let l = launch(&[
            ("SLURM_PROCID", "3"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_STEP_NUM_TASKS", "8"),
            ("SLURM_LOCALID", "3"),
            ("MASTER_ADDR", "n1"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((l.rank, l.world, l.local_rank, l.master_port, l.agent_store), (3, 8, 3, 29500, false));
        assert_eq!(l.launcher, Launcher::Slurm);
        // The batch script of an 8-task allocation is a step of one task: a single process.
        assert!(launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "8"), ("SLURM_STEP_NUM_TASKS", "1")])
            .unwrap()
            .is_none());
        assert!(launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "8")]).unwrap().is_none());
        let e = launch(&[("SLURM_PROCID", "0"), ("SLURM_STEP_NUM_TASKS", "2")]).unwrap_err().to_string();
        assert!(e.contains("scontrol show hostnames"), "{e}");
        assert!(launch(&[]).unwrap().is_none());
        assert!(launch(&[("RANK", "0"), ("WORLD_SIZE", "1")]).unwrap().is_none());
        let e = launch(&[("RANK", "2"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "x")]).unwrap_err().to_string();
        assert!(e.contains("outside a world of 2"), "{e}");
        let e = launch(&[("RANK", "x"), ("WORLD_SIZE", "2")]).unwrap_err().to_string();
        assert!(e.contains("RANK=\"x\""), "{e}");
        let e = launch(&[("WORLD_SIZE", "2")]).unwrap_err().to_string();
        assert!(e.contains("RANK is not"), "{e}");
    }
}
