#include "dawid_skene.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "../common/check.hpp"
#include "../common/vmath.hpp"
#include "ds_m_step.hpp"
#include "e_step.hpp"
#include "em_kernels.hpp"
#include "majority_vote.hpp"

namespace luab::aggregate {
namespace {

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

// Gold rows one-hot (crowd-kit's _correct_probas_with_golden), also in the compact rows the first M-step reads.
template <typename TP>
void fix_gold_rows(const Crowd& c, const int64_t* gold, TP* post, CompactPosteriors<TP>& compact, bool use_compact) {
  const int64_t K = c.n_classes;
  std::vector<double> row(K);
  for (int64_t i = 0; i < c.n_tasks; ++i) {
    if (gold[i] < 0) continue;
    for (int64_t y = 0; y < K; ++y) row[y] = y == gold[i] ? 1.0 : 0.0;
    for (int64_t y = 0; y < K; ++y) post[i * K + y] = static_cast<TP>(row[y]);
    if (use_compact) compact.set_row(i, row.data(), K);
  }
}

// The given p(z | y, w) as the loop's log table (crowd-kit's errors after initial_error): log 0 = -inf in cells of
// rows no label reads.
template <typename TL>
void log_start_theta(const Crowd& c, const double* theta, TL* log_theta, int nt) {
  const int64_t KK = c.n_classes * c.n_classes;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 16)
  for (int64_t w = 0; w < c.n_workers; ++w)
    for (int64_t k = 0; k < KK; ++k) {
      const double t = theta[w * KK + k];
      log_theta[w * KK + k] = static_cast<TL>(t > 0.0 ? std::log(t) : -HUGE_VAL);
    }
}

template <typename TP, typename TL>
DSResult run(const Crowd& c, const DSStart& start, const double* alpha, bool alpha_per_worker,
             const double* task_prior, const DSOptions& opt) {
  const int nt = resolve_threads(opt.n_threads, c.n_labels * c.n_classes);
  const int64_t K = c.n_classes;
  const int64_t W = c.n_workers;
  DSResult r;
  Buffer<TP> post(c.n_tasks * K, Uninitialized{});
  // every row starts kDense: a warm start's posteriors are read in full, majority vote records its few shares,
  // and each E-step then refreshes the rows
  CompactPosteriors<TP> compact(opt.one_coin ? 0 : c.n_tasks, CompactPosteriors<TP>::tau_for(c, kClip));
  if (start.post != nullptr) {
    const double* src = start.post;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 65536)
    for (int64_t i = 0; i < c.n_tasks * K; ++i) post[i] = static_cast<TP>(src[i]);
  } else {
    majority_vote_into(c, nullptr, nt, post.data(), opt.one_coin ? nullptr : &compact);  // crowd-kit's init
  }
  if (start.gold != nullptr) fix_gold_rows(c, start.gold, post.data(), compact, !opt.one_coin);
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
      confusion_m_step(c, post.data(), compact, alpha, alpha_per_worker, log_theta.data(), worker_obj.data(), nt);
    }
  };

  // crowd-kit order: prior and confusions from the initial posteriors, then (E, prior, M, loss)*
  mean_labelled_posterior(c, post.data(), r.class_prior.data(), nt);
  if (start.theta != nullptr) log_start_theta(c, start.theta, log_theta.data(), nt);
  else m_step();
  double loss = -std::numeric_limits<double>::infinity();
  const double n_labels = static_cast<double>(std::max<int64_t>(c.n_labels, 1));
  for (int it = 0; it < opt.n_iter; ++it) {
    for (int64_t y = 0; y < K; ++y) log_prior[y] = std::log(std::max(r.class_prior[y], kClip));
    // the E-step also takes the class prior's sums
    const SoftEStepOut out{entropy.data(), kClip, r.class_prior.data(), label_totals.data()};
    if (opt.one_coin) e_step_one_coin(c, log_prior.data(), coin.data(), task_prior, 1e-8, post.data(), out, nt);
    else e_step_confusion(c, log_prior.data(), log_theta.data(), task_prior, 1e-8, start.gold, post.data(), compact,
                          out, nt);
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

DSResult dawid_skene(const Crowd& c, const DSStart& start, const double* alpha, bool alpha_per_worker,
                     const double* task_prior, const DSOptions& opt) {
  // the tables' sizes, checked before anything is allocated (or indexed) with them
  checked_size("n_tasks * n_classes", {c.n_tasks, c.n_classes});
  checked_size("n_tasks * 4 (compact posteriors)", {c.n_tasks, CompactPosteriors<double>::kCap},
               sizeof(PostEntry<double>));
  if (!opt.one_coin) checked_size("n_workers * n_classes * n_classes", {c.n_workers, c.n_classes, c.n_classes});
  // confusion_m_step lists a worker's count cells z * K + y as int32 (touched, counted)
  LUAB_CHECK(opt.one_coin || c.n_classes <= kMaxConfusionClasses, "n_classes must be <= ", kMaxConfusionClasses,
             " for the full Dawid-Skene model (its n_classes^2 confusion cells are indexed in int32), got ",
             c.n_classes, "; use the one-coin model");
  LUAB_CHECK(!opt.one_coin || (start.theta == nullptr && start.gold == nullptr),
             "a starting theta and gold rows apply to the full Dawid-Skene model only, not to one-coin");
  for (int64_t i = 0; start.gold != nullptr && i < c.n_tasks; ++i)
    LUAB_CHECK(start.gold[i] >= -1 && start.gold[i] < c.n_classes, "gold must hold class indices in [0, ",
               c.n_classes, ") or -1, got ", start.gold[i], " at task ", i);
  if (opt.single_precision) return run<float, float>(c, start, alpha, alpha_per_worker, task_prior, opt);
  return run<double, double>(c, start, alpha, alpha_per_worker, task_prior, opt);
}

}  // namespace luab::aggregate
