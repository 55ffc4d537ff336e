// Ref: transformers 5.17 models/fuyu/image_processing_fuyu.py (resize, pad, rescale/normalize,
// patchify_image) and processing_fuyu.py (replace_image_token, left padding). The resize itself is
// the shared lib/data one (torchvision's antialiased bilinear on 8-bit values).
#include "architectures/fuyu/preprocess.h"

#include <algorithm>
#include <cmath>

#include "lib/data/resize.h"
#include "lib/ops/ops.h"

namespace vlm::fuyu {

ImageGeometry image_geometry(int64_t height, int64_t width, const ImageProcessorOptions& opt) {
  VLM_CHECK(height > 0 && width > 0, "fuyu preprocess: image size " << height << "x" << width << " must be positive");
  const int64_t ph = opt.patch_height, pw = opt.patch_width;
  VLM_CHECK(ph > 0 && pw > 0, "fuyu preprocess: patch size must be positive, got " << ph << "x" << pw);
  VLM_CHECK(opt.target_height > 0 && opt.target_width > 0, "fuyu preprocess: target size must be positive");
  ImageGeometry g;
  g.resized_h = height;
  g.resized_w = width;
  if (opt.do_resize && (height > opt.target_height || width > opt.target_width)) {
    // FuyuImageProcessor.resize: scale = min(th/h, tw/w) in Python floats, int() truncation.
    const double sh = static_cast<double>(opt.target_height) / static_cast<double>(height);
    const double sw = static_cast<double>(opt.target_width) / static_cast<double>(width);
    const double s = std::min(sh, sw);
    g.resized_h = static_cast<int64_t>(static_cast<double>(height) * s);
    g.resized_w = static_cast<int64_t>(static_cast<double>(width) * s);
    VLM_CHECK(g.resized_h > 0 && g.resized_w > 0, "fuyu preprocess: image " << height << "x" << width
                                                                            << " resizes to nothing in the box "
                                                                            << opt.target_height << "x"
                                                                            << opt.target_width);
  }
  // Pad to the box, then crop to ceil(side / p) · p (capped by the box): pad to that size directly.
  g.padded_h = g.resized_h;
  g.padded_w = g.resized_w;
  if (opt.do_pad) {
    VLM_CHECK(g.resized_h <= opt.target_height && g.resized_w <= opt.target_width,
              "fuyu preprocess: image " << g.resized_h << "x" << g.resized_w << " exceeds the pad size "
                                        << opt.target_height << "x" << opt.target_width << " (enable do_resize)");
    g.padded_h = std::min(opt.target_height, (g.resized_h + ph - 1) / ph * ph);
    g.padded_w = std::min(opt.target_width, (g.resized_w + pw - 1) / pw * pw);
  }
  VLM_CHECK(g.padded_h % ph == 0 && g.padded_w % pw == 0,
            "fuyu preprocess: image " << g.padded_h << "x" << g.padded_w << " is not divisible by the patch size "
                                      << ph << "x" << pw);
  g.grid_h = g.padded_h / ph;
  g.grid_w = g.padded_w / pw;
  return g;
}

ProcessedImage preprocess_image(const Tensor& image, const ImageProcessorOptions& opt) {
  VLM_CHECK(image.ndim() == 3 && image.dim(0) > 0 && image.dim(1) > 0 && image.dim(2) > 0,
            "fuyu preprocess: image must be [H, W, C] with positive sides, got " << shape_str(image.shape()));
  const ImageGeometry g = image_geometry(image.dim(0), image.dim(1), opt);
  const int64_t ph = opt.patch_height, pw = opt.patch_width, C = image.dim(2);
  const int64_t h = g.resized_h, w = g.resized_w;
  const Tensor img = (h == image.dim(0) && w == image.dim(1)) ? image : data::resize_bilinear_aa(image, h, w);
  ProcessedImage r;
  r.resized_h = h;
  r.resized_w = w;
  r.grid_h = g.grid_h;
  r.grid_w = g.grid_w;
  const float* src = img.data();
  const int64_t row_len = ph * pw * C;
  std::vector<float> out(static_cast<std::size_t>(r.grid_h * r.grid_w * row_len));
  for (int64_t gy = 0; gy < r.grid_h; ++gy)
    for (int64_t gx = 0; gx < r.grid_w; ++gx)
      for (int64_t py = 0; py < ph; ++py)
        for (int64_t px = 0; px < pw; ++px)
          for (int64_t c = 0; c < C; ++c) {
            const int64_t y = gy * ph + py, x = gx * pw + px;
            const double raw = (y < h && x < w) ? static_cast<double>(src[(y * w + x) * C + c]) : opt.padding_value;
            const double v = (raw * opt.rescale_factor - opt.image_mean) / opt.image_std;
            out[static_cast<std::size_t>((gy * r.grid_w + gx) * row_len + (py * pw + px) * C + c)] =
                static_cast<float>(v);
          }
  r.patches = Tensor::from({r.grid_h * r.grid_w, row_len}, out);
  return r;
}

std::vector<int64_t> image_prompt_ids(int64_t grid_h, int64_t grid_w, const PromptTokens& tok) {
  VLM_CHECK(grid_h >= 0 && grid_w >= 0, "fuyu prompt: negative grid " << grid_h << "x" << grid_w);
  std::vector<int64_t> ids;
  for (int64_t r = 0; r < grid_h; ++r) {
    ids.insert(ids.end(), static_cast<std::size_t>(grid_w), tok.image_token_id);
    ids.push_back(tok.newline_id);
  }
  return ids;
}

std::vector<int64_t> sample_ids(int64_t grid_h, int64_t grid_w, const std::vector<int64_t>& text_ids,
                                const PromptTokens& tok) {
  std::vector<int64_t> ids = image_prompt_ids(grid_h, grid_w, tok);
  ids.push_back(tok.bos_id);
  ids.insert(ids.end(), text_ids.begin(), text_ids.end());
  return ids;
}

Inputs make_inputs(const std::vector<Sample>& samples, const PromptTokens& tok) {
  VLM_CHECK(!samples.empty(), "fuyu make_inputs: no samples");
  std::vector<std::vector<int64_t>> rows;
  std::size_t T = 0;
  int64_t patch_dim = -1, n_rows = 0;
  std::vector<float> patches;
  for (const Sample& s : samples) {
    rows.push_back(sample_ids(s.image.grid_h, s.image.grid_w, s.text_ids, tok));
    T = std::max(T, rows.back().size());
    const Tensor& p = s.image.patches;
    VLM_CHECK(p.ndim() == 2 && p.dim(0) == s.image.grid_h * s.image.grid_w,
              "fuyu make_inputs: patches " << shape_str(p.shape()) << " do not fit the grid " << s.image.grid_h << "x"
                                           << s.image.grid_w);
    VLM_CHECK(patch_dim < 0 || p.dim(1) == patch_dim, "fuyu make_inputs: samples have different patch sizes");
    patch_dim = p.dim(1);
    n_rows += p.dim(0);
    const std::vector<float> v = p.to_vector();
    patches.insert(patches.end(), v.begin(), v.end());
  }
  const auto B = static_cast<int64_t>(samples.size());
  std::vector<int64_t> ids, mask;
  for (const auto& r : rows) {  // left padding, as the processor's tokenizer.pad(padding_side="left")
    const std::size_t pad = T - r.size();
    ids.insert(ids.end(), pad, tok.pad_id);
    mask.insert(mask.end(), pad, 0);
    ids.insert(ids.end(), r.begin(), r.end());
    mask.insert(mask.end(), r.size(), 1);
  }
  Inputs in;
  in.set_ints("input_ids", {B, static_cast<int64_t>(T)}, ids);
  in.set_ints("attention_mask", {B, static_cast<int64_t>(T)}, mask);
  in.set_floats("image_patches", {n_rows, patch_dim}, std::move(patches));
  return in;
}

}  // namespace vlm::fuyu
