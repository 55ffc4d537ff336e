// Ref: transformers 5.17 models/fuyu/image_processing_fuyu.py (resize, pad, rescale/normalize,
// patchify_image) and processing_fuyu.py (replace_image_token, left padding).
#include "architectures/fuyu/preprocess.h"

#include <algorithm>
#include <cmath>

#include "lib/ops/ops.h"

namespace vlm::fuyu {

namespace {

// Indices and normalized weights of one output pixel along one axis (torch
// _compute_indices_min_size_weights_aa with the bilinear "triangle" filter, computed in float).
struct AaTaps {
  int64_t xmin = 0;
  std::vector<float> w;
};

std::vector<AaTaps> aa_taps(int64_t in_size, int64_t out_size) {
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  const float support = scale >= 1.0f ? 1.0f * scale : 1.0f;  // interp_size 2: (2 / 2) · scale
  const float invscale = scale >= 1.0f ? 1.0f / scale : 1.0f;
  std::vector<AaTaps> taps(static_cast<std::size_t>(out_size));
  for (int64_t i = 0; i < out_size; ++i) {
    const float center = scale * (static_cast<float>(i) + 0.5f);
    const int64_t xmin = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5f), 0);
    const int64_t xsize = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5f), in_size) - xmin;
    AaTaps& t = taps[static_cast<std::size_t>(i)];
    t.xmin = xmin;
    float total = 0.0f;
    for (int64_t j = 0; j < xsize; ++j) {
      const float x = std::abs((static_cast<float>(j + xmin) - center + 0.5f) * invscale);
      const float w = x < 1.0f ? 1.0f - x : 0.0f;
      t.w.push_back(w);
      total += w;
    }
    for (float& w : t.w) w = total != 0.0f ? w / total : 0.0f;
  }
  return taps;
}

}  // namespace

Tensor resize_bilinear_aa(const Tensor& image, int64_t out_h, int64_t out_w) {
  VLM_CHECK(image.ndim() == 3, "fuyu resize: image must be [H, W, C], got " << shape_str(image.shape()));
  VLM_CHECK(out_h > 0 && out_w > 0, "fuyu resize: output size must be positive, got " << out_h << "x" << out_w);
  const int64_t H = image.dim(0), W = image.dim(1), C = image.dim(2);
  const std::vector<AaTaps> th = aa_taps(H, out_h), tw = aa_taps(W, out_w);
  const float* src = image.data();
  // Horizontal pass [H, out_w, C], then vertical [out_h, out_w, C].
  std::vector<float> tmp(static_cast<std::size_t>(H * out_w * C));
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < out_w; ++x) {
      const AaTaps& t = tw[static_cast<std::size_t>(x)];
      for (int64_t c = 0; c < C; ++c) {
        float acc = 0.0f;
        for (std::size_t j = 0; j < t.w.size(); ++j)
          acc += t.w[j] * src[(y * W + t.xmin + static_cast<int64_t>(j)) * C + c];
        tmp[static_cast<std::size_t>((y * out_w + x) * C + c)] = acc;
      }
    }
  std::vector<float> out(static_cast<std::size_t>(out_h * out_w * C));
  for (int64_t y = 0; y < out_h; ++y) {
    const AaTaps& t = th[static_cast<std::size_t>(y)];
    for (int64_t x = 0; x < out_w; ++x)
      for (int64_t c = 0; c < C; ++c) {
        float acc = 0.0f;
        for (std::size_t j = 0; j < t.w.size(); ++j)
          acc += t.w[j] * tmp[static_cast<std::size_t>(((t.xmin + static_cast<int64_t>(j)) * out_w + x) * C + c)];
        out[static_cast<std::size_t>((y * out_w + x) * C + c)] = std::clamp(std::nearbyint(acc), 0.0f, 255.0f);
      }
  }
  return Tensor::from({out_h, out_w, C}, out);
}

ProcessedImage preprocess_image(const Tensor& image, const ImageProcessorOptions& opt) {
  VLM_CHECK(image.ndim() == 3 && image.dim(0) > 0 && image.dim(1) > 0 && image.dim(2) > 0,
            "fuyu preprocess: image must be [H, W, C] with positive sides, got " << shape_str(image.shape()));
  const int64_t ph = opt.patch_height, pw = opt.patch_width;
  VLM_CHECK(ph > 0 && pw > 0, "fuyu preprocess: patch size must be positive, got " << ph << "x" << pw);
  VLM_CHECK(opt.target_height > 0 && opt.target_width > 0, "fuyu preprocess: target size must be positive");
  ProcessedImage r;
  Tensor img = image;
  int64_t h = image.dim(0), w = image.dim(1);
  const int64_t C = image.dim(2);
  if (opt.do_resize && (h > opt.target_height || w > opt.target_width)) {
    // FuyuImageProcessor.resize: scale = min(th/h, tw/w) in Python floats, int() truncation.
    const double sh = static_cast<double>(opt.target_height) / static_cast<double>(h);
    const double sw = static_cast<double>(opt.target_width) / static_cast<double>(w);
    const double s = std::min(sh, sw);
    const auto nh = static_cast<int64_t>(static_cast<double>(h) * s);
    const auto nw = static_cast<int64_t>(static_cast<double>(w) * s);
    img = resize_bilinear_aa(image, nh, nw);
    h = nh;
    w = nw;
  }
  r.resized_h = h;
  r.resized_w = w;
  // Pad to the box, then crop to ceil(side / p) · p (capped by the box): pad to that size directly.
  int64_t H = h, W = w;
  if (opt.do_pad) {
    VLM_CHECK(h <= opt.target_height && w <= opt.target_width,
              "fuyu preprocess: image " << h << "x" << w << " exceeds the pad size " << opt.target_height << "x"
                                        << opt.target_width << " (enable do_resize)");
    H = std::min(opt.target_height, (h + ph - 1) / ph * ph);
    W = std::min(opt.target_width, (w + pw - 1) / pw * pw);
  }
  VLM_CHECK(H % ph == 0 && W % pw == 0,
            "fuyu preprocess: image " << H << "x" << W << " is not divisible by the patch size " << ph << "x" << pw);
  r.grid_h = H / ph;
  r.grid_w = W / pw;
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
  in.set_floats("image_patches", Tensor::from({n_rows, patch_dim}, patches));
  return in;
}

}  // namespace vlm::fuyu
