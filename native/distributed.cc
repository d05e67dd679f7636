// torch.distributed's c10d from libtorch: TCPStore rendezvous and a Gloo (CPU) or NCCL (CUDA
// builds) process group, with the few collectives data-parallel training needs. We write no
// collective algorithm of our own.
#include "common.h"

#include <c10/core/GradMode.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef DDPO_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <memory>

namespace ddpo {

namespace {
c10::intrusive_ptr<c10d::Store> rendezvousStore;
c10::intrusive_ptr<c10d::ProcessGroup> group;
int worldSize = 1;
int rank = 0;
std::chrono::milliseconds opTimeout(60000);

c10d::ProcessGroup& requireGroup() {
  if (!group) throw std::runtime_error("the process group is not initialised: call initProcessGroup first");
  return *group;
}

void waitFor(const c10::intrusive_ptr<c10d::Work>& work, const char* what) {
  try {
    work->wait(opTimeout);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(what) + " failed on rank " + std::to_string(rank) + " of " +
                             std::to_string(worldSize) + " (a peer died or timed out?): " + e.what());
  }
}

c10d::ReduceOp reduceOp(const std::string& name) {
  if (name == "sum" || name == "avg") return c10d::ReduceOp::SUM;
  if (name == "max") return c10d::ReduceOp::MAX;
  if (name == "min") return c10d::ReduceOp::MIN;
  throw std::invalid_argument("unknown reduce op \"" + name + "\" (use sum, avg, max or min)");
}
}  // namespace

// initProcessGroup(backend, masterAddr, masterPort, rank, worldSize, timeoutMs)
DDPO_OP(initProcessGroup) {
  std::string backend = info[0].As<Napi::String>().Utf8Value();
  std::string addr = info[1].As<Napi::String>().Utf8Value();
  int port = static_cast<int>(I(info, 2));
  rank = static_cast<int>(I(info, 3));
  worldSize = static_cast<int>(I(info, 4));
  opTimeout = std::chrono::milliseconds(I(info, 5));
  if (group) throw std::runtime_error("the process group is already initialised");
  if (rank < 0 || rank >= worldSize) throw std::invalid_argument("RANK must be in [0, WORLD_SIZE)");
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<uint16_t>(port);
  opts.isServer = rank == 0;
  opts.numWorkers = static_cast<size_t>(worldSize);
  opts.waitWorkers = true;
  opts.timeout = opTimeout;
  try {
    rendezvousStore = c10::make_intrusive<c10d::TCPStore>(addr, opts);
  } catch (const std::exception& e) {
    throw std::runtime_error("rendezvous at " + addr + ":" + std::to_string(port) + " failed for rank " +
                             std::to_string(rank) + " within " + std::to_string(opTimeout.count()) +
                             " ms (check MASTER_ADDR/MASTER_PORT and that every rank started): " + e.what());
  }
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("ddpo", rendezvousStore);
  if (backend == "gloo") {
    auto options = c10d::ProcessGroupGloo::Options::create(opTimeout);
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(addr == "localhost" ? "127.0.0.1" : addr));
    group = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, worldSize, options);
  } else if (backend == "nccl") {
#ifdef DDPO_WITH_NCCL
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = opTimeout;
    group = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank, worldSize, options);
#else
    throw std::runtime_error("the nccl backend needs a CUDA libtorch: rebuild with LIBTORCH pointing at one");
#endif
  } else {
    throw std::invalid_argument("unknown backend \"" + backend + "\" (use gloo or nccl)");
  }
  return env.Undefined();
}

DDPO_OP(destroyProcessGroup) {
  group.reset();
  rendezvousStore.reset();
  worldSize = 1;
  rank = 0;
  return env.Undefined();
}

DDPO_OP(processGroupInfo) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("initialised", Napi::Boolean::New(env, static_cast<bool>(group)));
  o.Set("rank", Napi::Number::New(env, rank));
  o.Set("worldSize", Napi::Number::New(env, worldSize));
  return o;
}

