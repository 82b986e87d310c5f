#!/usr/bin/env python
"""Check your code for a lesson: the tests of lessons/checks/test_lessonNN.py against workspace/.

    python lessons/check.py 06               your workspace/lesson06.py: each part passed or failed,
                                             with the README section that explains it (exit 0: all pass)
    python lessons/check.py 06 --reference   the same tests against aios's own code (the solution)
    python lessons/check.py 06 --hint        the next hint for lesson 06, one at a time
    python lessons/check.py                  your progress over every lesson

The learner's files are workspace/lessonNN.py (stubs until you write them); the reference solution
of lesson NN is aios itself (lessons/checks/reference/lessonNN.py says which file): read it after
trying. Checks run in seconds on a CPU; a part that needs a GPU is skipped on one, and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKS = REPO / "lessons" / "checks"
HINTS_SEEN = REPO / "workspace" / ".hints_seen.json"       # git-ignored: how many hints you have opened


def lessons() -> list[str]:
    return sorted(p.stem.removeprefix("test_lesson") for p in CHECKS.glob("test_lesson*.py"))


def readme_of(lesson: str) -> Path | None:
    found = sorted((REPO / "lessons").glob(f"{lesson}_*/README.md"))
    return found[0] if found else None


def run_checks(lesson: str | list[str], impl: str, verbose: bool = False,
               workspace_root: str | None = None) -> dict[str, dict]:
    """Run one lesson's checks (or several lessons' in one interpreter) in a fresh interpreter;
    {test id: {outcome, section, message}}, test ids starting "test_lessonNN.py::".
    `workspace_root`: a directory holding another `workspace` package to test (default: this clone's)."""
    numbers = [lesson] if isinstance(lesson, str) else list(lesson)
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        env = dict(os.environ, AIOS_CHECK_IMPL=impl, AIOS_CHECK_REPORT=report,
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        if workspace_root:
            env["AIOS_CHECK_WORKSPACE"] = workspace_root
        cmd = [sys.executable, "-m", "pytest", *(str(CHECKS / f"test_lesson{n}.py") for n in numbers),
               "-p", "lessons.checks.report",
               "-p", "no:cacheprovider", "--rootdir", str(CHECKS), "-c", os.devnull,
               "-q" if verbose else "-qq", "--tb=short" if verbose else "--tb=no", "--no-header"]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=not verbose, text=True)
        if not os.path.exists(report):
            out = (proc.stdout or "") + (proc.stderr or "")
            return {"collection": {"outcome": "failed", "section": None,
                                   "message": out.strip().splitlines()[-1] if out.strip() else "pytest failed"}}
        with open(report) as f:
            return json.load(f)


def short_name(test_id: str) -> str:
    return test_id.split("::", 1)[-1].removeprefix("test_").replace("_", " ")


def check_one(lesson: str, impl: str, verbose: bool) -> int:
    results = run_checks(lesson, impl, verbose)
    readme = readme_of(lesson)
    where = "aios's reference code" if impl == "reference" else f"workspace/lesson{lesson}.py"
    print(f"lesson {lesson}: {where}")
    for test_id, r in results.items():
        mark = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}[r["outcome"]]
        print(f"  {mark}  {short_name(test_id)}")
        if r["outcome"] == "failed":
            print(f"        {r['message']}")
            if r["section"] and readme is not None:
                print(f"        read: {readme.relative_to(REPO)}, \"{r['section']}\"")
        elif r["outcome"] == "skipped" and r["message"]:
            print(f"        ({r['message']})")
    failed = sum(r["outcome"] == "failed" for r in results.values())
    passed = sum(r["outcome"] == "passed" for r in results.values())
    if failed:
        print(f"{passed} passed, {failed} failed. Stuck? python lessons/check.py {lesson} --hint")
    else:
        print(f"all {passed} passed" + (f" (reference solution: {readme.relative_to(REPO)}, 'Build it')"
                                        if readme is not None and impl == "mine" else ""))
    return 1 if failed or not passed else 0


def progress() -> int:
    print("your progress (workspace/ against each lesson's checks):")
    done = 0
    all_lessons = lessons()
    for lesson in all_lessons:
        results = run_checks(lesson, "mine")
        passed = sum(r["outcome"] == "passed" for r in results.values())
        total = sum(r["outcome"] != "skipped" for r in results.values())
        state = "done" if passed == total and total else ("started" if passed else "not started")
        done += state == "done"
        print(f"  lesson {lesson}: {passed:>2}/{total:<2} {state}")
    print(f"{done} of {len(all_lessons)} lessons done")
    return 0


def hint(lesson: str) -> int:
    path = CHECKS / "hints" / f"lesson{lesson}.md"
    if not path.exists():
        print(f"no hints for lesson {lesson}")
        return 1
    hints = [h.strip() for h in path.read_text().split("\n---\n") if h.strip()]
    seen = json.loads(HINTS_SEEN.read_text()) if HINTS_SEEN.exists() else {}
    k = min(seen.get(lesson, 0) + 1, len(hints))
    for i in range(k):
        print(f"hint {i + 1} of {len(hints)}:\n{hints[i]}\n")
    if k == len(hints):
        print("that was the last hint; the reference solution is named at the top of "
              f"lessons/checks/reference/lesson{lesson}.py")
    seen[lesson] = k
    HINTS_SEEN.parent.mkdir(exist_ok=True)
    HINTS_SEEN.write_text(json.dumps(seen))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lesson", nargs="?", help="two digits, e.g. 06 (none: your progress over every lesson)")
    ap.add_argument("--reference", action="store_true", help="check aios's own code instead of workspace/")
    ap.add_argument("--hint", action="store_true", help="show the next hint (one more each time you ask)")
    ap.add_argument("-v", "--verbose", action="store_true", help="pytest's own output, tracebacks included")
    args = ap.parse_args(argv)
    if args.lesson is None:
        return progress()
    lesson = args.lesson.zfill(2)
    if lesson not in lessons():
        ap.error(f"no checks for lesson {lesson}; there are: {', '.join(lessons())}")
    if args.hint:
        return hint(lesson)
    return check_one(lesson, "reference" if args.reference else "mine", args.verbose)


if __name__ == "__main__":
    sys.exit(main())
