#include "dawid_skene.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "../common/check.hpp"
#include "../common/parallel.hpp"
#include "../common/stream_store.hpp"
#include "../common/vmath.hpp"
#include "em_kernels.hpp"
#include "majority_vote.hpp"

namespace luab::aggregate {
namespace {

// The most classes of the full model: K * K cell ids must fit in int32.
constexpr int64_t kMaxConfusionClasses = 46340;

// crowd-kit's _EPS: error cells and class priors are clipped to at least this before taking logs.
constexpr double kClip = 1e-10;

constexpr int kLanes = 8;

// lanes[y % kLanes] += x[y] * l[y]: a dot product in kLanes independent sums, which GCC vectorises (a
// single running sum would be a chain of dependent adds); the order is fixed, so results are too.
inline void lane_dot(const double* x, const double* l, int64_t n, double* lanes) {
  int64_t y = 0;
  for (; y + kLanes <= n; y += kLanes)
    for (int u = 0; u < kLanes; ++u) lanes[u] += x[y + u] * l[y + u];
  for (; y < n; ++y) lanes[y % kLanes] += x[y] * l[y];
}

// Zeroes the count cells a worker touched (its compact cells and dense rows), for the next worker.
inline void reset_counts(double* cnt, const std::vector<int32_t>& touched, uint8_t* dense_row, int64_t k) {
  for (const int32_t idx : touched) cnt[idx] = 0.0;
  for (int64_t z = 0; z < k; ++z) {
    if (!dense_row[z]) continue;
    std::fill(cnt + z * k, cnt + (z + 1) * k, 0.0);
    dense_row[z] = 0;
  }
}

// Full confusion M-step, one worker per thread with its K×K block in a thread-local scratch (so the
// only global table is log_theta): counts N[z][y] = Σ over w's labels (i, z) of post_i(y) (from the compact
// rows where the task has them: compact_posteriors.hpp); then
// theta[z][y] = max(N + alpha, eps) / Σ_z (...), crowd-kit's rule that only labels the worker actually
// gave (observed z) are clipped — with alpha = 0 unobserved rows stay 0, as crowd-kit has no row for them.
// worker_obj[w] = Σ_{z,y} (N + alpha)[z][y] · log theta[z][y]: the worker's share of the expected
// complete-data log-likelihood plus its log prior, so the ELBO needs no second pass over the labels.
template <typename TP, typename TL>
void full_m_step(const Crowd& c, const TP* post, const CompactPosteriors<TP>& compact, const double* alpha,
                 bool per_worker, TL* log_theta, double* worker_obj, int nt) {
  using Compact = CompactPosteriors<TP>;
  const int64_t K = c.n_classes;
  const int64_t KK = K * K;
  // log of a cell that got no count: log(max(alpha, eps)) on observed rows, log(alpha) on the others. With a
  // shared (or no) prior these are the same for every worker, so they are taken once here and a worker only
  // needs a log for its counted cells (~1 per label with compact rows, instead of K² logs per worker).
  const bool sparse_logs = !per_worker;
  std::vector<double> log_base_obs(sparse_logs ? KK : 0), log_base_unobs(sparse_logs ? KK : 0);
  if (sparse_logs) {
    for (int64_t z = 0; z < K; ++z)
      for (int64_t y = 0; y < K; ++y) {
        const double a = alpha != nullptr ? alpha[y * K + z] : 0.0;
        log_base_obs[z * K + y] = std::log(std::max(a, kClip));
        log_base_unobs[z * K + y] = a > 0.0 ? std::log(a) : -HUGE_VAL;
      }
  }
  FirstError err;  // the per-thread scratch and `touched` allocate: an exception cannot leave the region
#pragma omp parallel num_threads(nt)
  {
    std::vector<double> cnt, th, denom, lrow, log_denom, vals;
    std::vector<int32_t> counted, touched;
    std::vector<TL> lscratch;
    std::vector<uint8_t> dense_row;
    const bool ready = err.run([&] {
      cnt.assign(KK, 0.0);
      th.resize(KK);
      denom.resize(K);
      lrow.resize(K);
      log_denom.resize(K);
      vals.resize(KK);
      counted.resize(KK);
      lscratch.resize(KK);
      dense_row.assign(K, 0);
    });
#pragma omp for schedule(dynamic, 8)
    for (int64_t w = 0; w < c.n_workers; ++w) {
      if (!ready || err.failed()) continue;
      err.run([&] {
        const double* a = alpha == nullptr ? nullptr : alpha + (per_worker ? w * KK : 0);
        const uint8_t* obs = c.observed.data() + w * K;
        TL* lw = log_theta + w * KK;
        // counts: cnt is all zero here (reset below, cell by cell); touched lists the cells that compact rows
        // counted, in label order, and dense_row the rows that got a full posterior row
        touched.clear();
        const int64_t end = c.worker_ptr[w + 1];
        for (int64_t j = c.worker_ptr[w]; j < end; ++j) {
          if (j + kPrefetchAhead < end) {
            const int64_t ahead = c.worker_task[j + kPrefetchAhead];
            if (compact.count(ahead) != Compact::kDense) __builtin_prefetch(compact.row(ahead));
            else prefetch_row(post + ahead * K, K);
          }
          const int64_t t = c.worker_task[j];
          const int64_t z = c.worker_label[j];
          double* dst = cnt.data() + z * K;
          const uint8_t n = compact.count(t);
          if (n != Compact::kDense) {
            const PostEntry<TP>* e = compact.row(t);
            for (uint8_t k = 0; k < n; ++k) {
              if (dst[e[k].y] == 0.0) touched.push_back(static_cast<int32_t>(z * K + e[k].y));  // p >= tau > 0
              dst[e[k].y] += static_cast<double>(e[k].p);
            }
          } else {
            dense_row[z] = 1;
            const TP* p = post + t * K;
            for (int64_t y = 0; y < K; ++y) dst[y] += static_cast<double>(p[y]);
          }
        }
        std::fill(denom.begin(), denom.end(), 0.0);
        for (int64_t z = 0; z < K; ++z) {
          // one branch-free pass per row, which vectorises (__restrict: all three are doubles); max with -inf
          // leaves an unobserved row's counts (>= 0) as they are
          const double* __restrict cz = cnt.data() + z * K;
          double* __restrict tz = th.data() + z * K;
          double* __restrict dn = denom.data();
          const double floor = obs[z] ? kClip : -HUGE_VAL;
          if (a != nullptr)
            for (int64_t y = 0; y < K; ++y) {
              tz[y] = std::max(cz[y] + a[y * K + z], floor);
              dn[y] += tz[y];
            }
          else
            for (int64_t y = 0; y < K; ++y) {
              tz[y] = std::max(cz[y], floor);
              dn[y] += tz[y];
            }
        }
        bool all_positive = true;
        for (int64_t y = 0; y < K; ++y) all_positive &= denom[y] > 0.0;
        // kLanes partial sums in a fixed order: one chain of dependent adds would not vectorise
        double obj_lanes[kLanes] = {};
        if (sparse_logs && all_positive) {
          // log theta[z][y] = log v[z][y] − log denom[y]; log v from the tables above unless the cell was counted.
          // The counted cells are the touched ones outside dense rows, plus the nonzero cells of dense rows: a
          // worker's ~1 cell per label, found without scanning its K² cells.
          vlog(denom.data(), log_denom.data(), K);
          int64_t n = 0;
          for (const int32_t idx : touched) {
            counted[n] = idx;
            vals[n] = th[idx];
            n += !dense_row[idx / K];
          }
          for (int64_t z = 0; z < K; ++z) {
            if (!dense_row[z]) continue;
            const double* cz = cnt.data() + z * K;
            for (int64_t y = 0; y < K; ++y) {  // branch-free compaction: a branch per cell mispredicts often
              counted[n] = static_cast<int32_t>(z * K + y);
              vals[n] = th[z * K + y];
              n += cz[y] != 0.0;
            }
          }
          vlog(vals.data(), vals.data(), n);
          // The worker's K×K block is built in a scratch (in L1/L2) and streamed to the table in one go
          // (stream_store.hpp): only the next E-step reads it, so writing through the caches would first read
          // every line of the 40–80 MB table from memory for nothing. A/B on the 100k × 100 crowd: fp64 −8%, fp32
          // −1.5% per fit.
          TL* blk = lscratch.data();
          for (int64_t z = 0; z < K; ++z) {
            const double* base = (obs[z] ? log_base_obs.data() : log_base_unobs.data()) + z * K;
            TL* out = blk + z * K;
            for (int64_t y = 0; y < K; ++y) out[y] = static_cast<TL>(base[y] - log_denom[y]);
            if (a != nullptr) {  // the prior's log density, as if no cell were counted; corrected below
              for (int64_t y = 0; y < K; ++y) {
                const double ay = a[y * K + z];
                obj_lanes[y % kLanes] += ay > 0.0 ? ay * (base[y] - log_denom[y]) : 0.0;
              }
            }
          }
          // counted cells: their log, their share of the expected log-likelihood, the prior's correction
          double obj = 0.0;
          for (int64_t k = 0; k < n; ++k) {
            const int64_t idx = counted[k], z = idx / K, y = idx - z * K;
            const double l = vals[k] - log_denom[y];
            blk[idx] = static_cast<TL>(l);
            obj += cnt[idx] * l;
            if (a != nullptr && a[y * K + z] > 0.0) obj += a[y * K + z] * (l - (log_base_obs[idx] - log_denom[y]));
          }
          for (int l = 0; l < kLanes; ++l) obj += obj_lanes[l];
          worker_obj[w] = obj;
          stream_store(lw, blk, KK);
          reset_counts(cnt.data(), touched, dense_row.data(), K);
          return;
        }
        for (int64_t y = 0; y < K; ++y) denom[y] = denom[y] > 0.0 ? 1.0 / denom[y] : 0.0;
        for (int64_t z = 0; z < K; ++z) {
          double* tz = th.data() + z * K;
          if (all_positive) {
            for (int64_t y = 0; y < K; ++y) tz[y] *= denom[y];
          } else {  // a worker without labels or prior: uniform (never read by the E-step)
            for (int64_t y = 0; y < K; ++y) tz[y] = denom[y] > 0.0 ? tz[y] * denom[y] : 1.0 / static_cast<double>(K);
          }
          if (obs[z] || a != nullptr) {
            vlog(tz, lrow.data(), K);
          } else {  // unobserved row without prior: zeros, log -inf, never read
            for (int64_t y = 0; y < K; ++y) lrow[y] = tz[y] > 0.0 ? std::log(tz[y]) : -HUGE_VAL;
          }
          for (int64_t y = 0; y < K; ++y) lw[z * K + y] = static_cast<TL>(lrow[y]);
          if (obs[z]) lane_dot(cnt.data() + z * K, lrow.data(), K, obj_lanes);
          if (a != nullptr)
            for (int64_t y = 0; y < K; ++y)
              if (a[y * K + z] > 0.0) obj_lanes[y % kLanes] += a[y * K + z] * lrow[y];
        }
        double obj = 0.0;
        for (int l = 0; l < kLanes; ++l) obj += obj_lanes[l];
        worker_obj[w] = obj;
        reset_counts(cnt.data(), touched, dense_row.data(), K);
      });
    }
    store_fence();
  }
  err.rethrow();
}

// One-coin M-step (crowd-kit's OneCoinDawidSkene): skill = expected accuracy over the worker's labels,
// p(z | y) = skill if z == y else (1 - skill) / (K - 1), both clipped to [eps, 1 - eps].
// coin[w] = (log right, log wrong): the E-step needs nothing else, so no K×K table is built.
template <typename TP>
void one_coin_m_step(const Crowd& c, const TP* post, const double* alpha, double* skills, double* coin,
                     double* worker_obj, int nt) {
  const int64_t K = c.n_classes;
  const double a_right = alpha != nullptr ? alpha[0] : 0.0;
  const double a_wrong = alpha != nullptr ? alpha[1] : 0.0;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 16)
  for (int64_t w = 0; w < c.n_workers; ++w) {
    double hit = 0.0;
    for (int64_t j = c.worker_ptr[w]; j < c.worker_ptr[w + 1]; ++j)
      hit += static_cast<double>(post[c.worker_task[j] * K + c.worker_label[j]]);
    const double n = static_cast<double>(c.worker_ptr[w + 1] - c.worker_ptr[w]);
    const double denom = n + a_right + a_wrong;
    // crowd-kit takes the plain mean; with pseudo-counts it is the posterior mean of a Beta prior
    const double s = denom > 0.0 ? (hit + a_right) / denom : 1.0 / static_cast<double>(K);
    skills[w] = s;
    const double right = K > 1 ? std::clamp(s, kClip, 1.0 - kClip) : 1.0;
    const double wrong = K > 1 ? std::clamp((1.0 - s) / static_cast<double>(K - 1), kClip, 1.0 - kClip) : 1.0;
    coin[2 * w] = std::log(right);
    coin[2 * w + 1] = std::log(wrong);
    // Σ over labels of Σ_y p(y) log theta = hit · log right + (n − hit) · log wrong, as Σ_y p(y) = 1
    double obj = hit * coin[2 * w] + (n - hit) * coin[2 * w + 1];
    // the Beta prior's log density at the (clipped) skill; with one class right is 1, so use s itself
    const double s_clip = std::clamp(s, kClip, 1.0 - kClip);
    if (alpha != nullptr) obj += a_right * std::log(s_clip) + a_wrong * std::log(1.0 - s_clip);
    worker_obj[w] = obj;
  }
}

// crowd-kit's _evidence_lower_bound (before the division by the number of labels), plus the log of
// the Dirichlet/Beta prior so that the objective is the one MAP-EM actually increases. Rearranged so no
// pass over the labels is needed: Σ_labels Σ_y p_i(y) log theta[w][z][y] is Σ_w worker_obj[w] (from the
// counts), Σ_labels Σ_y p_i(y) log prior(y) is Σ_y L_y log prior(y) with L_y = Σ_i n_i p_i(y), and the
// entropy comes from the E-step.
double objective(const Crowd& c, const double* entropy, const double* class_prior, const double* label_totals,
                 const double* worker_obj, int nt) {
  const int64_t K = c.n_classes;
  double total = blocked_task_sum(c.n_tasks, nt, [&](int64_t i) { return entropy[i]; });
  for (int64_t w = 0; w < c.n_workers; ++w) total += worker_obj[w];
  for (int64_t y = 0; y < K; ++y) total += label_totals[y] * std::log(std::max(class_prior[y], kClip));
  return total;
}

template <typename TP, typename TL>
DSResult run(const Crowd& c, const double* init_post, const double* alpha, bool alpha_per_worker,
             const double* task_prior, const DSOptions& opt) {
  const int nt = resolve_threads(opt.n_threads, c.n_labels * c.n_classes);
  const int64_t K = c.n_classes;
  const int64_t W = c.n_workers;
  DSResult r;
  Buffer<TP> post(c.n_tasks * K, Uninitialized{});
  // every row starts kDense: a warm start's posteriors are read in full, majority vote records its few shares,
  // and each E-step then refreshes the rows
  CompactPosteriors<TP> compact(opt.one_coin ? 0 : c.n_tasks, CompactPosteriors<TP>::tau_for(c, kClip));
  if (init_post != nullptr) {
    const double* src = init_post;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 65536)
    for (int64_t i = 0; i < c.n_tasks * K; ++i) post[i] = static_cast<TP>(src[i]);
  } else {
    majority_vote_into(c, nullptr, nt, post.data(), opt.one_coin ? nullptr : &compact);  // crowd-kit's init
  }
  r.class_prior.assign(K, 0.0);
  r.skills.assign(opt.one_coin ? W : 0, 0.0);
  // the one global confusion table; turned into theta = exp(log_theta) in place at the end
  Buffer<TL> log_theta(opt.one_coin ? 0 : W * K * K, Uninitialized{});
  std::vector<double> coin(opt.one_coin ? 2 * W : 0, 0.0);
  std::vector<double> log_prior(K, 0.0);
  std::vector<double> entropy(c.n_tasks, 0.0);
  std::vector<double> worker_obj(W, 0.0);
  std::vector<double> label_totals(K, 0.0);

