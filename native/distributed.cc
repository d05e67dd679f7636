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

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>

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

// The local address this host reaches `addr` from (the source address the kernel routes a UDP
// "connection" to it through; nothing is sent). Gloo must bind to an address of THIS machine
// that the peers can reach: MASTER_ADDR itself is only local on the master's machine.
std::string localAddressToward(const std::string& addr, int port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(addr.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 || found == nullptr) {
    throw std::runtime_error("cannot resolve MASTER_ADDR \"" + addr + "\" (give an IP address or a host name this machine resolves)");
  }
  std::string local;
  for (addrinfo* a = found; a != nullptr && local.empty(); a = a->ai_next) {
    int fd = socket(a->ai_family, SOCK_DGRAM, 0);
    if (fd < 0) continue;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0 && getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      char buf[INET6_ADDRSTRLEN] = {0};
      const void* src = ss.ss_family == AF_INET ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&ss)->sin_addr)
                                                : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr);
      if (inet_ntop(ss.ss_family, src, buf, sizeof buf) != nullptr) local = buf;
    }
    close(fd);
  }
  freeaddrinfo(found);
  if (local.empty()) throw std::runtime_error("no network route from this machine to MASTER_ADDR " + addr + " (check the address and the interfaces, or set GLOO_SOCKET_IFNAME)");
  return local;
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
    // GLOO_SOCKET_IFNAME (PyTorch's variable) names the interface; else the one routing to the master
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifname != nullptr && *ifname != '\0') {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(localAddressToward(addr, port)));
    }
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

// ---- the overlapped gradient reducer (DistributedDataParallel's Reducer, reduced to what we use) --
//
// Buckets are filled in reverse parameter order (the order backward makes gradients ready); a
// post-hook on each parameter's gradient accumulator marks it ready, and a bucket whose gradients
// are all ready is flattened and its async all-reduce launched at once, so communication runs on
// Gloo's threads while backward continues. Buckets launch in index order only (a later bucket
// that is ready first waits for the earlier ones), so every rank issues the same collectives in
// the same sequence whatever its timing. Hooks act only while armed (the last micro-batch:
// DDP's no_sync for the others). finish() launches what is left (parameters that got no gradient
// this backward contribute their current .grad, or zeros: DDP's find_unused_parameters, detected
// after backward instead of by a graph walk), waits, averages and copies back into .grad.
namespace {
struct Bucket {
  std::vector<size_t> vars;
  std::vector<int64_t> offsets;
  at::Tensor flat;
  size_t pending = 0;
  bool launched = false;
  c10::intrusive_ptr<c10d::Work> work;
};

struct Reducer {
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  std::vector<at::Tensor> params;
  // held so the accumulators (and our hooks on them) live as long as the reducer: autograd keeps
  // only a weak reference and would make a new, hookless one for the next graph
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::vector<uintptr_t> hookKeys;
  std::vector<Bucket> buckets;
  std::vector<size_t> bucketOf;
  std::vector<char> ready;
  size_t nextBucket = 0;
  bool armed = false;
  int64_t launchedByHooks = 0;
  std::string error;
  std::mutex mu;

  void launch(Bucket& b) {
    c10::NoGradGuard noGrad;
    for (size_t k = 0; k < b.vars.size(); k++) {
      const at::Tensor& p = params[b.vars[k]];
      at::Tensor slot = b.flat.narrow(0, b.offsets[k], p.numel()).view(p.sizes());
      if (p.grad().defined()) slot.copy_(p.grad());
      else slot.zero_();
    }
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    o.timeout = opTimeout;
    std::vector<at::Tensor> one{b.flat};
    b.work = pg->allreduce(one, o);
    b.launched = true;
  }

  void launchReadyInOrder(bool byHook) {
    while (nextBucket < buckets.size() && buckets[nextBucket].pending == 0) {
      launch(buckets[nextBucket]);
      if (byHook) launchedByHooks++;
      nextBucket++;
    }
  }

