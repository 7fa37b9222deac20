// scipy.optimize.minimize(fun, x0, jac=True, method="CG", options={"maxiter": ..., "gtol": ..., "norm": inf}),
// ported step for step: Polak-Ribiere+ conjugate gradient; each step's line search MINPACK's dcsrch (scipy's
// line_search_wolfe1), falling back to scipy's scalar_search_wolfe2 when that fails or its step is refused by
// _minimize_cg's sufficient-descent test. Nothing in it is specific to a model (GLAD's M-step uses it, glad.cpp).
// The dot products run in fixed lanes (row_lanes.hpp), so results do not depend on the thread count.
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

namespace luab::aggregate {

// The function to minimise: returns f(x) and writes its gradient at x to grad (both [n]).
using CGObjective = std::function<double(const double* x, double* grad)>;

// Holds the iteration's work vectors, so one instance serves many minimize calls of the same size.
class ConjugateGradient {
 public:
  // n: the number of variables. f is called from the thread that calls minimize, one evaluation at a time.
  ConjugateGradient(CGObjective f, size_t n);

  // Minimises f from x ([n], updated in place to scipy's result.x) and returns f there. Stops after max_iter
  // iterations, once max |gradient| <= gtol, or when no line search finds a step (scipy: "Desired error not
  // necessarily achieved due to precision loss").
  double minimize(std::vector<double>& x, int max_iter, double gtol);

  // Whether the last minimize stopped at max_iter, still above its gradient tolerance (not at the tolerance, nor
  // for want of a step).
  bool hit_max_iter() const { return hit_max_iter_; }

 private:
  CGObjective f_;
  size_t n_;
  std::vector<double> g_, p_, xt_, gt_, p_next_, yk_;
  bool hit_max_iter_ = false;
};

}  // namespace luab::aggregate
