//! CUDA-graph capture and replay of a tch workload, through a small C++ shim over libtorch's
//! `at::cuda::CUDAGraph` (`src/model/shim/cuda_graph.cpp`, built with `--features cuda`; tch has
//! no binding). Used by [`super::static_decode`] to launch a whole decode step at once.
//!
//! [`CudaGraph::capture`] runs the workload once eagerly on a side stream (warm-up: the outputs
//! of that run are the first step's), then records it; [`CudaGraph::replay`] relaunches the
//! recorded kernels on the same memory. The workload must only read and write tensors that
//! outlive the graph, in place, with fixed shapes.

use super::{ModelError, Result};

#[cfg(feature = "cuda")]
mod ffi {
    use std::os::raw::{c_char, c_int, c_void};
    extern "C" {
        pub fn rlvr_graph_new(err: *mut c_char, n: usize) -> *mut c_void;
        pub fn rlvr_graph_enter(g: *mut c_void, device: c_int, err: *mut c_char, n: usize) -> c_int;
        pub fn rlvr_graph_begin(g: *mut c_void, share: *mut c_void, err: *mut c_char, n: usize) -> c_int;
        pub fn rlvr_graph_end(g: *mut c_void, err: *mut c_char, n: usize) -> c_int;
        pub fn rlvr_graph_replay(g: *mut c_void, err: *mut c_char, n: usize) -> c_int;
        pub fn rlvr_graph_free(g: *mut c_void);
    }
}

/// A captured CUDA graph.
pub struct CudaGraph {
    #[cfg(feature = "cuda")]
    ptr: *mut std::os::raw::c_void,
}

#[cfg(feature = "cuda")]
fn check(what: &str, rc: std::os::raw::c_int, err: &[u8]) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    let end = err.iter().position(|&c| c == 0).unwrap_or(err.len());
    let msg = String::from_utf8_lossy(&err[..end]);
    Err(ModelError::BadInput(format!("CUDA graph {what} failed: {}", msg.lines().next().unwrap_or(""))))
}

impl CudaGraph {
    /// Warms `work` up on a side stream of `device`, then captures it — in the memory pool of
    /// `share` when given (graphs that never run at once and keep their results in tensors made
    /// outside the capture can share one pool: the decode step's windows do).
    #[cfg(feature = "cuda")]
    pub fn capture(device: tch::Device, share: Option<&CudaGraph>, mut work: impl FnMut()) -> Result<CudaGraph> {
        let tch::Device::Cuda(index) = device else {
            return Err(ModelError::BadInput("a CUDA graph needs a CUDA device".into()));
        };
        let mut err = vec![0u8; 512];
        let e = err.as_mut_ptr().cast();
        // SAFETY: the shim's functions take the pointer it returned and a writable error buffer.
        unsafe {
            let ptr = ffi::rlvr_graph_new(e, err.len());
            if ptr.is_null() {
                check("creation", 1, &err)?;
            }
            let g = CudaGraph { ptr };
            check("stream", ffi::rlvr_graph_enter(g.ptr, index as i32, e, err.len()), &err)?;
            work(); // warm-up (and this step's outputs)
            let share = share.map_or(std::ptr::null_mut(), |s| s.ptr);
            check("capture", ffi::rlvr_graph_begin(g.ptr, share, e, err.len()), &err)?;
            work(); // recorded, not run
            check("capture", ffi::rlvr_graph_end(g.ptr, e, err.len()), &err)?;
            Ok(g)
        }
    }

    #[cfg(not(feature = "cuda"))]
    pub fn capture(_device: tch::Device, _share: Option<&CudaGraph>, _work: impl FnMut()) -> Result<CudaGraph> {
        Err(ModelError::BadInput("CUDA-graph decoding needs a build with `--features cuda` (make build-cuda)".into()))
    }

    /// Relaunches the captured work.
    pub fn replay(&self) -> Result<()> {
        #[cfg(feature = "cuda")]
        {
            let mut err = vec![0u8; 512];
            // SAFETY: `ptr` is a live graph from the shim.
            let rc = unsafe { ffi::rlvr_graph_replay(self.ptr, err.as_mut_ptr().cast(), err.len()) };
            check("replay", rc, &err)
        }
        #[cfg(not(feature = "cuda"))]
        Err(ModelError::BadInput("CUDA-graph decoding needs a build with `--features cuda`".into()))
    }
}

#[cfg(feature = "cuda")]
impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from rlvr_graph_new and is freed once.
        unsafe { ffi::rlvr_graph_free(self.ptr) }
    }
}
