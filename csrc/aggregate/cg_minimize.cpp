// scipy's minimize(method="CG") (cg_minimize.hpp), ported from scipy 1.17: optimize/_optimize.py _minimize_cg,
// _linesearch.py, _dcsrch.py. The same steps, tests and constants, so a port of code that calls it follows its path.
#include "cg_minimize.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "row_lanes.hpp"

namespace luab::aggregate {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// in kLanes fixed chains (row_lanes.hpp): a single running sum over all n elements would be latency-bound
double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double lanes[kLanes] = {};
  lane_dot(a.data(), b.data(), static_cast<int64_t>(a.size()), lanes);
  double s = 0.0;
  for (double v : lanes) s += v;
  return s;
}

double max_abs(const std::vector<double>& a) {  // np.amax(np.abs(a)): NaN wins
  double m = 0.0;
  for (double v : a) m = (std::isnan(v) || std::isnan(m)) ? kNaN : std::max(m, std::fabs(v));
  return m;
}

// Python's max(a, b) and min(a, b) (the first argument unless the second compares greater / less).
inline double py_max(double a, double b) { return b > a ? b : a; }
inline double py_min(double a, double b) { return b < a ? b : a; }
inline double np_clip(double v, double lo, double hi) { return std::isnan(v) ? v : std::min(std::max(v, lo), hi); }
inline double np_sign(double v) { return std::isnan(v) ? v : (v > 0.0) - (v < 0.0); }

// numpy's errstate(divide="raise", over="raise", invalid="raise") for the interpolation formulas: an operation
// that divides by zero, overflows, or makes a NaN from non-NaN operands marks the result as "no minimiser".
struct Strict {
  bool failed = false;
  double check(double r, double a, double b) {
    const bool nan_made = std::isnan(r) && !std::isnan(a) && !std::isnan(b);
    const bool inf_made = std::isinf(r) && std::isfinite(a) && std::isfinite(b);
    failed = failed || nan_made || inf_made;
    return r;
  }
  double add(double a, double b) { return check(a + b, a, b); }
  double sub(double a, double b) { return check(a - b, a, b); }
  double mul(double a, double b) { return check(a * b, a, b); }
  double div(double a, double b) { return check(a / b, a, b); }
  double pow(double a, double n) { return check(std::pow(a, n), a, n); }
  double sqrt(double a) { return check(std::sqrt(a), a, 0.0); }
};

// scipy _cubicmin: minimiser of the cubic through (a, fa), (b, fb), (c, fc) with slope fpa at a.
std::optional<double> cubicmin(double a, double fa, double fpa, double b, double fb, double c, double fc) {
  Strict s;
  const double C = fpa;
  const double db = s.sub(b, a), dc = s.sub(c, a);
  const double denom = s.mul(s.pow(s.mul(db, dc), 2.0), s.sub(db, dc));
  const double v0 = s.sub(s.sub(fb, fa), s.mul(C, db));
  const double v1 = s.sub(s.sub(fc, fa), s.mul(C, dc));
  double A = s.add(s.mul(s.pow(dc, 2.0), v0), s.mul(-s.pow(db, 2.0), v1));
  double B = s.add(s.mul(-s.pow(dc, 3.0), v0), s.mul(s.pow(db, 3.0), v1));
  A = s.div(A, denom);
  B = s.div(B, denom);
  const double radical = s.sub(s.mul(B, B), s.mul(s.mul(3.0, A), C));
  const double xmin = s.add(a, s.div(s.add(-B, s.sqrt(radical)), s.mul(3.0, A)));
  if (s.failed || !std::isfinite(xmin)) return std::nullopt;
  return xmin;
}

// scipy _quadmin: minimiser of the quadratic through (a, fa), (b, fb) with slope fpa at a.
std::optional<double> quadmin(double a, double fa, double fpa, double b, double fb) {
  Strict s;
  const double db = s.sub(b, a);
  const double B = s.div(s.sub(s.sub(fb, fa), s.mul(fpa, db)), s.mul(db, db));
  const double xmin = s.sub(a, s.div(fpa, s.mul(2.0, B)));
  if (s.failed || !std::isfinite(xmin)) return std::nullopt;
  return xmin;
}

// scipy _dcsrch.dcstep (MINPACK-2, More' and Thuente): a safeguarded trial step, and the bracket's update.
struct Bracket {
  double stx, fx, dx, sty, fy, dy;
  bool brackt;
};

