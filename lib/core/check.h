// Errors: one exception type for every user-facing failure, and a check macro that builds its message.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace vlm {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace vlm

// VLM_CHECK(cond, "x has " << n << " rows"): throws vlm::Error with the streamed message.
#define VLM_CHECK(cond, msg)                  \
  do {                                        \
    if (!(cond)) {                            \
      std::ostringstream vlm_check_os_;       \
      vlm_check_os_ << msg;                   \
      throw ::vlm::Error(vlm_check_os_.str()); \
    }                                         \
  } while (0)