  void markReady(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    if (!armed) return;
    if (ready[i]) {
      // a second gradient in one armed window (a parameter used in two backward calls): fine
      // until its bucket is sent, wrong after (the sent copy is stale)
      if (buckets[bucketOf[i]].launched && error.empty()) {
        error = "parameter " + std::to_string(i) + " received a gradient after its bucket's all-reduce was launched " +
                "(it takes part in more than one backward of the last micro-batch); use the after-backward reduction " +
                "(gradientReduce: \"after-backward\") for such models";
      }
      return;
    }
    ready[i] = 1;
    Bucket& b = buckets[bucketOf[i]];
    if (--b.pending == 0) launchReadyInOrder(true);
  }

  void reset() {
    for (auto& b : buckets) {
      b.pending = b.vars.size();
      b.launched = false;
      b.work.reset();
    }
    std::fill(ready.begin(), ready.end(), 0);
    nextBucket = 0;
    launchedByHooks = 0;
    error.clear();
  }

  void removeHooks() {
    for (size_t i = 0; i < hookKeys.size(); i++) accumulators[i]->del_post_hook(hookKeys[i]);
    hookKeys.clear();
    accumulators.clear();
  }
};

std::map<int64_t, std::unique_ptr<Reducer>> reducers;
int64_t nextReducerId = 1;

Reducer& reducerAt(const Napi::CallbackInfo& info) {
  auto it = reducers.find(I(info, 0));
  if (it == reducers.end()) throw std::runtime_error("the gradient reducer was disposed (or never created)");
  return *it->second;
}
}  // namespace

// createReducer(params[], bucketBytes, firstBucketBytes) → id. The first bucket is smaller (DDP's
// 1 MB first bucket) so the first all-reduce starts early in backward.
DDPO_OP(createReducer) {
  std::vector<at::Tensor> params = Tensors(info, 0);
  int64_t bucketBytes = I(info, 1);
  int64_t firstBytes = I(info, 2);
  if (params.empty()) throw std::invalid_argument("createReducer: no parameters to reduce");
  auto r = std::make_unique<Reducer>();
  requireGroup();
  r->pg = group;
  r->params = params;
  r->bucketOf.resize(params.size());
  r->ready.assign(params.size(), 0);
  int64_t bytes = 0;
  for (size_t n = params.size(); n-- > 0;) {
    const at::Tensor& p = params[n];
    if (!p.requires_grad()) {
      throw std::invalid_argument("createReducer: parameter " + std::to_string(n) + " does not require grad: pass only the trainable parameters");
    }
    bool fresh = r->buckets.empty();
    if (!fresh) {
      const at::Tensor& prev = params[r->buckets.back().vars.back()];
      int64_t cap = r->buckets.size() == 1 ? firstBytes : bucketBytes;
      fresh = bytes >= cap || prev.scalar_type() != p.scalar_type() || prev.device() != p.device();
    }
    if (fresh) {
      r->buckets.emplace_back();
      bytes = 0;
    }
    Bucket& b = r->buckets.back();
    b.offsets.push_back(b.vars.empty() ? 0 : b.offsets.back() + params[b.vars.back()].numel());
    b.vars.push_back(n);
    r->bucketOf[n] = r->buckets.size() - 1;
    bytes += static_cast<int64_t>(p.numel() * p.element_size());
  }
  for (auto& b : r->buckets) {
    const at::Tensor& last = params[b.vars.back()];
    b.flat = at::empty({b.offsets.back() + last.numel()}, last.options().requires_grad(false));
    b.pending = b.vars.size();
  }
  Reducer* raw = r.get();
  for (size_t i = 0; i < params.size(); i++) {
    auto acc = torch::autograd::impl::grad_accumulator(params[i]);
    if (!acc) throw std::invalid_argument("createReducer: parameter " + std::to_string(i) + " is not a leaf that requires grad");
    uintptr_t key = acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [raw, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          raw->markReady(i);
          return outputs;
        }));
    r->accumulators.push_back(std::move(acc));
    r->hookKeys.push_back(key);
  }
  int64_t id = nextReducerId++;
  reducers[id] = std::move(r);
  return Napi::Number::New(env, static_cast<double>(id));
}

