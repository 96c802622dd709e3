// A C interface to libtorch's distributed engine (c10d) for the Rust crate: a TCPStore for
// rendezvous, a Gloo (CPU tensors) or NCCL (CUDA tensors, built with RLVR_WITH_NCCL) backend,
// and the collectives the data-parallel trainer uses, on tensors owned by tch.
//
// Every entry point catches C++ exceptions and returns them as a message (caller frees it with
// rlvr_c10d_free_str): a c10d timeout or a peer that died surfaces as an error in Rust, never as
// std::terminate. Tensors cross as `at::Tensor*`, which is what tch's `Tensor::as_ptr` hands out.

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef RLVR_WITH_NCCL
#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

char* dup(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (p != nullptr) {
    std::memcpy(p, s.data(), s.size());
    p[s.size()] = '\0';
  }
  return p;
}

// Runs f; on an exception stores its message in *err and returns -1.
template <typename F>
int guarded(char** err, F&& f) {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    *err = dup(e.what_without_backtrace());
  } catch (const std::exception& e) {
    *err = dup(e.what());
  } catch (...) {
    *err = dup("unknown C++ exception");
  }
  return -1;
}

void wait(Group* g, const c10::intrusive_ptr<c10d::Work>& work) {
  if (!work->wait(g->timeout)) {
    throw std::runtime_error("collective did not complete within the timeout");
  }
}

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 0:
      return c10d::ReduceOp::SUM;
    case 1:
      return c10d::ReduceOp::MAX;
    case 2:
      return c10d::ReduceOp::MIN;
    default:
      throw std::invalid_argument("unknown reduce op " + std::to_string(op));
  }
}

} // namespace

extern "C" {

void rlvr_c10d_free_str(char* s) {
  std::free(s);
}

// backend: "gloo" or "nccl"; is_server: this process hosts the TCPStore (rank 0 unless an
// agent such as torchrun already hosts it); prefix namespaces the keys in a shared store;
// cuda_device: the GPU an NCCL group binds to (ignored for Gloo).
void* rlvr_c10d_new(
    const char* backend,
    const char* host,
    int port,
    int rank,
    int world,
    int is_server,
    const char* prefix,
    int64_t timeout_ms,
    int cuda_device,
    char** err) {
  Group* out = nullptr;
  guarded(err, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = is_server != 0;
    opts.numWorkers = is_server != 0 ? std::optional<std::size_t>(world) : std::nullopt;
    opts.waitWorkers = false;
    opts.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    std::string name(backend);
    c10::intrusive_ptr<c10d::Backend> be;
    if (name == "gloo") {
      auto o = c10d::ProcessGroupGloo::Options::create_default(timeout);
      be = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, o);
    } else if (name == "nccl") {
#ifdef RLVR_WITH_NCCL
      // Bind the group to this rank's GPU (else NCCL guesses rank % device_count for barriers).
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(cuda_device));
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      be = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, o);
      be->setBoundDeviceId(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(cuda_device)));
#else
      throw std::invalid_argument("this build has no NCCL backend (build with --features cuda)");
#endif
    } else {
      throw std::invalid_argument("unknown backend '" + name + "' (expected gloo or nccl)");
    }
    out = new Group{store, be, timeout};
  });
  return out;
}

void rlvr_c10d_free(void* g) {
  delete static_cast<Group*>(g);
}

int rlvr_c10d_allreduce(void* gp, at::Tensor** ts, size_t n, int op, char** err) {
  return guarded(err, [&] {
    auto* g = static_cast<Group*>(gp);
    std::vector<at::Tensor> v;
    for (size_t i = 0; i < n; ++i) v.push_back(*ts[i]);
    c10d::AllreduceOptions o;
    o.reduceOp = reduce_op(op);
    o.timeout = g->timeout;
    wait(g, g->backend->allreduce(v, o));
  });
}

int rlvr_c10d_broadcast(void* gp, at::Tensor* t, int root, char** err) {
  return guarded(err, [&] {
    auto* g = static_cast<Group*>(gp);
    std::vector<at::Tensor> v{*t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.timeout = g->timeout;
    wait(g, g->backend->broadcast(v, o));
  });
}

// out: [world * n] ← concatenation of every rank's in: [n].
int rlvr_c10d_allgather(void* gp, at::Tensor* out, at::Tensor* in, char** err) {
  return guarded(err, [&] {
    auto* g = static_cast<Group*>(gp);
    c10d::AllgatherOptions o;
    o.timeout = g->timeout;
    wait(g, g->backend->_allgather_base(*out, *in, o));
  });
}

// out: [n] ← sum over ranks of their in: [world * n], slice `rank`.
int rlvr_c10d_reduce_scatter(void* gp, at::Tensor* out, at::Tensor* in, char** err) {
  return guarded(err, [&] {
    auto* g = static_cast<Group*>(gp);
    c10d::ReduceScatterOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    o.timeout = g->timeout;
    wait(g, g->backend->_reduce_scatter_base(*out, *in, o));
  });
}

int rlvr_c10d_barrier(void* gp, char** err) {
  return guarded(err, [&] {
    auto* g = static_cast<Group*>(gp);
    c10d::BarrierOptions o;
    o.timeout = g->timeout;
    wait(g, g->backend->barrier(o));
  });
}

// CUDA caching-allocator statistics of `device` (what torch.cuda.max_memory_allocated reports):
// out[0] peak allocated bytes, out[1] peak reserved bytes since the last reset. Returns -1 in a
// build without CUDA.
int rlvr_cuda_memory_peaks(int device, int64_t* out, int reset, char** err) {
#ifdef RLVR_WITH_NCCL
  return guarded(err, [&] {
    auto idx = static_cast<c10::DeviceIndex>(device);
    auto st = c10::cuda::CUDACachingAllocator::getDeviceStats(idx);
    auto agg = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    out[0] = st.allocated_bytes[agg].peak;
    out[1] = st.reserved_bytes[agg].peak;
    if (reset != 0) c10::cuda::CUDACachingAllocator::resetPeakStats(idx);
  });
#else
  (void)device;
  (void)out;
  (void)reset;
  *err = dup("this build has no CUDA (build with --features cuda)");
  return -1;
#endif
}

} // extern "C"
