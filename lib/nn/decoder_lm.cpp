#include "lib/nn/decoder_lm.h"

#include "lib/ops/ops.h"

namespace vlm {

DecoderLm::DecoderLm(const DecoderLmConfig& cfg, Rng& rng)
    : embed_tokens(cfg.vocab_size, cfg.block.attn.hidden_size, rng, cfg.init_std),
      norm(cfg.block.attn.hidden_size, cfg.final_norm),
      cfg_(cfg) {
  VLM_CHECK(cfg.num_layers >= 0 && cfg.vocab_size > 0, "decoder LM needs vocab_size > 0 and num_layers >= 0");
  for (int i = 0; i < cfg.num_layers; ++i) layers.push_back(std::make_unique<DecoderBlock<float>>(cfg.block, rng));
  if (!cfg.tie_word_embeddings) lm_head.emplace(hidden_size(), cfg.vocab_size, false, rng,
                                                 cfg.lm_head_init_std > 0 ? cfg.lm_head_init_std : cfg.init_std);
}

Tensor DecoderLm::embed(const std::vector<int64_t>& ids, const Shape& shape) const {
  return embed_tokens.forward(ids, shape);
}

Tensor DecoderLm::forward(Tensor h, const RopeTables<float>* rope, const AttnMask& mask, KvCache<float>* cache,
                          const LayerHook& before_layer, int64_t keep_last) const {
  VLM_CHECK(keep_last >= 0, "decoder LM: keep_last " << keep_last << " < 0");
  for (std::size_t i = 0; i < layers.size(); ++i) {
    if (before_layer) h = before_layer(static_cast<int>(i), h);
    h = layers[i]->forward(h, rope, mask, cache, static_cast<int>(i), i + 1 == layers.size() ? keep_last : 0);
  }
  return norm.forward(last_positions(h, keep_last));  // already kept by the last layer, unless there is none
}

Tensor DecoderLm::logits(const Tensor& hidden) const {
  if (lm_head) return lm_head->forward(hidden);
  return matmul(hidden, embed_tokens.weight, false, true);
}

KvCache<float> DecoderLm::make_cache(int64_t batch) const {
  const AttentionConfig& a = layers.empty() ? cfg_.block.attn : layers[0]->self_attn.config();
  return KvCache<float>(static_cast<int>(layers.size()), batch, a.num_kv_heads, a.head_dim, a.head_dim);
}

void DecoderLm::visit_parts(const std::string& model_prefix, const std::string& head_prefix,
                            const ParamVisitor<float>& v) {
  embed_tokens.visit(model_prefix + "embed_tokens.", v);
  for (std::size_t i = 0; i < layers.size(); ++i)
    layers[i]->visit(model_prefix + "layers." + std::to_string(i) + ".", v);
  norm.visit(model_prefix + cfg_.final_norm_name + ".", v);
  if (lm_head) lm_head->visit(head_prefix, v);
}

}  // namespace vlm
