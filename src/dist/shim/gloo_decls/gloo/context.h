// Declaration-only stand-in (see ../README.md). `setTimeout` is named by an inline method of
// ProcessGroupGloo that the shim never calls (that class's vtable lives in libtorch).
#pragma once
#include <chrono>
namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
}
