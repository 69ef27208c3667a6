// The arithmetic of the structure term, shared by the CPU engine and the CUDA kernels.
//
// Each view's distance is an affine map of the cosine similarity G = <u, v> of unit vectors:
//     D = offset + slope * G.
// A profile fixes (lo, hi) on the cosine distance d = 1 - G and maps D = (d - lo) / (hi - lo),
// so offset = (1 - lo) / (hi - lo) and slope = -1 / (hi - lo). With both views affine,
//     D_A(i,k) - D_B(i,k) = c0 + <z_i, w_k>,  z_i = [sA a_i, sB b_i],  w_k = [a_k, b_k],
// and the structure term is one GEMM of inner dimension d_A + d_B with the epilogue |c0 + x|.
#pragma once

#include <cmath>

#include "common/host_device.h"

namespace alignscope {

struct AffineDistance {
  double offset;  // D at G = 0
  double slope;   // dD / dG
};

// (lo, hi) on the cosine distance -> affine map of the cosine similarity. A degenerate range
// (hi <= lo: every distance equal) carries no information and maps to the constant 0.
ALIGNSCOPE_HD AffineDistance cosine_distance_map(double lo, double hi) {
  if (!(hi > lo)) return AffineDistance{0.0, 0.0};
  const double inv = 1.0 / (hi - lo);
  return AffineDistance{(1.0 - lo) * inv, -inv};
}

struct StructureConstants {
  double c0;       // constant inside the absolute value
  double scale_a;  // multiplies the view-A half of z
  double scale_b;  // multiplies the view-B half of z
  double c_label;  // multiplies [label_i != label_k] (label view only)
};

// Two embedding views: D_A - D_B = (oA - oB) + sA*G_A - sB*G_B.
ALIGNSCOPE_HD StructureConstants embedding_structure_constants(AffineDistance a, AffineDistance b) {
  return StructureConstants{a.offset - b.offset, a.slope, -b.slope, 0.0};
}

// View A embedded, view B given by labels with D_B = [label_i != label_k].
ALIGNSCOPE_HD StructureConstants label_structure_constants(AffineDistance a) {
  return StructureConstants{a.offset, a.slope, 0.0, -1.0};
}

// One pair's contribution |D_A - D_B| from the GEMM value and the label indicator.
ALIGNSCOPE_HD float pair_term(float c0, float dot, float c_label, bool labels_differ) {
  return fabsf(c0 + dot + (labels_differ ? c_label : 0.0f));
}

}  // namespace alignscope
