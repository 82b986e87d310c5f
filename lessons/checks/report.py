"""A pytest plugin for lessons/check.py: each test's outcome, its README section and the first line
of its failure, written as JSON to the file named by AIOS_CHECK_REPORT when the session ends."""

from __future__ import annotations

import json
import os

_results: dict[str, dict] = {}


def pytest_runtest_logreport(report):
    entry = _results.setdefault(report.nodeid, {"outcome": "passed", "section": None, "message": ""})
    section = dict(report.user_properties).get("readme")
    if section:
        entry["section"] = section
    if report.failed:
        entry["outcome"] = "failed"
        crash = getattr(report.longrepr, "reprcrash", None)
        entry["message"] = (crash.message if crash is not None else str(report.longrepr)).splitlines()[0][:300]
    elif report.skipped and report.when in ("setup", "call"):
        entry["outcome"] = "skipped"
        entry["message"] = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""


def pytest_runtest_setup(item):
    marker = item.get_closest_marker("readme")
    if marker is not None:
        item.user_properties.append(("readme", marker.args[0]))


def pytest_collectreport(report):
    if report.failed:                       # an import error in the test file or the module under test
        _results[report.nodeid or "collection"] = {"outcome": "failed", "section": None,
                                                   "message": str(report.longrepr).strip().splitlines()[-1][:300]}


def pytest_sessionfinish(session):
    path = os.environ.get("AIOS_CHECK_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(_results, f)
