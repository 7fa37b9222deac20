// The one PYBIND11_MODULE of luab_fast._C: the module-level functions, and one submodule per area whose bindings
// live beside its kernels (aggregate/, byproducts/, ops/). Bindings stay thin: they validate every array (dtype,
// layout, shape, naming the argument), release the GIL around the compiled work, and hand results back as numpy
// arrays that own their buffers (no copies).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <omp.h>

#include "common/parallel.hpp"

namespace py = pybind11;

void init_aggregate(py::module_& a);            // aggregate/bindings_aggregate.cpp
void init_aggregate_kos_mmsr(py::module_& a);  // aggregate/bindings_kos_mmsr.cpp
void init_aggregate_zero_based_skill(py::module_& a);  // aggregate/bindings_zero_based_skill.cpp
void init_aggregate_glad(py::module_& a);       // aggregate/bindings_glad.cpp
void init_aggregate_mace(py::module_& a);       // aggregate/bindings_mace.cpp
void init_byproducts_imagenet(py::module_& m);  // byproducts/bindings_imagenet.cpp
void init_ops_label_pool(py::module_& ops);     // ops/bindings_label_pool.cpp
void init_ops_rasterize(py::module_& ops);      // ops/bindings_rasterize.cpp
void init_io(py::module_& io);                  // io/bindings_io.cpp

PYBIND11_MODULE(_C, m) {
  m.doc() = "luab_fast compiled core (C++17, OpenMP)";
  m.def("omp_max_threads", []() { return omp_get_max_threads(); }, "OpenMP's default thread count.");
  m.attr("MAX_THREADS") = luab::kMaxThreads;
  init_byproducts_imagenet(m);
  auto ops = m.def_submodule("ops", "CPU kernels of the public ops (luab_fast.ops)");
  init_ops_label_pool(ops);
  init_ops_rasterize(ops);

  auto a = m.def_submodule("aggregate", "EM label-aggregation engine");
  init_aggregate(a);
  init_aggregate_kos_mmsr(a);
  init_aggregate_zero_based_skill(a);
  init_aggregate_glad(a);
  init_aggregate_mace(a);

  auto io = m.def_submodule("io", "file formatting (CSV rows of an annotation round's outputs)");
  init_io(io);
}