// reducerInfo(id) → { buckets: [{ params, bytes }] } in launch order
DDPO_OP(reducerInfo) {
  Reducer& r = reducerAt(info);
  Napi::Array arr = Napi::Array::New(env, r.buckets.size());
  for (size_t b = 0; b < r.buckets.size(); b++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("params", Napi::Number::New(env, static_cast<double>(r.buckets[b].vars.size())));
    o.Set("bytes", Napi::Number::New(env, static_cast<double>(r.buckets[b].flat.nbytes())));
    arr.Set(static_cast<uint32_t>(b), o);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("buckets", arr);
  return out;
}

// reducerArm(id): the next backward's gradients are reduced as they become ready
DDPO_OP(reducerArm) {
  Reducer& r = reducerAt(info);
  std::lock_guard<std::mutex> lock(r.mu);
  r.reset();
  r.armed = true;
  return env.Undefined();
}

// reducerFinish(id) → { buckets, launchedInBackward, unready, waitMs }: launches the buckets the
// hooks did not, waits for all, averages over the world size and writes the result into .grad.
DDPO_OP(reducerFinish) {
  Reducer& r = reducerAt(info);
  std::unique_lock<std::mutex> lock(r.mu);
  if (!r.armed) throw std::runtime_error("reducerFinish without reducerArm: arm the reducer before the last micro-batch's backward");
  int64_t unready = 0;
  for (size_t i = 0; i < r.params.size(); i++) {
    if (r.ready[i]) continue;
    r.ready[i] = 1;
    unready++;
    r.buckets[r.bucketOf[i]].pending--;
  }
  r.launchReadyInOrder(false);
  r.armed = false;
  std::string error = r.error;
  int64_t byHooks = r.launchedByHooks;
  lock.unlock();
  auto t0 = std::chrono::steady_clock::now();
  c10::NoGradGuard noGrad;
  for (auto& b : r.buckets) {
    waitFor(b.work, "gradient all-reduce");
    b.flat.div_(worldSize);
  }
  double waitMs = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  for (auto& b : r.buckets) {
    for (size_t k = 0; k < b.vars.size(); k++) {
      at::Tensor& p = r.params[b.vars[k]];
      at::Tensor slot = b.flat.narrow(0, b.offsets[k], p.numel()).view(p.sizes());
      if (p.grad().defined()) p.mutable_grad().copy_(slot);
      else p.mutable_grad() = slot.clone();
    }
    b.work.reset();
  }
  if (!error.empty()) throw std::runtime_error(error);
  Napi::Object o = Napi::Object::New(env);
  o.Set("buckets", Napi::Number::New(env, static_cast<double>(r.buckets.size())));
  o.Set("launchedInBackward", Napi::Number::New(env, static_cast<double>(byHooks)));
  o.Set("unready", Napi::Number::New(env, static_cast<double>(unready)));
  o.Set("waitMs", Napi::Number::New(env, waitMs));
  return o;
}

// reducerDispose(id): removes the hooks; unknown ids are ignored (dispose twice is fine)
DDPO_OP(reducerDispose) {
  auto it = reducers.find(I(info, 0));
  if (it == reducers.end()) return env.Undefined();
  {
    std::lock_guard<std::mutex> lock(it->second->mu);
    it->second->armed = false;
    it->second->removeHooks();
  }
  reducers.erase(it);
  return env.Undefined();
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
  EXPORT(createReducer);
  EXPORT(reducerInfo);
  EXPORT(reducerArm);
  EXPORT(reducerFinish);
  EXPORT(reducerDispose);
#undef EXPORT
}

}  // namespace ddpo
