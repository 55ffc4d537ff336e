// Fuyu image preprocessing and prompt layout, as transformers 5.17 FuyuImageProcessor /
// FuyuProcessor do it (models/fuyu/{image_processing,processing}_fuyu.py; spec
// docs/architectures.md §2.2):
//   1. resize only if the image is larger than the target box (keep aspect: scale = min(th/h, tw/w),
//      new side = int(side · scale), antialiased bilinear on 8-bit values: lib/data/resize.h);
//   2. pad bottom/right with padding_value (1.0 in raw 0..255 units, before rescale) to the box,
//      then crop to min(box, ceil(side / p) · p) — the same as padding to the next multiple of p;
//   3. rescale ×1/255, normalize (x − 0.5) / 0.5 (a padded pixel becomes (1/255 − 0.5)/0.5 = −0.99216);
//   4. patchify in row-major grid order, each patch flattened (py, px, c): [N, ph·pw·C].
// Prompt per sample: [image_token × grid_w, newline] × grid_h, BOS, text tokens (the processor's text
// ends in the beginning-of-answer token <0x04>); a batch is left-padded with pad id 0.
#pragma once

#include <cstdint>
#include <vector>

#include "architectures/inputs.h"
#include "lib/core/tensor.h"

namespace vlm::fuyu {

struct ImageProcessorOptions {
  int64_t patch_height = 30, patch_width = 30;
  int64_t target_height = 1080, target_width = 1920;  // size {height, width}
  bool do_resize = true;
  bool do_pad = true;
  double padding_value = 1.0;  // raw units (before rescale)
  double rescale_factor = 1.0 / 255.0;
  double image_mean = 0.5, image_std = 0.5;
};

struct ProcessedImage {
  Tensor patches;                        // [grid_h · grid_w, ph · pw · C], (py, px, c) per row
  int64_t grid_h = 0, grid_w = 0;        // patches per column / row
  int64_t resized_h = 0, resized_w = 0;  // after the (optional) resize, before padding
};

// The sizes preprocess_image gives an image of height x width, known without its pixels.
struct ImageGeometry {
  int64_t resized_h = 0, resized_w = 0;  // after the (optional) resize
  int64_t padded_h = 0, padded_w = 0;    // after padding / cropping to whole patches
  int64_t grid_h = 0, grid_w = 0;        // padded / patch size
};
ImageGeometry image_geometry(int64_t height, int64_t width, const ImageProcessorOptions& opt = {});

// image: [H, W, C] raw pixel values (0..255 as floats, HWC). The resize is data::resize_bilinear_aa
// (8-bit values in, 8-bit values out, as torchvision resizes a uint8 image).
ProcessedImage preprocess_image(const Tensor& image, const ImageProcessorOptions& opt = {});

struct PromptTokens {
  int64_t image_token_id = 71011;  // |SPEAKER| (config.image_token_id)
  int64_t newline_id = 71019;      // |NEWLINE|
  int64_t bos_id = 1;              // <s>
  int64_t pad_id = 0;
};

// [image × grid_w, newline] × grid_h.
std::vector<int64_t> image_prompt_ids(int64_t grid_h, int64_t grid_w, const PromptTokens& tok = {});
// One sample: image_prompt_ids, BOS, text_ids.
std::vector<int64_t> sample_ids(int64_t grid_h, int64_t grid_w, const std::vector<int64_t>& text_ids,
                                const PromptTokens& tok = {});

struct Sample {
  ProcessedImage image;
  std::vector<int64_t> text_ids;
};
// Model inputs for a batch: input_ids / attention_mask [B, T] left-padded with pad_id / 0, and
// image_patches [N_total, p·p·C] (all samples' patches concatenated in batch order, as the processor).
Inputs make_inputs(const std::vector<Sample>& samples, const PromptTokens& tok = {});

}  // namespace vlm::fuyu
