// Work sharing for the CPU kernels: an OpenMP team, or zsar's own small thread pool.
//
// Why a pool of its own: an OpenMP parallel region ends with a barrier that waits for every team
// member, so when the machine has other work and one member is descheduled, a call of a
// millisecond waits a scheduler time slice (several ms) for a thread that has not even started.
// In the pool the caller works through the items itself and helpers join when they are scheduled:
// a call waits only for items a helper has already claimed, never for a helper that has not shown
// up. Why OpenMP all the same: with OpenMP's default wait policy torch's idle OpenMP threads spin
// for milliseconds after each parallel op, on the very cores the pool's helpers need next (measured:
// a 1 ms call ~20% slower right after an SDPA call); the same spinning threads, as an OpenMP team,
// take zsar's work at once. So (openmp_teams()): OMP_WAIT_POLICY=passive -> the pool (robust
// under load; the `zsar` command sets it on a busy machine), otherwise -> an OpenMP team (the
// process's runtime, the one torch loaded); ZSAR_THREADING=pool / openmp overrides. Results are the
// same bits either way.
//
// The pool: items are claimed one at a time from one atomic counter (dynamic scheduling). A
// participant claims its next item before it marks the previous one done, so a job is never
// finished while a participant is inside its loop: a late helper can never claim an item of the
// next job with this job's body. Helpers poll briefly after a job (back-to-back calls find them
// awake), then sleep on a condition variable (no spinning while the process does other work). One
// job at a time: a call made while another thread's job runs is done on its caller alone. After
// fork() the child starts a fresh pool (the parent's helpers do not exist there).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>

namespace zsar {
namespace cpu {

struct ThreadPool;

// Hands out the items of the running job to one participant.
class ItemSource {
 public:
  // Out of line, like every non-template function here: this header is compiled into each
  // instruction-set variant, and an inline function the linker merges must not carry AVX code.
  ItemSource(ThreadPool* pool, int64_t n_items);
  // Claims the next unclaimed item, then marks the participant's previous item done; -1 when none
  // is left (the previous item is then marked done all the same).
  int64_t next();
  // Records the first exception of the job (rethrown on the caller once every item is done).
  void fail(std::exception_ptr error);

 private:
  ThreadPool* pool_;        // nullptr: the caller alone, items counted here
  int64_t n_items_;
  int64_t next_local_ = 1;  // the caller-alone case: item 0 is handed out first
};

// participant(ctx, first_item, source): runs first_item, then source.next() until -1.
using Participant = void (*)(void* ctx, int64_t first_item, ItemSource& source);

// Runs one job of n_items (>= 1) on the caller and up to threads - 1 pool helpers; returns when
// every item is done; rethrows the first exception a participant reported.
void run_participants(int threads, int64_t n_items, Participant participant, void* ctx);

// The threads a call uses by default: the processors this process may run on.
int default_threads();

// Whether parallel_items runs an OpenMP team (see the top of this file); read at each call.
bool openmp_teams();

// num_threads > 0 as given (the Python layer passes torch.get_num_threads()), else default_threads().
int resolve_threads(int num_threads);

// Runs body(item, state) for every item in [0, n_items) on up to `threads` threads (the caller
// among them). Each participating thread makes its own state = make_state() before its first item.
// Which thread runs which item is unspecified: results must not depend on it.
template <typename MakeState, typename Body>
void parallel_items(int threads, int64_t n_items, MakeState&& make_state, Body&& body) {
  if (n_items <= 0) return;
  if (threads <= 1 || n_items == 1) {
    auto state = make_state();
    for (int64_t item = 0; item < n_items; ++item) body(item, state);
    return;
  }
#ifdef _OPENMP
  if (openmp_teams()) {
    std::atomic<int64_t> next{0};
    std::atomic<bool> failed{false};
    std::exception_ptr error;
#pragma omp parallel num_threads(static_cast<int>(std::min<int64_t>(threads, n_items)))
    {
      int64_t item = next.fetch_add(1, std::memory_order_relaxed);
      if (item < n_items) {
        try {  // an exception must not leave the region
          auto state = make_state();
          for (; item < n_items; item = next.fetch_add(1, std::memory_order_relaxed)) body(item, state);
        } catch (...) {
          if (!failed.exchange(true)) error = std::current_exception();
        }
      }
    }
    if (error) std::rethrow_exception(error);
    return;
  }
#endif
  auto participant = [&](int64_t item, ItemSource& source) {
    try {
      auto state = make_state();
      do body(item, state);
      while ((item = source.next()) >= 0);
    } catch (...) {  // the job must still finish: the remaining items are claimed and skipped
      source.fail(std::current_exception());
      while (source.next() >= 0) {
      }
    }
  };
  using P = decltype(participant);
  run_participants(
      threads, n_items, [](void* ctx, int64_t item, ItemSource& source) { (*static_cast<P*>(ctx))(item, source); },
      &participant);
}

}  // namespace cpu
}  // namespace zsar
