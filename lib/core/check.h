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

// A configuration vlmlab cannot run (unknown key or activation, unsupported rope type, value out of
// range): the CLI maps it to exit code 2, every other Error to 1.
class ConfigError : public Error {
 public:
  using Error::Error;
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