double dcstep(Bracket& br, double stp, double fp, double dp, double stpmin, double stpmax) {
  const double sgnd = np_sign(dp) * np_sign(br.dx);
  auto gamma_of = [](double theta, double u, double v, bool clip_at_zero) {
    const double s = py_max(py_max(std::fabs(theta), std::fabs(u)), std::fabs(v));
    const double q = (theta / s) * (theta / s) - (u / s) * (v / s);
    return s * std::sqrt(clip_at_zero ? py_max(0.0, q) : q);
  };
  const double stx = br.stx, fx = br.fx, dx = br.dx;
  double stpf;
  if (fp > fx) {
    const double theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp;
    double gamma = gamma_of(theta, dx, dp, false);
    if (stp < stx) gamma = -gamma;
    const double r = ((gamma - dx) + theta) / (((gamma - dx) + gamma) + dp);
    const double stpc = stx + r * (stp - stx);
    const double stpq = stx + ((dx / ((fx - fp) / (stp - stx) + dx)) / 2.0) * (stp - stx);
    stpf = std::fabs(stpc - stx) <= std::fabs(stpq - stx) ? stpc : stpc + (stpq - stpc) / 2.0;
    br.brackt = true;
  } else if (sgnd < 0.0) {
    const double theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp;
    double gamma = gamma_of(theta, dx, dp, false);
    if (stp > stx) gamma = -gamma;
    const double r = ((gamma - dp) + theta) / (((gamma - dp) + gamma) + dx);
    const double stpc = stp + r * (stx - stp);
    const double stpq = stp + (dp / (dp - dx)) * (stx - stp);
    stpf = std::fabs(stpc - stp) > std::fabs(stpq - stp) ? stpc : stpq;
    br.brackt = true;
  } else if (std::fabs(dp) < std::fabs(dx)) {
    const double theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp;
    double gamma = gamma_of(theta, dx, dp, true);
    if (stp > stx) gamma = -gamma;
    const double r = ((gamma - dp) + theta) / ((gamma + (dx - dp)) + gamma);
    double stpc;
    if (r < 0.0 && gamma != 0.0) stpc = stp + r * (stx - stp);
    else stpc = stp > stx ? stpmax : stpmin;
    const double stpq = stp + (dp / (dp - dx)) * (stx - stp);
    if (br.brackt) {
      stpf = std::fabs(stpc - stp) < std::fabs(stpq - stp) ? stpc : stpq;
      stpf = stp > stx ? py_min(stp + 0.66 * (br.sty - stp), stpf) : py_max(stp + 0.66 * (br.sty - stp), stpf);
    } else {
      stpf = np_clip(std::fabs(stpc - stp) > std::fabs(stpq - stp) ? stpc : stpq, stpmin, stpmax);
    }
  } else if (br.brackt) {
    const double theta = 3.0 * (fp - br.fy) / (br.sty - stp) + br.dy + dp;
    double gamma = gamma_of(theta, br.dy, dp, false);
    if (stp > br.sty) gamma = -gamma;
    const double r = ((gamma - dp) + theta) / (((gamma - dp) + gamma) + br.dy);
    stpf = stp + r * (br.sty - stp);
  } else {
    stpf = stp > stx ? stpmax : stpmin;
  }
  if (fp > fx) {
    br.sty = stp, br.fy = fp, br.dy = dp;
  } else {
    if (sgnd < 0.0) br.sty = stx, br.fy = fx, br.dy = dx;
    br.stx = stp, br.fx = fp, br.dx = dp;
  }
  return stpf;
}

// f and f' along x + s p. The searches ask for f(s) and then f'(s) at the same s, so one fused evaluation of f
// and its gradient serves both (scipy's ScalarFunction caches by point the same way); xt and gt then hold the
// point and gradient of the last s evaluated, where every search ends.
class Line {
 public:
  Line(const CGObjective& f, const std::vector<double>& x, const std::vector<double>& p, std::vector<double>& xt,
       std::vector<double>& gt)
      : f_of_(f), x_(x), p_(p), xt_(xt), gt_(gt) {}
  double phi(double s) {
    at(s);
    return f_;
  }
  double derphi(double s) {
    at(s);
    return dot(gt_, p_);
  }

 private:
  void at(double s) {
    if (evaluated_ && s == s_) return;
    for (size_t i = 0; i < xt_.size(); ++i) xt_[i] = x_[i] + s * p_[i];
    f_ = f_of_(xt_.data(), gt_.data());
    s_ = s;
    evaluated_ = true;
  }
  const CGObjective& f_of_;
  const std::vector<double>& x_;
  const std::vector<double>& p_;
  std::vector<double>& xt_;
  std::vector<double>& gt_;
  bool evaluated_ = false;
  double s_ = kNaN, f_ = kNaN;
};

// An accepted step; the gradient there is the Line's last one.
struct StepFound {
  double alpha, f;
};

// The sufficient-descent test scipy's CG passes to its line searches (Polak-Ribiere+ needs it).
using Accept = std::function<bool(double alpha)>;

constexpr double kC1 = 1e-4, kC2 = 0.4;  // _minimize_cg's Armijo and curvature constants
constexpr double kAmin = 1e-100, kAmax = 1e100, kXtol = 1e-14;