  auto m_step = [&]() {
    if (opt.one_coin) {
      one_coin_m_step(c, post.data(), alpha, r.skills.data(), coin.data(), worker_obj.data(), nt);
    } else {
      full_m_step(c, post.data(), compact, alpha, alpha_per_worker, log_theta.data(), worker_obj.data(), nt);
    }
  };

  // crowd-kit order: prior and confusions from the initial posteriors, then (E, prior, M, loss)*
  mean_labelled_posterior(c, post.data(), r.class_prior.data(), nt);
  m_step();
  double loss = -std::numeric_limits<double>::infinity();
  const double n_labels = static_cast<double>(std::max<int64_t>(c.n_labels, 1));
  for (int it = 0; it < opt.n_iter; ++it) {
    for (int64_t y = 0; y < K; ++y) log_prior[y] = std::log(std::max(r.class_prior[y], kClip));
    e_step(c, log_prior.data(), log_theta.data(), task_prior, 1e-8, post.data(), nt, entropy.data(), kClip,
           opt.one_coin ? coin.data() : nullptr, nullptr, false, opt.one_coin ? nullptr : &compact,
           r.class_prior.data(), label_totals.data());  // the E-step also takes the class prior's sums
    m_step();
    const double new_loss =
        objective(c, entropy.data(), r.class_prior.data(), label_totals.data(), worker_obj.data(), nt) / n_labels;
    r.loss_history.push_back(new_loss);
    r.n_iter_run = it + 1;
    if (new_loss - loss < opt.tol) break;
    loss = new_loss;
  }
  if (!opt.one_coin) {
    TL* t = log_theta.data();
#pragma omp parallel for num_threads(nt) schedule(dynamic, 16)
    for (int64_t w = 0; w < W; ++w)
      for (int64_t z = 0; z < K; ++z) {
        TL* row = t + (w * K + z) * K;
        // an unobserved row without prior holds log 0 = -inf, which vexp must not see; theta is 0 there
        if (alpha == nullptr && !c.observed[w * K + z]) std::fill(row, row + K, TL{0});
        else vexp(row, K);
      }
  }
  if constexpr (std::is_same_v<TP, float>) {
    r.post_f32 = std::move(post);
    r.theta_f32 = std::move(log_theta);
  } else {
    r.post = std::move(post);
    r.theta = std::move(log_theta);
  }
  return r;
}

}  // namespace

DSResult dawid_skene(const Crowd& c, const double* init_post, const double* alpha, bool alpha_per_worker,
                     const double* task_prior, const DSOptions& opt) {
  // the tables' sizes, checked before anything is allocated (or indexed) with them
  checked_size("n_tasks * n_classes", {c.n_tasks, c.n_classes});
  checked_size("n_tasks * 4 (compact posteriors)", {c.n_tasks, CompactPosteriors<double>::kCap},
               sizeof(PostEntry<double>));
  if (!opt.one_coin) checked_size("n_workers * n_classes * n_classes", {c.n_workers, c.n_classes, c.n_classes});
  // full_m_step lists a worker's count cells z * K + y as int32 (touched, counted)
  LUAB_CHECK(opt.one_coin || c.n_classes <= kMaxConfusionClasses, "n_classes must be <= ", kMaxConfusionClasses,
             " for the full Dawid-Skene model (its n_classes^2 confusion cells are indexed in int32), got ",
             c.n_classes, "; use the one-coin model");
  if (opt.single_precision) return run<float, float>(c, init_post, alpha, alpha_per_worker, task_prior, opt);
  return run<double, double>(c, init_post, alpha, alpha_per_worker, task_prior, opt);
}

}  // namespace luab::aggregate
