// Ref: transformers 5.17 image_processing_backends.py (TorchvisionBackend.resize / center_crop /
// _rescale_and_normalize), image_transforms.py (get_resize_output_image_size); torchvision 0.26
// transforms/v2/functional/_geometry.py (resize_image: native uint8 for bicubic, and for bilinear on
// AVX2); torch aten/src/ATen/native/cpu/UpSampleKernel.cpp (the antialiased uint8 kernels:
// _compute_indices_min_size_weights_aa, _compute_index_ranges_int16_weights, the horizontal then
// vertical single-axis passes).
#include "lib/data/resize.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace vlm::data {

namespace {

// Antialiasing filters of torch's upsample kernels (aa_filter), evaluated in double.
double triangle(double x) {
  x = std::abs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Keys cubic convolution with a = −0.5 (Pillow's bicubic), in torch's cubic_convolution1/2 forms so
// the weights round the same way.
double keys_cubic(double x) {
  constexpr double a = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
  return 0.0;
}

// One axis of a resize: for output i, taps xmin[i] .. xmin[i] + xsize[i] − 1 with int16 weights
// w[i · stride + j] in fixed point with `precision` fractional bits.
struct AxisTaps {
  std::vector<int64_t> xmin, xsize;
  std::vector<int32_t> w;
  int64_t stride = 0;
  int precision = 0;
};

AxisTaps axis_taps(int64_t in_size, int64_t out_size, double (*filter)(double), double interp_size) {
  AxisTaps t;
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double support = scale >= 1.0 ? (interp_size * 0.5) * scale : interp_size * 0.5;
  const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  t.stride = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  std::vector<double> wd(static_cast<std::size_t>(out_size * t.stride), 0.0);
  double w_max = 0.0;
  for (int64_t i = 0; i < out_size; ++i) {
    const double center = scale * (static_cast<double>(i) + 0.5);
    const int64_t xmin = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t xsize =
        std::clamp<int64_t>(std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size) - xmin, 0, t.stride);
    double* w = wd.data() + i * t.stride;
    double total = 0.0;
    for (int64_t j = 0; j < xsize; ++j) {
      w[j] = filter((static_cast<double>(j + xmin) - center + 0.5) * invscale);
      total += w[j];
    }
    if (total != 0.0)
      for (int64_t j = 0; j < xsize; ++j) {
        w[j] /= total;
        w_max = std::max(w_max, w[j]);
      }
    t.xmin.push_back(xmin);
    t.xsize.push_back(xsize);
  }
  // The most fractional bits that keep the largest weight inside int16.
  for (t.precision = 0; t.precision < 22; ++t.precision) {
    const auto next = static_cast<int>(0.5 + w_max * static_cast<double>(1 << (t.precision + 1)));
    if (next >= (1 << 15)) break;
  }
  t.w.resize(wd.size());
  for (std::size_t k = 0; k < wd.size(); ++k) {
    const double v = wd[k] * static_cast<double>(1 << t.precision);
    t.w[k] = static_cast<int16_t>(v < 0.0 ? v - 0.5 : v + 0.5);
  }
  return t;
}

// One fixed-point pass along an axis of an [H, W, C] 8-bit image: `outer` lines of `n_in` samples,
// each sample `step` values apart, `inner` interleaved values per sample (the channels, or a whole
// row for the vertical pass).
std::vector<uint8_t> resample_axis(const std::vector<uint8_t>& src, int64_t outer, int64_t n_in, int64_t inner,
                                   const AxisTaps& t) {
  const auto n_out = static_cast<int64_t>(t.xmin.size());
  std::vector<uint8_t> dst(static_cast<std::size_t>(outer * n_out * inner));
  const int64_t half = int64_t{1} << (t.precision - 1);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < n_out; ++i) {
      const int32_t* w = t.w.data() + i * t.stride;
      const uint8_t* line = src.data() + (o * n_in + t.xmin[static_cast<std::size_t>(i)]) * inner;
      uint8_t* out = dst.data() + (o * n_out + i) * inner;
      for (int64_t k = 0; k < inner; ++k) {
        int64_t acc = half;  // rounds the final shift to nearest
        for (int64_t j = 0; j < t.xsize[static_cast<std::size_t>(i)]; ++j) acc += int64_t{line[j * inner + k]} * w[j];
        out[k] = static_cast<uint8_t>(std::clamp<int64_t>(acc >> t.precision, 0, 255));
      }
    }
  return dst;
}

Tensor resize_aa(const Tensor& image, int64_t out_h, int64_t out_w, double (*filter)(double), double interp_size,
                 const char* what) {
  VLM_CHECK(image.ndim() == 3 && image.dim(0) > 0 && image.dim(1) > 0 && image.dim(2) > 0,
            what << ": image must be [H, W, C] with positive sides, got " << shape_str(image.shape()));
  VLM_CHECK(out_h > 0 && out_w > 0, what << ": output size must be positive, got " << out_h << "x" << out_w);
  const int64_t H = image.dim(0), W = image.dim(1), C = image.dim(2);
  std::vector<uint8_t> px(static_cast<std::size_t>(image.numel()));
  const float* src = image.data();
  for (std::size_t i = 0; i < px.size(); ++i) {
    const float v = src[i];
    VLM_CHECK(v >= 0.0f && v <= 255.0f && v == std::nearbyint(v),
              what << ": the image must hold 8-bit values (integers 0..255), got " << v << " at index " << i);
    px[i] = static_cast<uint8_t>(v);
  }
  if (out_w != W) px = resample_axis(px, H, W, C, axis_taps(W, out_w, filter, interp_size));
  if (out_h != H) px = resample_axis(px, 1, H, out_w * C, axis_taps(H, out_h, filter, interp_size));
  return Tensor::from({out_h, out_w, C}, std::vector<float>(px.begin(), px.end()));
}

}  // namespace

