//! Where a decode step's time goes, per operator: libtorch's own profiler (Kineto) around chosen
//! steps of the tch decode loops (`generate --profile-ops`), through a small C++ shim
//! (`src/model/shim/profiler.cpp`; tch has no binding). Host ops are recorded on every device; on
//! CUDA every kernel and copy too, so the same command gives per-op CUDA timings of a decode step
//! on a GPU machine (`scripts/gpu_check_sample.sh`) and per-op host timings here.
//!
//! [`summarize`] turns the events into a table: per host op its calls and *self* time (time
//! inside the op less the time in the ops it called, so nested aten calls are not counted twice),
//! and per device kernel its calls and time; both per profiled step.

use super::{ModelError, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::raw::{c_char, c_int};
use std::path::Path;

extern "C" {
    fn rlvr_profiler_start(cuda: c_int, err: *mut c_char, n: usize) -> c_int;
    fn rlvr_profiler_stop(trace: *const c_char, events: *const c_char, err: *mut c_char, n: usize) -> c_int;
}

fn shim_error(what: &str, err: &[u8]) -> ModelError {
    let end = err.iter().position(|&c| c == 0).unwrap_or(err.len());
    ModelError::Torch(format!("profiler {what}: {}", String::from_utf8_lossy(&err[..end]).lines().next().unwrap_or("")))
}

/// One recorded event: a host op (aten call, on the thread that made it) or a device activity.
#[derive(Debug, Clone, PartialEq)]
pub struct OpEvent {
    pub name: String,
    /// A CUDA kernel, copy or memset (false: a host op).
    pub device: bool,
    pub thread: u64,
    pub start_ns: u64,
    pub dur_ns: u64,
}

/// The profiler, recording on this thread until [`Recording::stop`] (or drop, which discards).
pub struct Recording {
    active: bool,
}

/// Whether a [`Recording`] is live: libtorch has one profiler per process.
static RECORDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts recording host ops (and, with `cuda`, CUDA activity) on the calling thread. One
/// recording per process at a time: a second is refused until the first stops.
pub fn start(cuda: bool) -> Result<Recording> {
    use std::sync::atomic::Ordering;
    if RECORDING.swap(true, Ordering::SeqCst) {
        return Err(ModelError::BadInput("a profiler recording is already running in this process".into()));
    }
    let mut err = vec![0u8; 512];
    // SAFETY: the shim takes a writable buffer of the given length.
    if unsafe { rlvr_profiler_start(cuda as c_int, err.as_mut_ptr().cast(), err.len()) } != 0 {
        RECORDING.store(false, Ordering::SeqCst);
        return Err(shim_error("start", &err));
    }
    Ok(Recording { active: true })
}

impl Recording {
    /// Stops recording; writes the Chrome trace to `trace` (open it in Perfetto or
    /// chrome://tracing) and returns the events.
    pub fn stop(mut self, trace: &Path) -> Result<Vec<OpEvent>> {
        self.active = false;
        // The shim disables the profiler first thing, whatever happens after.
        let _release = Release;
        let tmp =
            tempfile::NamedTempFile::new().map_err(|e| ModelError::Torch(format!("profiler events file: {e}")))?;
        let c = |p: &Path| {
            CString::new(p.to_string_lossy().as_bytes())
                .map_err(|_| ModelError::BadInput(format!("path {}", p.display())))
        };
        let (trace_c, events_c) = (c(trace)?, c(tmp.path())?);
        let mut err = vec![0u8; 512];
        // SAFETY: NUL-terminated paths and a writable error buffer.
        let rc = unsafe { rlvr_profiler_stop(trace_c.as_ptr(), events_c.as_ptr(), err.as_mut_ptr().cast(), err.len()) };
        if rc != 0 {
            return Err(shim_error("stop", &err));
        }
        let text =
            std::fs::read_to_string(tmp.path()).map_err(|e| ModelError::Torch(format!("profiler events: {e}")))?;
        text.lines()
            .enumerate()
            .map(|(i, l)| {
                parse_event(l).ok_or_else(|| ModelError::Torch(format!("profiler event line {}: {l:?}", i + 1)))
            })
            .collect()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if self.active {
            let _release = Release;
            let mut err = vec![0u8; 512];
            // SAFETY: empty paths: nothing is written; the profiler is disabled.
            unsafe { rlvr_profiler_stop(c"".as_ptr(), c"/dev/null".as_ptr(), err.as_mut_ptr().cast(), err.len()) };
        }
    }
}

/// Marks the process's recording as ended when dropped.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        RECORDING.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Profiles decode steps `first..end` of one generation: [`StepWindow::hook`] is the decode loop's
/// [`super::generate::StepHook`] (recording starts before step `first` and stops before step `end`
/// or when the loop ends sooner), with the device synchronised at both ends so the window holds
/// exactly those steps' work.
pub struct StepWindow {
    first: usize,
    end: usize,
    device: tch::Device,
    trace: std::path::PathBuf,
    recording: Option<Recording>,
    events: Option<Vec<OpEvent>>,
    steps: usize,
}

impl StepWindow {
    /// `1 ≤ first < end`; the Chrome trace goes to `trace`.
    pub fn new(first: usize, end: usize, device: tch::Device, trace: &Path) -> StepWindow {
        StepWindow { first, end, device, trace: trace.to_path_buf(), recording: None, events: None, steps: 0 }
    }

    fn sync(&self) {
        if let tch::Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
    }

    /// Before decode step n (`Some(n)`) and at the end of the loop (`None`).
    pub fn hook(&mut self, n: Option<usize>) -> Result<()> {
        if n == Some(self.first) {
            self.sync();
            self.recording = Some(start(self.device.is_cuda())?);
        }
        if self.recording.is_some() && n.is_some_and(|n| n < self.end) {
            self.steps += 1;
        } else if let Some(r) = self.recording.take() {
            self.sync();
            self.events = Some(r.stop(&self.trace)?);
        }
        Ok(())
    }

    /// The profiled steps' summary, or `None` when step `first` never ran.
    pub fn finish(self) -> Option<OpSummary> {
        self.events.map(|e| summarize(&e, self.steps))
    }
}

fn parse_event(line: &str) -> Option<OpEvent> {
    let mut f = line.rsplitn(5, '\t');
    let dur_ns = f.next()?.parse().ok()?;
    let start_ns = f.next()?.parse().ok()?;
    let thread = f.next()?.parse().ok()?;
    let device = f.next()? == "1";
    Some(OpEvent { name: f.next()?.to_string(), device, thread, start_ns, dur_ns })
}

/// One line of the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpRow {
    pub name: String,
    /// Calls per profiled step.
    pub calls_per_step: f64,
    /// Self time (host ops) or kernel time (device), ms per profiled step.
    pub ms_per_step: f64,
    /// Share of the host's (or the device's) total.
    pub share: f64,
}

