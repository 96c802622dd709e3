// Per-operator profiling of libtorch work through libtorch's own profiler (Kineto), which tch does
// not bind: `crate::model::op_profile`. Built by build.rs on every build (CPU and CUDA).
//
// rlvr_profiler_start enables the profiler on the calling thread (host ops; with `cuda`, CUDA
// kernels and copies too); rlvr_profiler_stop disables it, saves the Chrome trace to `trace` and
// writes one tab-separated line per event to `events`:
//   name  device(0 host, 1 CUDA)  thread  start_ns  duration_ns
// Errors come back as text in `err`.

#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstring>
#include <exception>
#include <fstream>
#include <set>
#include <string>

namespace {
void set_err(char* err, size_t n, const std::string& msg) {
  if (err && n > 0) {
    std::strncpy(err, msg.c_str(), n - 1);
    err[n - 1] = '\0';
  }
}

std::set<torch::profiler::impl::ActivityType> activities(int cuda) {
  std::set<torch::profiler::impl::ActivityType> a{torch::profiler::impl::ActivityType::CPU};
  if (cuda) {
    a.insert(torch::profiler::impl::ActivityType::CUDA);
  }
  return a;
}
}  // namespace

extern "C" {

int rlvr_profiler_start(int cuda, char* err, size_t n) {
  try {
    torch::profiler::impl::ProfilerConfig cfg(torch::profiler::impl::ProfilerState::KINETO);
    torch::autograd::profiler::prepareProfiler(cfg, activities(cuda));
    torch::autograd::profiler::enableProfiler(cfg, activities(cuda));
    return 0;
  } catch (const std::exception& e) {
    set_err(err, n, e.what());
    return 1;
  }
}

int rlvr_profiler_stop(const char* trace, const char* events, char* err, size_t n) {
  try {
    auto result = torch::autograd::profiler::disableProfiler();
    if (!result) {
      set_err(err, n, "the profiler was not running");
      return 1;
    }
    std::ofstream out(events);
    if (!out) {
      set_err(err, n, std::string("cannot write ") + events);
      return 1;
    }
    for (const auto& e : result->events()) {
      std::string name = e.name();
      for (auto& c : name) {
        if (c == '\t' || c == '\n' || c == '\r') c = ' ';
      }
      out << name << '\t' << (e.deviceType() == c10::DeviceType::CUDA ? 1 : 0) << '\t' << e.startThreadId()
          << '\t' << e.startNs() << '\t' << e.durationNs() << '\n';
    }
    out.close();
    if (!out) {
      set_err(err, n, std::string("writing ") + events + " failed");
      return 1;
    }
    if (trace && trace[0]) {
      result->save(trace);
    }
    return 0;
  } catch (const std::exception& e) {
    set_err(err, n, e.what());
    return 1;
  }
}
}
