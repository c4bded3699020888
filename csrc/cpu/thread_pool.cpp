// zsar's thread pool for the CPU kernels and the choice between it and an OpenMP team (see
// thread_pool.h for why and how). Compiled once, without instruction-set flags: one pool per
// process, shared by every kernel variant.
#include "thread_pool.h"

#include <pthread.h>
#include <sched.h>
#include <strings.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <system_error>
#include <thread>

namespace zsar {
namespace cpu {

namespace {

// How long a helper polls for the next job, and the caller for the last claimed items, before
// sleeping. Short: polling takes a core from whatever else the process or machine runs, and the
// caller never needs a helper to make progress; long enough that the next call of a forward
// (tens of microseconds of Python later) finds the helpers awake.
constexpr auto kPollFor = std::chrono::microseconds(50);
// More helpers than this are never started, whatever threads a call asks for.
constexpr int kMaxHelpers = 255;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Polls ready() for up to kPollFor; true as soon as it holds.
template <typename Ready>
bool poll(Ready&& ready) {
  const auto until = std::chrono::steady_clock::now() + kPollFor;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= until) return ready();
  }
}

}  // namespace

struct ThreadPool {
  // The job slot: written by the submitter before `state` publishes the job, read by a helper
  // only once it holds an item of the job (the job cannot finish, nor the slot change, before).
  Participant participant = nullptr;
  void* ctx = nullptr;
  std::atomic<int> helpers_wanted{0};
  // (n_items << 32) | next unclaimed item; claims are fetch_add, so the item part may run past
  // n_items (by at most one per participant per job) until the next job resets it.
  std::atomic<uint64_t> state{0};
  std::atomic<int64_t> done{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;  // written once, by whoever set `failed`

  // Helpers wait for `epoch` to change (one increment per job).
  std::atomic<uint64_t> epoch{0};
  std::atomic<int> sleepers{0};
  std::mutex sleep_mutex;
  std::condition_variable wake;
  // The caller waits for `done` to reach n_items.
  std::atomic<bool> caller_sleeping{false};
  std::mutex done_mutex;
  std::condition_variable finished;

  std::mutex submit;  // one job at a time
  int helpers = 0;    // started so far (only the holder of `submit` starts more)

  // The next item of the running job, or -1.
  int64_t claim() {
    const uint64_t v = state.fetch_add(1, std::memory_order_acq_rel);
    const uint64_t n = v >> 32, item = v & 0xffffffffu;
    return item < n ? static_cast<int64_t>(item) : -1;
  }

  void mark_done(int64_t n_items) {
    if (done.fetch_add(1, std::memory_order_seq_cst) + 1 == n_items &&
        caller_sleeping.load(std::memory_order_seq_cst)) {
      std::lock_guard<std::mutex> lock(done_mutex);
      finished.notify_all();
    }
  }

  void helper_loop(int index) {
    uint64_t seen = epoch.load(std::memory_order_acquire);
    for (;;) {
      if (!poll([&] { return epoch.load(std::memory_order_acquire) != seen; })) {
        std::unique_lock<std::mutex> lock(sleep_mutex);
        sleepers.fetch_add(1, std::memory_order_seq_cst);
        wake.wait(lock, [&] { return epoch.load(std::memory_order_seq_cst) != seen; });
        sleepers.fetch_sub(1, std::memory_order_relaxed);
      }
      seen = epoch.load(std::memory_order_acquire);
      if (index >= helpers_wanted.load(std::memory_order_acquire)) continue;
      const uint64_t v = state.load(std::memory_order_acquire);
      if ((v & 0xffffffffu) >= (v >> 32)) continue;  // nothing left: do not even claim
      const int64_t item = claim();
      if (item < 0) continue;
      // An item of the running job is held: its slot is stable until that item is done.
      ItemSource source(this, static_cast<int64_t>(state.load(std::memory_order_acquire) >> 32));
      participant(ctx, item, source);
    }
  }

  void start_helpers(int wanted) {
    while (helpers < std::min(wanted, kMaxHelpers)) {
      try {
        const int index = helpers;
        std::thread([this, index] { helper_loop(index); }).detach();
        ++helpers;
      } catch (const std::system_error&) {  // no more threads: run with those there are
        break;
      }
    }
  }

  void run(int threads, int64_t n_items, Participant fn, void* fn_ctx) {
    std::unique_lock<std::mutex> busy(submit, std::try_to_lock);
    // Another thread's job is running (or more items than `state` can count): the caller alone.
    if (!busy.owns_lock() || n_items >= (int64_t{1} << 32)) {
      ItemSource alone(nullptr, n_items);
      fn(fn_ctx, 0, alone);
      return;
    }
    start_helpers(threads - 1);
    participant = fn;
    ctx = fn_ctx;
    failed.store(false, std::memory_order_relaxed);
    error = nullptr;
    done.store(0, std::memory_order_relaxed);
    helpers_wanted.store(threads - 1, std::memory_order_relaxed);
    state.store(static_cast<uint64_t>(n_items) << 32, std::memory_order_release);  // publishes the job
    epoch.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(sleep_mutex);
      wake.notify_all();
    }
    const int64_t first = claim();
    if (first >= 0) {
      ItemSource source(this, n_items);
      fn(fn_ctx, first, source);
    }
    // Only items a helper has claimed can be outstanding here.
    if (!poll([&] { return done.load(std::memory_order_acquire) == n_items; })) {
      std::unique_lock<std::mutex> lock(done_mutex);
      caller_sleeping.store(true, std::memory_order_seq_cst);
      finished.wait(lock, [&] { return done.load(std::memory_order_seq_cst) == n_items; });
      caller_sleeping.store(false, std::memory_order_relaxed);
    }
    participant = nullptr;
    ctx = nullptr;
    if (failed.load(std::memory_order_acquire)) std::rethrow_exception(error);
  }
};

