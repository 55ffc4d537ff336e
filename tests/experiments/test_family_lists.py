"""Every list of families outside the registry (architectures/registry.cpp) covers the registry.

Run by meson (tests/meson.build) with Debian's /usr/bin/python3:
    test_family_lists.py VLMLAB_BINARY SOURCE_ROOT
The registry's families come from `vlmlab list`. A family added to the registry alone must not be
silently missed by the benchmarks (bench/bench_families.cpp registers one benchmark set per registry
entry and names no family itself) or by the report (scripts/report.py gives each family a marker in
FAMILY_MARKERS). Prints a Catch2-style summary line that scripts/count_tests.py counts.
"""
import ast
import re
import subprocess
import sys
import traceback

VLMLAB, ROOT = sys.argv[1], sys.argv[2]


def registry_families():
    out = subprocess.run([VLMLAB, "list"], check=True, capture_output=True, text=True).stdout
    lines = out.split("families:\n", 1)[1].splitlines()
    names = []
    for line in lines:
        if not line.startswith("  "):
            break
        names.append(line.split()[0])
    assert len(names) >= 4, f"`vlmlab list` named {names}"
    return names


def test_report_has_every_family():
    tree = ast.parse(open(f"{ROOT}/scripts/report.py", encoding="utf-8").read())
    markers = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "FAMILY_MARKERS" for t in node.targets):
            markers = ast.literal_eval(node.value)
    assert markers is not None, "scripts/report.py has no FAMILY_MARKERS"
    missing = [f for f in registry_families() if f not in markers]
    assert not missing, f"scripts/report.py FAMILY_MARKERS lacks {missing}"


def test_bench_families_derives_from_the_registry():
    src = open(f"{ROOT}/bench/bench_families.cpp", encoding="utf-8").read()
    code = "\n".join(line.split("//", 1)[0] for line in src.splitlines())  # comments may name families
    assert "vlm::families()" in code, "bench/bench_families.cpp does not iterate the registry"
    named = [f for f in registry_families() if re.search(r'"' + re.escape(f) + r'"', code)]
    assert not named, f"bench/bench_families.cpp names families itself: {named}"


def main():
    passed = failed = 0
    for name, fn in sorted(globals().items()):
        if not name.startswith("test_") or not callable(fn):
            continue
        try:
            fn()
            passed += 1
            print(f"PASS {name}")
        except Exception:  # noqa: BLE001 - report every failure, then the summary
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
    print(f"test cases: {passed + failed} | {passed} passed | {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