// allReduce(handles[], op): in place on each tensor; "avg" divides by the world size.
DDPO_OP(allReduce) {
  c10::NoGradGuard noGrad;
  std::vector<at::Tensor> ts = Tensors(info, 0);
  std::string op = info[1].As<Napi::String>().Utf8Value();
  c10d::AllreduceOptions o;
  o.reduceOp = reduceOp(op);
  o.timeout = opTimeout;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (at::Tensor& t : ts) {
    std::vector<at::Tensor> one{t};
    works.push_back(requireGroup().allreduce(one, o));
  }
  for (auto& w : works) waitFor(w, "allReduce");
  if (op == "avg") for (at::Tensor& t : ts) t.div_(worldSize);
  return env.Undefined();
}

DDPO_OP(broadcast) {
  c10::NoGradGuard noGrad;
  std::vector<at::Tensor> ts = Tensors(info, 0);
  c10d::BroadcastOptions o;
  o.rootRank = static_cast<int64_t>(I(info, 1));
  o.timeout = opTimeout;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (at::Tensor& t : ts) {
    std::vector<at::Tensor> one{t};
    works.push_back(requireGroup().broadcast(one, o));
  }
  for (auto& w : works) waitFor(w, "broadcast");
  return env.Undefined();
}

DDPO_OP(barrier) {
  c10d::BarrierOptions o;
  o.timeout = opTimeout;
  waitFor(requireGroup().barrier(o), "barrier");
  return env.Undefined();
}

// Averages the gradients of `params` across ranks in buckets of about bucketBytes (flatten, one
// all-reduce per bucket, all buckets in flight together, copy back): fewer, larger messages than
// one per parameter, as DistributedDataParallel's reducer does. Parameters without a gradient get
// a zero gradient first so every rank reduces the same layout.
DDPO_OP(allReduceGradients) {
  c10::NoGradGuard noGrad;
  std::vector<at::Tensor> params = Tensors(info, 0);
  int64_t bucketBytes = I(info, 1);
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  o.timeout = opTimeout;
  std::vector<std::vector<at::Tensor>> buckets;
  std::vector<at::Tensor> current;
  int64_t currentBytes = 0;
  for (at::Tensor& p : params) {
    if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    current.push_back(p.grad());
    currentBytes += static_cast<int64_t>(p.grad().nbytes());
    if (currentBytes >= bucketBytes) {
      buckets.push_back(std::move(current));
      current.clear();
      currentBytes = 0;
    }
  }
  if (!current.empty()) buckets.push_back(std::move(current));
  std::vector<at::Tensor> flats;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (auto& bucket : buckets) {
    std::vector<at::Tensor> pieces;
    for (auto& g : bucket) pieces.push_back(g.reshape({-1}));
    std::vector<at::Tensor> flat{at::cat(pieces)};
    flats.push_back(flat[0]);
    works.push_back(requireGroup().allreduce(flat, o));
  }
  for (size_t b = 0; b < buckets.size(); b++) {
    waitFor(works[b], "gradient all-reduce");
    at::Tensor flat = flats[b].div_(worldSize);
    int64_t offset = 0;
    for (auto& g : buckets[b]) {
      int64_t n = g.numel();
      g.copy_(flat.narrow(0, offset, n).view(g.sizes()));
      offset += n;
    }
  }
  return Napi::Number::New(env, static_cast<double>(buckets.size()));
}

void registerDistributed(Napi::Env env, Napi::Object exports) {
#define EXPORT(fn) exports.Set(#fn, Napi::Function::New(env, fn, #fn))
  EXPORT(initProcessGroup);
  EXPORT(destroyProcessGroup);
  EXPORT(processGroupInfo);
  EXPORT(allReduce);
  EXPORT(broadcast);
  EXPORT(barrier);
  EXPORT(allReduceGradients);
#undef EXPORT
}

}  // namespace ddpo
