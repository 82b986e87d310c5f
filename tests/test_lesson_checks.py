"""The learner's checks (lessons/check.py) are honest: for every lesson, each check passes on the
reference solution (aios) and fails on the untouched stub, so no check can pass on a stub.

The stubs are taken from git's HEAD where there is one, so a clone whose workspace/ the learner has
filled in still tests the stubs as shipped."""

import os
import shutil
import subprocess

import pytest

from lessons import check

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def stubs_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("stubs")
    dst = root / "workspace"
    listed = subprocess.run(["git", "ls-files", "workspace"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0 or not listed.stdout.strip():
        shutil.copytree(os.path.join(REPO, "workspace"), dst)          # not a git checkout: the files as they are
        return str(root)
    for name in listed.stdout.split():
        text = subprocess.run(["git", "show", f"HEAD:{name}"], cwd=REPO, capture_output=True, text=True, check=True)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text.stdout)
    return str(root)


@pytest.fixture(scope="module")
def on_reference() -> dict[str, dict]:
    return check.run_checks(check.lessons(), "reference")       # every lesson in one interpreter


@pytest.fixture(scope="module")
def on_stubs(stubs_root) -> dict[str, dict]:
    return check.run_checks(check.lessons(), "mine", workspace_root=stubs_root)


def of_lesson(results: dict[str, dict], lesson: str) -> dict[str, dict]:
    return {t: r for t, r in results.items() if t.startswith(f"test_lesson{lesson}.py::")}


@pytest.mark.slow
@pytest.mark.parametrize("lesson", check.lessons())
def test_every_check_passes_on_the_reference(lesson, on_reference):
    results = of_lesson(on_reference, lesson)
    failed = {t: r["message"] for t, r in results.items() if r["outcome"] == "failed"}
    assert results and not failed, failed


@pytest.mark.slow
@pytest.mark.parametrize("lesson", check.lessons())
def test_no_check_passes_on_the_stub(lesson, on_stubs):
    results = of_lesson(on_stubs, lesson)
    passed = [t for t, r in results.items() if r["outcome"] == "passed"]
    assert results and not passed, f"checks that pass on the untouched stub: {passed}"
    assert all("NotImplementedError" in r["message"] for r in results.values() if r["outcome"] == "failed"), \
        {t: r["message"] for t, r in results.items()}


@pytest.mark.slow
def test_a_workspace_elsewhere_is_the_one_checked(tmp_path):
    # a workspace whose lesson 01 is the reference solution passes, though this clone's may be a stub
    (tmp_path / "workspace").mkdir()
    (tmp_path / "workspace" / "__init__.py").write_text("")
    reference = os.path.join(REPO, "lessons", "checks", "reference", "lesson01.py")
    shutil.copy(reference, tmp_path / "workspace" / "lesson01.py")
    results = check.run_checks("01", "mine", workspace_root=str(tmp_path))
    assert results and all(r["outcome"] == "passed" for r in results.values()), results


def test_every_lesson_hands_the_learner_a_piece_to_build():
    numbers = [p.name[:2] for p in sorted((check.REPO / "lessons").glob("[0-9][0-9]_*")) if p.is_dir()]
    assert numbers and check.lessons() == numbers, "a lesson without checks, or checks without a lesson"
    for n in numbers:
        assert (check.REPO / "workspace" / f"lesson{n}.py").exists(), f"lesson {n} has no workspace file"
        assert (check.REPO / "lessons" / "checks" / "reference" / f"lesson{n}.py").exists()
        assert (check.REPO / "lessons" / "checks" / "hints" / f"lesson{n}.md").exists()
