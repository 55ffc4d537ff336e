// PNG files for looking at what the models see: images as they are, and whole samples (images with
// the question and answer written underneath).
#pragma once

#include <string>

#include "lib/data/image.h"
#include "lib/data/task.h"

namespace vlm::data {

// 8-bit RGB PNG; throws vlm::Error naming the path on failure.
void write_png(const std::string& path, const Image& img);
// Any PNG libpng reads, converted to 8-bit RGB (transparency composited onto white).
Image read_png(const std::string& path);

// The sample's images side by side, each scaled up by an integer factor (nearest neighbour) so small
// images are visible, with the prompt, the answer and the subtype written underneath in the bitmap
// font (lowercase drawn as capitals).
void write_sample_png(const std::string& path, const Sample& sample);
// The picture write_sample_png writes, for callers that want it in memory.
Image render_sample(const Sample& sample);

}  // namespace vlm::data
