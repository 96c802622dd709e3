// CUDA-graph capture and replay of a libtorch workload (tch has no binding for
// at::cuda::CUDAGraph): `crate::model::cuda_graph`. Built by build.rs with the `cuda` feature only.
//
// Capture runs on a side stream from libtorch's pool (capture cannot use the legacy default
// stream): rlvr_graph_begin makes it the current stream and warms the workload up on it first
// (cuBLAS handles and workspaces must exist before capture), rlvr_graph_end ends the capture,
// restores the previous stream and synchronizes. Errors come back as text in `err`. Only
// functions exported by libc10_cuda / libtorch_cuda are called (no inline CUDA runtime calls, so
// the binary needs no libcudart of its own).

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <cstring>
#include <exception>
#include <optional>
#include <string>

namespace {
struct Graph {
  at::cuda::CUDAGraph graph;
  // The stream that was current before rlvr_graph_enter (restored by rlvr_graph_end).
  std::optional<c10::cuda::CUDAStream> previous;
};

void set_err(char* err, size_t n, const std::string& msg) {
  if (err && n > 0) {
    std::strncpy(err, msg.c_str(), n - 1);
    err[n - 1] = '\0';
  }
}
void restore(Graph* g) {
  if (g->previous) {
    c10::cuda::setCurrentCUDAStream(*g->previous);
    g->previous.reset();
  }
}
}  // namespace

extern "C" {

void* rlvr_graph_new(char* err, size_t n) {
  try {
    return new Graph();
  } catch (const std::exception& e) {
    set_err(err, n, e.what());
    return nullptr;
  }
}

// Makes a pool stream of `device` current (for the warm-up and the capture).
int rlvr_graph_enter(void* g, int device, char* err, size_t n) {
  try {
    auto* gr = static_cast<Graph*>(g);
    auto index = static_cast<c10::DeviceIndex>(device);
    gr->previous = c10::cuda::getCurrentCUDAStream(index);
    c10::cuda::setCurrentCUDAStream(c10::cuda::getStreamFromPool(false, index));
    return 0;
  } catch (const std::exception& e) {
    set_err(err, n, e.what());
    return 1;
  }
}

// `share`: null, or a captured graph whose memory pool this capture shares (safe when the graphs
// never run concurrently and keep their outputs in tensors allocated outside the capture).
int rlvr_graph_begin(void* g, void* share, char* err, size_t n) {
  try {
    auto* gr = static_cast<Graph*>(g);
    c10::cuda::device_synchronize();  // the warm-up is done
    if (share) {
      gr->graph.capture_begin(static_cast<Graph*>(share)->graph.pool());
    } else {
      gr->graph.capture_begin();
    }
    return 0;
  } catch (const std::exception& e) {
    restore(static_cast<Graph*>(g));
    set_err(err, n, e.what());
    return 1;
  }
}

int rlvr_graph_end(void* g, char* err, size_t n) {
  try {
    auto* gr = static_cast<Graph*>(g);
    gr->graph.capture_end();
    c10::cuda::device_synchronize();
    restore(gr);
    return 0;
  } catch (const std::exception& e) {
    restore(static_cast<Graph*>(g));
    set_err(err, n, e.what());
    return 1;
  }
}

int rlvr_graph_replay(void* g, char* err, size_t n) {
  try {
    static_cast<Graph*>(g)->graph.replay();
    return 0;
  } catch (const std::exception& e) {
    set_err(err, n, e.what());
    return 1;
  }
}

void rlvr_graph_free(void* g) { delete static_cast<Graph*>(g); }
}
