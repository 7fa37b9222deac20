// LabelPooling (ReLabel, Yun et al., CVPR 2021, arXiv 2101.05022): RoIAlign of sparse top-k label maps
// over crop boxes, evaluated sparsely (the [B, C, S, S] dense map is never built).
// Bit-identical to torchvision.ops.roi_align on the CPU (aligned=False, sampling_ratio=-1,
// spatial_scale=1, boxes fl(fl(box*S) - 0.5)): see ../shared/docs/label-pooling.md section 7.
#pragma once

#include <cstdint>

namespace luab::ops {

struct LabelPoolArgs {
  const float* scores;   // [B, K, S, S] float32, finite
  const void* indices;   // [B, K, S, S] int16 / int32 / int64 in [0, C), distinct along K per cell
  int index_bytes;       // 2, 4 or 8
  const float* boxes;    // [B, 4] float32 (x0, y0, x1, y1) normalised, 0 <= x0 < x1 <= 1
  int64_t B, K, S, C;
  int64_t out_h, out_w;  // pooled grid (1, 1 for the classic 1x1 target)
  bool legacy;           // true: hand roi_align (y0, x0, y1, x1) as the official ReLabel code does
  bool softmax;          // true: write ReLabel's targets softmax_c(pooled) instead (absent classes at 0)
  int n_threads;         // <= 0: OpenMP's default
};

// Validates every value (throws std::invalid_argument naming the argument), then writes the pooled
// scores out[B, C, out_h, out_w] (float32, fully overwritten), or their softmax over C when a.softmax.
void label_pool(const LabelPoolArgs& a, float* out);

}  // namespace luab::ops