namespace {

// The process's pool, made on first use; never destroyed (helpers may be asleep in it at exit).
std::atomic<ThreadPool*> the_pool{nullptr};

ThreadPool& pool() {
  ThreadPool* p = the_pool.load(std::memory_order_acquire);
  if (p) return *p;
  auto* made = new ThreadPool();
  if (the_pool.compare_exchange_strong(p, made, std::memory_order_acq_rel)) return *made;
  delete made;  // another thread made it first
  return *p;
}

// In a forked child the helpers do not exist: forget the parent's pool (leaked; its mutexes may be
// held by threads that are gone) and make a new one on first use.
void forget_pool_in_child() { the_pool.store(nullptr, std::memory_order_relaxed); }

const int registered_atfork = pthread_atfork(nullptr, nullptr, forget_pool_in_child);

}  // namespace

ItemSource::ItemSource(ThreadPool* pool, int64_t n_items) : pool_(pool), n_items_(n_items) {}

int64_t ItemSource::next() {
  if (!pool_) return next_local_ < n_items_ ? next_local_++ : -1;
  const int64_t item = pool_->claim();  // before the previous item is marked done (see the header)
  pool_->mark_done(n_items_);
  return item;
}

void ItemSource::fail(std::exception_ptr error) {
  if (!pool_) {
    std::rethrow_exception(error);
  }
  bool expected = false;
  if (pool_->failed.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) pool_->error = error;
}

void run_participants(int threads, int64_t n_items, Participant participant, void* ctx) {
  (void)registered_atfork;
  if (n_items <= 0) return;
  pool().run(threads, n_items, participant, ctx);
}

bool openmp_teams() {
#ifdef _OPENMP
  const char* choice = std::getenv("ZSAR_THREADING");
  if (choice && strcasecmp(choice, "pool") == 0) return false;
  if (choice && strcasecmp(choice, "openmp") == 0) return true;
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  return !(policy && strcasecmp(policy, "passive") == 0);
#else
  return false;
#endif
}

int default_threads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

int resolve_threads(int num_threads) { return num_threads > 0 ? num_threads : default_threads(); }

}  // namespace cpu
}  // namespace zsar
