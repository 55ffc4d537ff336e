// Module <-> safetensors by HF name: round trip, and clear errors for missing, misshapen and
// unexpected tensors.
#include <catch2/catch.hpp>
#include <filesystem>

#include "lib/core/random.h"
#include "lib/nn/weights.h"
#include "lib/ops/ops.h"

using Catch::Matchers::Contains;

namespace {

vlm::DecoderBlockConfig tiny_block() {
  vlm::DecoderBlockConfig cfg;
  cfg.attn.hidden_size = 16;
  cfg.attn.num_heads = 4;
  cfg.attn.num_kv_heads = 2;
  cfg.mlp = vlm::GatedMlpConfig{.hidden_size = 16, .intermediate_size = 24};
  return cfg;
}

std::string temp_path(const char* name) {
  return (std::filesystem::temp_directory_path() / name).string();
}

}  // namespace

TEST_CASE("a module saved and loaded into a fresh one gives identical outputs", "[io][weights]") {
  vlm::Rng r1(1), r2(2), rx(3);
  vlm::DecoderBlock<float> a(tiny_block(), r1), b(tiny_block(), r2);
  const std::string path = temp_path("vlm_test_weights.safetensors");
  vlm::io::save_module(path, a, "model.layers.0.");
  const auto st = vlm::io::read_safetensors(path);
  CHECK(st.contains("model.layers.0.self_attn.q_proj.weight"));
  CHECK(st.contains("model.layers.0.mlp.down_proj.weight"));
  const auto rep = vlm::io::load_module(st, b, "model.layers.0.");
  CHECK(rep.loaded.size() == st.tensors.size());
  CHECK(rep.unexpected.empty());
  const vlm::Tensor x = vlm::Tensor::randn({2, 3, 16}, rx);
  vlm::AttnMask causal;
  causal.causal = true;
  vlm::NoGradGuard no_grad;
  CHECK(a.forward(x, nullptr, causal).to_vector() == b.forward(x, nullptr, causal).to_vector());
  std::filesystem::remove(path);
}

TEST_CASE("loading names the missing, misshapen or unexpected tensor and the file", "[io][weights]") {
  vlm::Rng r1(1);
  vlm::DecoderBlock<float> a(tiny_block(), r1);
  auto state = vlm::io::module_state(a, "blk.");
  const std::string path = temp_path("vlm_test_weights_bad.safetensors");

  auto missing = state;
  missing.erase("blk.mlp.up_proj.weight");
  vlm::io::write_safetensors(path, missing);
  CHECK_THROWS_WITH(vlm::io::load_module(path, a, "blk."),
                    Contains(path) && Contains("missing tensor \"blk.mlp.up_proj.weight\""));

  auto wrong = state;
  const std::vector<float> v(16 * 8, 0.0f);
  wrong["blk.self_attn.k_proj.weight"] = vlm::io::raw_f32({16, 8}, v);
  vlm::io::write_safetensors(path, wrong);
  CHECK_THROWS_WITH(vlm::io::load_module(path, a, "blk."),
                    Contains("\"blk.self_attn.k_proj.weight\" has shape [16, 8], the model expects [8, 16]"));

  auto extra = state;
  extra["blk.self_attn.rotary_emb.inv_freq"] = vlm::io::raw_f32({2}, std::vector<float>{1, 2});
  vlm::io::write_safetensors(path, extra);
  CHECK_THROWS_WITH(vlm::io::load_module(path, a, "blk."), Contains("rotary_emb.inv_freq"));
  const auto rep = vlm::io::load_module(path, a, "blk.", /*strict=*/false);
  CHECK(rep.unexpected == std::vector<std::string>{"blk.self_attn.rotary_emb.inv_freq"});
  std::filesystem::remove(path);
}
