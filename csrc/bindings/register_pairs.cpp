// Thin bindings of the CPU pair primitives. Python (alignscope._backend) has already checked
// shapes, dtypes and contiguity; here arrays are only taken without conversion, the GIL is
// released, and Ctrl-C / progress are polled from the calling thread.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <optional>

#include "bindings/registers.h"
#include "cpu/pair_kernels.h"
#include "cpu/prepare.h"
#include "cpu/topk.h"

namespace py = pybind11;

namespace alignscope::bindings {

namespace {

using F32 = py::array_t<float, py::array::c_style>;
using I32 = py::array_t<int32_t, py::array::c_style>;
using I64 = py::array_t<int64_t, py::array::c_style>;

// Poll run on the calling thread: the GIL is taken briefly to check signals and report
// progress. A pending Python error (KeyboardInterrupt, or one raised by the callback) stays
// set and cancels the run; the caller raises it once the workers have stopped.
cpu::Poll make_poll(const py::object& progress) {
  return [progress](int64_t done, int64_t total) -> bool {
    py::gil_scoped_acquire gil;
    if (PyErr_Occurred() || PyErr_CheckSignals() != 0) return false;
    if (!progress.is_none()) {
      try {
        progress(done, total);
      } catch (py::error_already_set& e) {
        e.restore();
        return false;
      }
    }
    return true;
  };
}

template <typename Fn>
auto run_released(Fn&& fn) {
  try {
    py::gil_scoped_release release;
    return fn();
  } catch (const cpu::Cancelled&) {
    if (PyErr_Occurred()) throw py::error_already_set();
    throw py::value_error("alignscope: computation cancelled");
  }
}

void check_2d(const F32& a, const char* name) {
  if (a.ndim() != 2) throw py::value_error(std::string(name) + " must be 2-D");
}

}  // namespace

template <typename T>
py::tuple pack_rows(const py::array_t<T, py::array::c_style>& a, std::optional<py::array_t<T, py::array::c_style>> b,
                    py::array_t<float, py::array::c_style>& dst, bool with_cos, int threads) {
  if (a.ndim() != 2 || dst.ndim() != 2) throw py::value_error("a and dst must be 2-D");
  const int64_t n = a.shape(0), d_a = a.shape(1);
  int64_t d_b = 0;
  if (b) {
    if (b->ndim() != 2 || b->shape(0) != n) throw py::value_error("b must be 2-D with a's rows");
    d_b = b->shape(1);
  }
  if (dst.shape(0) != n || dst.shape(1) != d_a + d_b) throw py::value_error("dst has the wrong shape");
  if (with_cos && (!b || d_a != d_b)) throw py::value_error("cosines need b with a's dimension");
  py::array_t<double> cos(with_cos ? n : 0);
  const T* pa = a.data();
  const T* pb = b ? b->data() : nullptr;
  float* pd = dst.mutable_data();
  double* pc = with_cos ? cos.mutable_data() : nullptr;
  cpu::PackStatus s;
  {
    py::gil_scoped_release release;
    s = cpu::pack_unit_rows<T>(pa, d_a, pb, d_b, n, pd, pc, threads > 0 ? threads : cpu::default_threads());
  }
  return py::make_tuple(static_cast<int>(s.problem), s.view, s.row, with_cos ? py::object(cos) : py::object(py::none()));
}

void register_pairs(py::module_& m) {
  m.def("pack_unit_rows", &pack_rows<float>, py::arg("a").noconvert(), py::arg("b").noconvert(),
        py::arg("dst").noconvert(), py::arg("with_cos"), py::arg("threads") = 0);
  m.def("pack_unit_rows_f16", &pack_rows<uint16_t>, py::arg("a").noconvert(),
        py::arg("b").noconvert(), py::arg("dst").noconvert(), py::arg("with_cos"),
        py::arg("threads") = 0, "pack_unit_rows for float16 inputs passed as their uint16 bits.");
  m.def("pack_unit_rows", &pack_rows<double>, py::arg("a").noconvert(), py::arg("b").noconvert(),
        py::arg("dst").noconvert(), py::arg("with_cos"), py::arg("threads") = 0,
        "Unit-normalise rows of a (and b) into dst (float32, side by side); returns "
        "(problem, view, row, cos): problem 0 ok, 1 NaN/inf, 2 zero row.");

  m.def(
      "pair_abs_sum",
      [](const F32& rows, std::optional<F32> cols, std::optional<F32> zscale, float c0,
         std::optional<I32> row_labels, std::optional<I32> col_labels, float c_label,
         std::optional<I64> row_ids, std::optional<I64> col_ids, bool squares,
         bool block_diagonal, int64_t tile, int threads, const py::object& progress) {
        check_2d(rows, "rows");
        cpu::PairAbsSumProblem p;
        p.rows = rows.data();
        p.n_rows = rows.shape(0);
        p.dim = rows.shape(1);
        p.symmetric = !cols.has_value();
        if (cols) {
          check_2d(*cols, "cols");
          if (cols->shape(1) != p.dim) throw py::value_error("rows and cols differ in dim");
          p.cols = cols->data();
          p.n_cols = cols->shape(0);
        } else {
          p.cols = p.rows;
          p.n_cols = p.n_rows;
        }
        if (zscale) {
          if (zscale->ndim() != 1 || zscale->shape(0) != p.dim)
            throw py::value_error("zscale must have one entry per column");
          p.zscale = zscale->data();
        }
        p.c0 = c0;
        if (row_labels.has_value() != col_labels.has_value())
          throw py::value_error("give both label arrays or neither");
        if (row_labels) {
          if (row_labels->size() != p.n_rows || col_labels->size() != p.n_cols)
            throw py::value_error("label arrays must match the row and column counts");
          p.row_labels = row_labels->data();
          p.col_labels = col_labels->data();
          p.c_label = c_label;
        }
        if (row_ids.has_value() != col_ids.has_value())
          throw py::value_error("give both id arrays or neither");
        if (row_ids) {
          if (row_ids->size() != p.n_rows || col_ids->size() != p.n_cols)
            throw py::value_error("id arrays must match the row and column counts");
          p.row_ids = row_ids->data();
          p.col_ids = col_ids->data();
        }
        p.squares = squares;
        p.block_diagonal = block_diagonal;
        cpu::Poll poll = make_poll(progress);
        cpu::PairAbsSumResult r = run_released([&] { return cpu::pair_abs_sum(p, tile, threads, poll); });
        auto to_array = [](const std::vector<double>& v) -> py::object {
          if (v.empty()) return py::none();
          return py::array_t<double>(static_cast<py::ssize_t>(v.size()), v.data());
        };
        py::array_t<double> row_sums(static_cast<py::ssize_t>(r.row_sums.size()), r.row_sums.data());
        return py::tuple(py::make_tuple(row_sums, to_array(r.row_sq_sums), to_array(r.col_sums)));
      },
      py::arg("rows").noconvert(), py::arg("cols").noconvert() = py::none(),
      py::arg("zscale").noconvert() = py::none(), py::arg("c0") = 0.0f,
      py::arg("row_labels").noconvert() = py::none(),
      py::arg("col_labels").noconvert() = py::none(), py::arg("c_label") = 0.0f,
      py::arg("row_ids").noconvert() = py::none(), py::arg("col_ids").noconvert() = py::none(),
      py::arg("squares") = false, py::arg("block_diagonal") = false, py::arg("tile") = 256,
      py::arg("threads") = 0, py::arg("progress") = py::none(),
      "(row_sums, row_sq_sums | None, col_sums | None) of |c0 + <zscale*rows_i, cols_k>| "
      "(+ c_label*[label_i != label_k]) in float64. Without cols: the symmetric form over "
      "i != k of one matrix.");

  m.def(
      "topk_inner",
      [](const F32& q, const F32& x, int k, int64_t x_offset, std::optional<I64> query_ids,
         int threads, const py::object& progress) {
        check_2d(q, "queries");
        check_2d(x, "database");
        if (q.shape(1) != x.shape(1)) throw py::value_error("queries and database differ in dim");
        if (query_ids && query_ids->size() != q.shape(0))
          throw py::value_error("query_ids must have one entry per query");
        const float* pq = q.data();
        const float* px = x.data();
        const int64_t nq = q.shape(0), nx = x.shape(0), dim = q.shape(1);
        const int64_t* ids = query_ids ? query_ids->data() : nullptr;
        cpu::Poll poll = make_poll(progress);
        cpu::TopK r = run_released([&] {
          return cpu::topk_inner(pq, nq, px, nx, dim, k, x_offset, ids, threads, poll);
        });
        py::array_t<float> values({nq, static_cast<int64_t>(k)});
        py::array_t<int64_t> indices({nq, static_cast<int64_t>(k)});
        std::copy(r.values.begin(), r.values.end(), values.mutable_data());
        std::copy(r.indices.begin(), r.indices.end(), indices.mutable_data());
        return py::make_tuple(values, indices);
      },
      py::arg("queries").noconvert(), py::arg("database").noconvert(), py::arg("k") = 1,
      py::arg("x_offset") = 0, py::arg("query_ids").noconvert() = py::none(),
      py::arg("threads") = 0, py::arg("progress") = py::none(),
      "(values, indices), each (nq, k): the k largest <q, x> per query, descending; indices "
      "are x_offset + database row; -inf / -1 where fewer than k rows exist.");

  m.def(
      "pair_extrema",
      [](const F32& x, int64_t tile, int threads, const py::object& progress) {
        check_2d(x, "x");
        cpu::Poll poll = make_poll(progress);
        const float* data = x.data();
        const int64_t n = x.shape(0), dim = x.shape(1);
        cpu::PairExtrema e = run_released([&] { return cpu::pair_extrema(data, n, dim, tile, threads, poll); });
        if (e.empty) return py::object(py::none());
        return py::object(py::make_tuple(e.min_value, e.min_i, e.min_k, e.max_value, e.max_i, e.max_k));
      },
      py::arg("x").noconvert(), py::arg("tile") = 256, py::arg("threads") = 0,
      py::arg("progress") = py::none(),
      "(min, i, k, max, i, k) of <x_i, x_k> over i != k, or None when there is no pair.");
}

}  // namespace alignscope::bindings
