// Test hooks: moments at which a test can stop vlmlab for good (SIGKILL) without racing it.
//
// When the environment variable VLMLAB_TEST_PAUSE names a pause point (e.g. "after-step:3"), the
// process that reaches that point writes the point's name to the file VLMLAB_TEST_PAUSE_FILE (if
// set; written whole, then renamed into place) and then sleeps until it is killed. A test waits for
// that file, then kills: the kill lands at the chosen moment however loaded the machine is. Without
// the variable (every normal run) a pause point costs one comparison. The points are listed in
// README.md ("Testing").
#pragma once

#include <string>

namespace vlm {

void test_pause_point(const std::string& point);
// Whether VLMLAB_TEST_PAUSE is set at all: a hot loop asks this before building a point's name.
bool test_pauses_enabled();

}  // namespace vlm
