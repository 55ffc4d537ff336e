"""Counts Catch2 test cases from meson's testlog.json files and prints 'N passed, N failed'.

A libFuzzer run (the fuzz suite of a -Dfuzz=enabled build, fuzz/run.sh) counts as one test case:
passed when it exits 0 after libFuzzer's "Done N runs" line, failed otherwise (a crash, a
sanitizer report, a leak, a timeout or out-of-memory on one input).

A suite that exits non-zero without a failing test case in its summary (a crash, a sanitizer
report at exit, a timeout) counts as one more failure, so nothing can fail silently.
Exit status: 0 only if nothing failed.
"""
import json
import re
import sys

ALL_PASSED = re.compile(r"All tests passed \((\d+) assertions? in (\d+) test cases?\)")
SUMMARY = re.compile(r"test cases:\s*(\d+)\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed")
ONLY_FAILED = re.compile(r"test cases:\s*(\d+)\s*\|\s*(\d+) failed")
FUZZ_DONE = re.compile(r"^Done (\d+) runs in (\d+) second", re.M)

passed = failed = skipped = 0
for path in sys.argv[1:]:
    build = path.split("/")[0]
    with open(path) as f:
        for line in f:
            t = json.loads(line)
            out = t.get("stdout", "") or ""
            name, rc = t["name"], t.get("returncode")
            if t.get("result") == "SKIP" or rc == 77:
                skipped += 1
                print(f"{build}/{name}: skipped")
                continue
            p = fl = 0
            m = ALL_PASSED.search(out)
            if m:
                p = int(m.group(2))
            elif SUMMARY.search(out):
                m = SUMMARY.search(out)
                p, fl = int(m.group(2)), int(m.group(3))
            elif ONLY_FAILED.search(out):
                fl = int(ONLY_FAILED.search(out).group(2))
            elif FUZZ_DONE.search(out + (t.get("stderr", "") or "")) and rc == 0:  # libFuzzer writes to stderr
                m = FUZZ_DONE.search(out + (t.get("stderr", "") or ""))
                p = 1
                print(f"{build}/{name}: {m.group(1)} inputs in {m.group(2)} s, nothing found")
            if rc != 0 and fl == 0:
                fl = 1
                print(f"{build}/{name}: exited with {rc} ({t.get('result')}) without a failing test case")
            print(f"{build}/{name}: {p} passed, {fl} failed")
            passed += p
            failed += fl

line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
sys.exit(1 if failed else 0)