double first_step(double phi0, double old_phi0, double derphi0) {  // both searches' initial step
  double a = derphi0 != 0.0 ? py_min(1.0, 1.01 * 2 * (phi0 - old_phi0) / derphi0) : 1.0;
  return a < 0.0 ? 1.0 : a;
}

// scipy line_search_wolfe1: MINPACK's dcsrch (_dcsrch.DCSRCH, stages, bracket and safeguards as there).
std::optional<StepFound> search_dcsrch(Line& line, double phi0, double old_phi0, double derphi0) {
  double stp = first_step(phi0, old_phi0, derphi0);
  if (stp < kAmin || stp > kAmax || derphi0 >= 0.0) return std::nullopt;  // its START errors
  const double ginit = derphi0, gtest = kC1 * ginit;
  Bracket br{0.0, phi0, ginit, 0.0, phi0, ginit, false};
  int stage = 1;
  double width = kAmax - kAmin, width1 = width / 0.5;
  double stmin = 0.0, stmax = stp + 4.0 * stp;
  for (int it = 1; it < 100; ++it) {  // the START call was the first of dcsrch's 100
    if (!std::isfinite(stp)) return std::nullopt;
    const double f = line.phi(stp), g = line.derphi(stp);
    const double ftest = phi0 + stp * gtest;
    if (stage == 1 && f <= ftest && g >= 0.0) stage = 2;
    const bool warn = (br.brackt && (stp <= stmin || stp >= stmax)) ||
                (br.brackt && stmax - stmin <= kXtol * stmax) || (stp == kAmax && f <= ftest && g <= gtest) ||
                (stp == kAmin && (f > ftest || g >= gtest));
    if (f <= ftest && std::fabs(g) <= kC2 * -ginit) return StepFound{stp, f};  // CONVERGENCE beats a warning
    if (warn) return std::nullopt;
    if (stage == 1 && f <= br.fx && f > ftest) {  // the modified function psi(stp) = f - f(0) - ftol stp f'(0)
      Bracket m{br.stx, br.fx - br.stx * gtest, br.dx - gtest, br.sty, br.fy - br.sty * gtest, br.dy - gtest,
                br.brackt};
      stp = dcstep(m, stp, f - stp * gtest, g - gtest, stmin, stmax);
      br = {m.stx, m.fx + m.stx * gtest, m.dx + gtest, m.sty, m.fy + m.sty * gtest, m.dy + gtest, m.brackt};
    } else {
      stp = dcstep(br, stp, f, g, stmin, stmax);
    }
    if (br.brackt) {
      if (std::fabs(br.sty - br.stx) >= 0.66 * width1) stp = br.stx + 0.5 * (br.sty - br.stx);
      width1 = width;
      width = std::fabs(br.sty - br.stx);
      stmin = py_min(br.stx, br.sty);
      stmax = py_max(br.stx, br.sty);
    } else {
      stmin = stp + 1.1 * (stp - br.stx);
      stmax = stp + 4.0 * (stp - br.stx);
    }
    stp = np_clip(stp, kAmin, kAmax);
    if ((br.brackt && (stp <= stmin || stp >= stmax)) || (br.brackt && stmax - stmin <= kXtol * stmax)) stp = br.stx;
  }
  return std::nullopt;  // dcsrch did not converge within its iterations
}

// scipy _zoom (Nocedal and Wright, algorithm 3.6) inside scalar_search_wolfe2.
std::optional<StepFound> zoom(Line& line, double a_lo, double a_hi, double phi_lo, double phi_hi, double derphi_lo,
                              double phi0, double derphi0, const Accept& accept) {
  double phi_rec = phi0, a_rec = 0.0;
  for (int i = 0; i <= 10; ++i) {
    const double dalpha = a_hi - a_lo;
    const double a = dalpha < 0 ? a_hi : a_lo, b = dalpha < 0 ? a_lo : a_hi;
    std::optional<double> a_j;
    if (i > 0) {
      const double cchk = 0.2 * dalpha;
      a_j = cubicmin(a_lo, phi_lo, derphi_lo, a_hi, phi_hi, a_rec, phi_rec);
      if (a_j && (*a_j > b - cchk || *a_j < a + cchk)) a_j.reset();
    }
    if (!a_j) {
      const double qchk = 0.1 * dalpha;
      a_j = quadmin(a_lo, phi_lo, derphi_lo, a_hi, phi_hi);
      if (!a_j || *a_j > b - qchk || *a_j < a + qchk) a_j = a_lo + 0.5 * dalpha;
    }
    const double phi_aj = line.phi(*a_j);
    if (phi_aj > phi0 + kC1 * *a_j * derphi0 || phi_aj >= phi_lo) {
      phi_rec = phi_hi, a_rec = a_hi, a_hi = *a_j, phi_hi = phi_aj;
      continue;
    }
    const double derphi_aj = line.derphi(*a_j);
    if (std::fabs(derphi_aj) <= -kC2 * derphi0 && accept(*a_j)) return StepFound{*a_j, phi_aj};
    if (derphi_aj * (a_hi - a_lo) >= 0) {
      phi_rec = phi_hi, a_rec = a_hi, a_hi = a_lo, phi_hi = phi_lo;
    } else {
      phi_rec = phi_lo, a_rec = a_lo;
    }
    a_lo = *a_j, phi_lo = phi_aj, derphi_lo = derphi_aj;
  }
  return std::nullopt;
}

