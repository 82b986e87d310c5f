"""The lesson checks: tests of the learner's code in workspace/ (python lessons/check.py NN).

    test_lessonNN.py      LESSON = "NN"; every test takes the fixture `impl`: the module under test
    reference/lessonNN.py the same names, bound to aios's own code: the reference solution
    hints/lessonNN.md     hints, one at a time (python lessons/check.py NN --hint)

`impl` is workspace.lessonNN (the learner's) or lessons.checks.reference.lessonNN (--reference),
chosen by the environment variable AIOS_CHECK_IMPL that lessons/check.py sets. A test marked
`@pytest.mark.readme("Build it: ...")` names the README section that explains what it checks.
Every test must fail on the untouched stubs and pass on the reference (tests/test_lesson_checks.py).
"""
