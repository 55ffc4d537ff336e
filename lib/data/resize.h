// The image steps the HF image processors share, as transformers 5.17's default (torchvision)
// backend does them to an 8-bit RGB image on the CPU: to a tensor, antialiased resize, center crop,
// then rescale and normalize into channels-first floats. Images here are [H, W, C] float tensors that
// hold 8-bit values (0..255) until rescale_normalize_chw turns them into model inputs.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "lib/core/tensor.h"
#include "lib/data/image.h"

namespace vlm::data {

// HF image_utils OPENAI_CLIP_MEAN / OPENAI_CLIP_STD (also IDEFICS_STANDARD_MEAN / _STD).
inline constexpr std::array<double, 3> kOpenAiClipMean = {0.48145466, 0.4578275, 0.40821073};
inline constexpr std::array<double, 3> kOpenAiClipStd = {0.26862954, 0.26130258, 0.27577711};

// [H, W, 3] floats holding the image's 0..255 values (row-major HWC, as the image stores them).
// An image with a non-positive side or a pixel buffer of the wrong size is an Error.
Tensor image_to_tensor(const Image& image);

// Antialiased resizes of an 8-bit image held as [H, W, C] floats (integer values 0..255; anything
// else is an Error). They compute exactly what torch's uint8 CPU kernels compute for
// interpolate(mode="bilinear"/"bicubic", antialias=True, align_corners=False), which is what
// torchvision's resize runs for a uint8 image on an AVX2 CPU (bicubic: on any CPU): Pillow's
// ImagingResample. Per axis, output i is centred at scale·(i + 0.5) (scale = in / out); the filter
// (bilinear: triangle; bicubic: Keys cubic with a = −0.5) is widened by scale when downsampling;
// the weights are computed in double, normalised, then turned into int16 fixed point with the most
// precision bits that fit. The width is resized first and rounded to 8 bits, then the height; an
// axis whose size does not change is left untouched (so a same-size resize is the identity).
Tensor resize_bilinear_aa(const Tensor& image, int64_t out_h, int64_t out_w);
Tensor resize_bicubic_aa(const Tensor& image, int64_t out_h, int64_t out_w);

// (height, width) after HF get_resize_output_image_size(size=shortest_edge, default_to_square=False):
// the short side becomes `shortest_edge`, the long side int(shortest_edge · long / short).
std::pair<int64_t, int64_t> shortest_edge_size(int64_t height, int64_t width, int64_t shortest_edge);

// HF TorchvisionBackend.center_crop of [H, W, C]: a side smaller than the crop is first padded with 0
// ((crop − side) // 2 before, the rest after), then the window starts at int((side − crop) / 2).
Tensor center_crop(const Tensor& image, int64_t crop_h, int64_t crop_w);

// HF's fused rescale + normalize of [H, W, C] 8-bit values into [C, H, W] floats:
// (x − mean_c · (1 / rescale_factor)) / (std_c · (1 / rescale_factor)) in float32, as TorchvisionBackend folds
// rescale_factor into the float32 mean and std before torchvision's normalize. mean and std have one
// entry per channel.
Tensor rescale_normalize_chw(const Tensor& image, double rescale_factor, const std::vector<double>& mean,
                             const std::vector<double>& std);

}  // namespace vlm::data