// scipy scalar_search_wolfe2 (maxiter 10, amax 1e100), the fallback when dcsrch fails or its step is refused.
std::optional<StepFound> search_wolfe2(Line& line, double phi0, double old_phi0, double derphi0,
                                       const Accept& accept) {
  double alpha0 = 0.0, alpha1 = py_min(first_step(phi0, old_phi0, derphi0), kAmax);
  double phi_a1 = line.phi(alpha1), phi_a0 = phi0, derphi_a0 = derphi0;
  for (int i = 0; i < 10; ++i) {
    if (alpha1 == 0.0 || alpha0 > kAmax) return std::nullopt;
    if (phi_a1 > phi0 + kC1 * alpha1 * derphi0 || (phi_a1 >= phi_a0 && i > 0))
      return zoom(line, alpha0, alpha1, phi_a0, phi_a1, derphi_a0, phi0, derphi0, accept);
    const double derphi_a1 = line.derphi(alpha1);
    if (std::fabs(derphi_a1) <= -kC2 * derphi0 && accept(alpha1)) return StepFound{alpha1, phi_a1};
    if (derphi_a1 >= 0.0) return zoom(line, alpha1, alpha0, phi_a1, phi_a0, derphi_a1, phi0, derphi0, accept);
    alpha0 = alpha1;
    alpha1 = py_min(2.0 * alpha1, kAmax);
    phi_a0 = phi_a1;
    phi_a1 = line.phi(alpha1);
    derphi_a0 = derphi_a1;
  }
  return StepFound{alpha1, phi_a1};  // out of iterations: scipy takes the last step, unchecked
}

}  // namespace

ConjugateGradient::ConjugateGradient(CGObjective f, size_t n)
    : f_(std::move(f)), n_(n), g_(n_), p_(n_), xt_(n_), gt_(n_), p_next_(n_), yk_(n_) {}

double ConjugateGradient::minimize(std::vector<double>& x, int max_iter, double gtol) {
  double f = f_(x.data(), g_.data());
  double old_f = f + std::sqrt(dot(g_, g_)) / 2;  // "sets the initial step guess to dx ~ 1"
  for (size_t i = 0; i < n_; ++i) p_[i] = -g_[i];
  double gnorm = max_abs(g_);
  hit_max_iter_ = false;
  for (int k = 0; gnorm > gtol; ++k) {
    if (k == max_iter) {
      hit_max_iter_ = true;
      break;
    }
    const double deltak = dot(g_, g_);
    double accepted_alpha = kNaN;  // the step whose Polak-Ribiere direction p_next_ holds
    // the next direction from the gradient at x + alpha p (the Line's last); accept on sufficient descent
    const Accept descent = [&](double alpha) {
      for (size_t i = 0; i < n_; ++i) yk_[i] = gt_[i] - g_[i];  // scipy's yk
      const double yk_dot = dot(yk_, gt_);
      const double beta_k = py_max(0.0, yk_dot / deltak);
      for (size_t i = 0; i < n_; ++i) p_next_[i] = -gt_[i] + beta_k * p_[i];
      accepted_alpha = alpha;
      return max_abs(gt_) <= gtol || dot(p_next_, gt_) <= -0.01 * dot(gt_, gt_);
    };
    Line line(f_, x, p_, xt_, gt_);
    const double derphi0 = dot(g_, p_);
    std::optional<StepFound> step = search_dcsrch(line, f, old_f, derphi0);
    if (step) {
      line.phi(step->alpha);
      if (!descent(step->alpha)) step.reset();
    }
    if (!step) step = search_wolfe2(line, f, old_f, derphi0, descent);
    if (!step) break;  // scipy: "Desired error not necessarily achieved due to precision loss"
    line.phi(step->alpha);  // the gradient at the step (already evaluated: the searches end there)
    if (!(accepted_alpha == step->alpha)) descent(step->alpha);
    x.swap(xt_);
    g_.swap(gt_);
    p_.swap(p_next_);
    old_f = f;
    f = step->f;
    gnorm = max_abs(g_);
  }
  return f;
}

}  // namespace luab::aggregate