Tensor image_to_tensor(const Image& image) {
  VLM_CHECK(image.height > 0 && image.width > 0, "image: size " << image.height << "x" << image.width
                                                                << " must be positive");
  VLM_CHECK(static_cast<int64_t>(image.pixels.size()) == image.height * image.width * 3,
            "image: " << image.pixels.size() << " pixel bytes for " << image.height << "x" << image.width
                      << " RGB (expected " << image.height * image.width * 3 << ")");
  return Tensor::from({image.height, image.width, 3}, std::vector<float>(image.pixels.begin(), image.pixels.end()));
}

Tensor resize_bilinear_aa(const Tensor& image, int64_t out_h, int64_t out_w) {
  return resize_aa(image, out_h, out_w, &triangle, 2.0, "bilinear resize");
}

Tensor resize_bicubic_aa(const Tensor& image, int64_t out_h, int64_t out_w) {
  return resize_aa(image, out_h, out_w, &keys_cubic, 4.0, "bicubic resize");
}

std::pair<int64_t, int64_t> shortest_edge_size(int64_t height, int64_t width, int64_t shortest_edge) {
  VLM_CHECK(height > 0 && width > 0 && shortest_edge > 0, "resize: image " << height << "x" << width
                                                                           << " and shortest_edge " << shortest_edge
                                                                           << " must be positive");
  const int64_t short_side = std::min(height, width), long_side = std::max(height, width);
  // Python int(size * long / short): true division, then truncation.
  const auto new_long = static_cast<int64_t>(static_cast<double>(shortest_edge * long_side) /
                                             static_cast<double>(short_side));
  return width <= height ? std::pair{new_long, shortest_edge} : std::pair{shortest_edge, new_long};
}

Tensor center_crop(const Tensor& image, int64_t crop_h, int64_t crop_w) {
  VLM_CHECK(image.ndim() == 3, "center crop: image must be [H, W, C], got " << shape_str(image.shape()));
  VLM_CHECK(crop_h > 0 && crop_w > 0, "center crop: crop size must be positive, got " << crop_h << "x" << crop_w);
  const int64_t H = image.dim(0), W = image.dim(1), C = image.dim(2);
  // Padding (left/top gets the smaller half), then the crop window inside the padded image.
  const int64_t pad_top = crop_h > H ? (crop_h - H) / 2 : 0, pad_left = crop_w > W ? (crop_w - W) / 2 : 0;
  const int64_t Hp = std::max(H, crop_h), Wp = std::max(W, crop_w);
  const auto top = static_cast<int64_t>(static_cast<double>(Hp - crop_h) / 2.0);
  const auto left = static_cast<int64_t>(static_cast<double>(Wp - crop_w) / 2.0);
  std::vector<float> out(static_cast<std::size_t>(crop_h * crop_w * C), 0.0f);
  const float* src = image.data();
  for (int64_t y = 0; y < crop_h; ++y) {
    const int64_t sy = y + top - pad_top;
    if (sy < 0 || sy >= H) continue;
    for (int64_t x = 0; x < crop_w; ++x) {
      const int64_t sx = x + left - pad_left;
      if (sx < 0 || sx >= W) continue;
      std::copy_n(src + (sy * W + sx) * C, C, out.begin() + (y * crop_w + x) * C);
    }
  }
  return Tensor::from({crop_h, crop_w, C}, out);
}

Tensor rescale_normalize_chw(const Tensor& image, double rescale_factor, const std::vector<double>& mean,
                             const std::vector<double>& std) {
  VLM_CHECK(image.ndim() == 3, "normalize: image must be [H, W, C], got " << shape_str(image.shape()));
  const int64_t H = image.dim(0), W = image.dim(1), C = image.dim(2);
  VLM_CHECK(static_cast<int64_t>(mean.size()) == C && static_cast<int64_t>(std.size()) == C,
            "normalize: " << mean.size() << " means and " << std.size() << " stds for " << C << " channels");
  VLM_CHECK(rescale_factor > 0.0, "normalize: rescale_factor must be positive, got " << rescale_factor);
  // float32 tensors: torch.tensor(mean) * (1.0 / rescale_factor), then (x - m) / s per element.
  const auto inv = static_cast<float>(1.0 / rescale_factor);
  std::vector<float> m(static_cast<std::size_t>(C)), s(static_cast<std::size_t>(C));
  for (std::size_t c = 0; c < m.size(); ++c) {
    m[c] = static_cast<float>(mean[c]) * inv;
    s[c] = static_cast<float>(std[c]) * inv;
    VLM_CHECK(s[c] != 0.0f, "normalize: image_std[" << c << "] is 0");
  }
  std::vector<float> out(static_cast<std::size_t>(C * H * W));
  const float* src = image.data();
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      for (int64_t c = 0; c < C; ++c) {
        const float d = src[(y * W + x) * C + c] - m[static_cast<std::size_t>(c)];
        out[static_cast<std::size_t>((c * H + y) * W + x)] = d / s[static_cast<std::size_t>(c)];
      }
  return Tensor::from({C, H, W}, out);
}

}  // namespace vlm::data
