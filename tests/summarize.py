#!/usr/bin/env python3
"""Counts test cases across build directories and prints the closing line 'N passed, N failed'.

Sources, per test in each TESTS_DIR: a Boost.Test XML report (NAME.report.xml), or a shell
test's NAME.cases file ("PASS name" / "FAIL name" / "SKIP name: reason" lines), or failing
those the automake .trs result as a single case. A test whose harness result is FAIL counts at
least one failure even if its report looks clean (a crash after the report was written).
Extra checks (fuzzing, distcheck) are given as --check NAME=PASS|FAIL.

usage: summarize.py [--check NAME=RESULT ...] TESTS_DIR ...
"""
import glob
import os
import sys
import xml.etree.ElementTree as ET


def harness_result(trs):
    with open(trs) as f:
        for line in f:
            if line.startswith(":test-result:"):
                return line.split()[1]
    return "ERROR"


def count_dir(d):
    passed = failed = skipped = 0
    for trs in sorted(glob.glob(os.path.join(d, "*.trs"))):
        base = trs[: -len(".trs")]
        result = harness_result(trs)
        p = f = s = 0
        failures = []
        if os.path.exists(base + ".report.xml"):
            try:
                suite = ET.parse(base + ".report.xml").getroot().find("TestSuite")
                p = int(suite.get("test_cases_passed", 0)) + int(suite.get("test_cases_passed_with_warnings", 0))
                f = int(suite.get("test_cases_failed", 0)) + int(suite.get("test_cases_aborted", 0))
                s = int(suite.get("test_cases_skipped", 0))
                failures.extend("FAIL " + case.get("name", "?") for case in suite.iter("TestCase")
                                if case.get("result") in ("failed", "aborted"))
            except (ET.ParseError, AttributeError, ValueError):
                f = 1
        elif os.path.exists(base + ".cases"):
            with open(base + ".cases") as cases:
                for line in cases:
                    word = line.split(" ", 1)[0]
                    p += word == "PASS"
                    f += word == "FAIL"
                    s += word == "SKIP"
                    if word == "FAIL":
                        failures.append(line.strip()[:400])
        elif result in ("PASS", "XFAIL"):
            p = 1
        elif result == "SKIP":
            s = 1
        if result in ("FAIL", "ERROR", "XPASS") and f == 0:
            f = 1
        print(f"  {os.path.relpath(base)}: {p} passed, {f} failed, {s} skipped (harness: {result})")
        # The failing cases by name (and a shell test's reason), so the summary alone says what
        # to look at when the logs above it are cut.
        for failure in failures:
            print(f"      {failure}")
        passed, failed, skipped = passed + p, failed + f, skipped + s
    return passed, failed, skipped


def main(argv):
    passed = failed = skipped = 0
    dirs = []
    args = iter(argv)
    for a in args:
        if a == "--check":
            name, _, result = next(args).partition("=")
            ok = result == "PASS"
            print(f"  check {name}: {result}")
            passed += ok
            failed += not ok
        else:
            dirs.append(a)
    for d in dirs:
        if not glob.glob(os.path.join(d, "*.trs")):
            print(f"  {d}: no test results (the build or test run did not get that far)")
            failed += 1
            continue
        p, f, s = count_dir(d)
        passed, failed, skipped = passed + p, failed + f, skipped + s
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line)
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