/// Per-op time of `steps` profiled decode steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpSummary {
    pub steps: usize,
    /// Time inside top-level host ops, ms per step (the host's busy time in libtorch).
    pub host_ms_per_step: f64,
    pub host_ops: Vec<OpRow>,
    /// Kernel time, ms per step (0 without CUDA).
    pub device_ms_per_step: f64,
    pub device_ops: Vec<OpRow>,
}

/// Host ops by self time and device kernels by time, largest first.
pub fn summarize(events: &[OpEvent], steps: usize) -> OpSummary {
    let per = |x: f64| x / steps.max(1) as f64;
    // Self time: on each thread, ops nest (an aten op calls others); subtract each op's direct
    // children from it.
    let mut host: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    let mut top_level = 0u64;
    let mut by_thread: BTreeMap<u64, Vec<&OpEvent>> = BTreeMap::new();
    for e in events.iter().filter(|e| !e.device) {
        by_thread.entry(e.thread).or_default().push(e);
    }
    for evs in by_thread.values_mut() {
        evs.sort_by_key(|e| (e.start_ns, std::cmp::Reverse(e.dur_ns)));
        // (end, index into evs) of the open ops; children time per index
        let mut open: Vec<(u64, usize)> = vec![];
        let mut children = vec![0u64; evs.len()];
        for (i, e) in evs.iter().enumerate() {
            while open.last().is_some_and(|&(end, _)| end <= e.start_ns) {
                open.pop();
            }
            match open.last() {
                Some(&(_, p)) => children[p] += e.dur_ns,
                None => top_level += e.dur_ns,
            }
            open.push((e.start_ns + e.dur_ns, i));
        }
        for (i, e) in evs.iter().enumerate() {
            let h = host.entry(&e.name).or_default();
            h.0 += 1;
            h.1 += e.dur_ns.saturating_sub(children[i]);
        }
    }
    let mut device: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for e in events.iter().filter(|e| e.device) {
        let d = device.entry(&e.name).or_default();
        d.0 += 1;
        d.1 += e.dur_ns;
    }
    let rows = |m: BTreeMap<&str, (usize, u64)>| {
        let total: u64 = m.values().map(|v| v.1).sum();
        let mut rows: Vec<OpRow> = m
            .into_iter()
            .map(|(name, (calls, ns))| OpRow {
                name: name.to_string(),
                calls_per_step: per(calls as f64),
                ms_per_step: per(ns as f64 / 1e6),
                share: if total > 0 { ns as f64 / total as f64 } else { 0.0 },
            })
            .collect();
        rows.sort_by(|a, b| b.ms_per_step.total_cmp(&a.ms_per_step).then(a.name.cmp(&b.name)));
        (rows, total)
    };
    let (host_ops, _) = rows(host);
    let (device_ops, device_total) = rows(device);
    OpSummary {
        steps,
        host_ms_per_step: per(top_level as f64 / 1e6),
        host_ops,
        device_ms_per_step: per(device_total as f64 / 1e6),
        device_ops,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    /// The tests that record take turns: libtorch has one profiler per process.
    static PROFILER: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn ev(name: &str, device: bool, thread: u64, start: u64, dur: u64) -> OpEvent {
        OpEvent { name: name.into(), device, thread, start_ns: start, dur_ns: dur }
    }

    /// Self time subtracts direct children only, per thread; device kernels are summed as they are.
    #[test]
    fn self_time_of_nested_ops() {
        let events = [
            ev("aten::linear", false, 1, 0, 10_000_000),
            ev("aten::t", false, 1, 0, 1_000_000),
            ev("aten::addmm", false, 1, 2_000_000, 7_000_000),
            ev("aten::copy_", false, 1, 3_000_000, 2_000_000), // inside addmm
            ev("aten::copy_", false, 2, 0, 4_000_000),         // another thread, top level
            ev("gemm_kernel", true, 0, 0, 6_000_000),
            ev("gemm_kernel", true, 0, 9_000_000, 2_000_000),
        ];
        let s = summarize(&events, 2);
        let get = |rows: &[OpRow], n: &str| rows.iter().find(|r| r.name == n).unwrap().clone();
        assert_eq!(get(&s.host_ops, "aten::linear").ms_per_step, 1.0); // (10 - 1 - 7) / 2
        assert_eq!(get(&s.host_ops, "aten::addmm").ms_per_step, 2.5); // (7 - 2) / 2
        assert_eq!(get(&s.host_ops, "aten::copy_").ms_per_step, 3.0); // (2 + 4) / 2
        assert_eq!(get(&s.host_ops, "aten::copy_").calls_per_step, 1.0);
        assert_eq!(s.host_ms_per_step, 7.0); // (10 + 4) / 2
        assert_eq!(s.device_ops.len(), 1);
        assert_eq!((s.device_ops[0].ms_per_step, s.device_ops[0].share), (4.0, 1.0));
        assert_eq!(s.host_ops[0].name, "aten::copy_", "largest first");
        let shares: f64 = s.host_ops.iter().map(|r| r.share).sum();
        assert!((shares - 1.0).abs() < 1e-12);
    }

    /// The window records exactly the hooked steps first..end, or up to the loop's end.
    #[test]
    fn step_window_counts_the_profiled_steps() {
        let _turn = PROFILER.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let a = Tensor::randn([16, 16], (Kind::Float, Device::Cpu));
        let run = |last: usize| {
            let mut w = StepWindow::new(3, 5, Device::Cpu, &dir.path().join("t.json"));
            for n in 1..=last {
                w.hook(Some(n)).unwrap();
                let _ = a.relu();
            }
            w.hook(None).unwrap();
            w.finish()
        };
        let relu = |s: &OpSummary| s.host_ops.iter().find(|r| r.name == "aten::relu").unwrap().calls_per_step;
        let s = run(10).unwrap();
        assert_eq!((s.steps, relu(&s)), (2, 1.0)); // steps 3 and 4
        let s = run(3).unwrap();
        assert_eq!((s.steps, relu(&s)), (1, 1.0)); // the loop ended after step 3
        assert!(run(2).is_none(), "step 3 never ran");
    }

    /// The shim records real libtorch ops on this machine and writes a Chrome trace.
    #[test]
    fn records_libtorch_ops() {
        let _turn = PROFILER.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let a = Tensor::randn([64, 64], (Kind::Float, Device::Cpu));
        let rec = start(false).unwrap();
        for _ in 0..3 {
            let _ = a.matmul(&a).relu();
        }
        let events = rec.stop(&dir.path().join("trace.json")).unwrap();
        let s = summarize(&events, 3);
        let names: Vec<&str> = s.host_ops.iter().map(|r| r.name.as_str()).collect();
        assert!(names.contains(&"aten::matmul") && names.contains(&"aten::relu"), "{names:?}");
        assert_eq!(s.host_ops.iter().find(|r| r.name == "aten::relu").unwrap().calls_per_step, 1.0);
        assert!(s.device_ops.is_empty());
        let trace: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("trace.json")).unwrap()).unwrap();
        assert!(trace["traceEvents"].as_array().is_some_and(|e| !e.is_empty()));
        // One recording at a time; dropped without stop, the profiler is switched off (a new
        // recording can start).
        let first = start(false).unwrap();
        assert!(start(false).err().unwrap().to_string().contains("already running"));
        drop(first);
        start(false).unwrap().stop(&dir.path().join("again.json")).unwrap();
    }
}
