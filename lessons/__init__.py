"""The AIOS course: lessons/NN_slug/run_lessonNN.py, and common/, what the run scripts share.

A package so that the run scripts import their helpers (`from lessons import common`) and each
other's files without touching sys.path: `pip install -e .` puts the clone's root on the path (see
pyproject.toml), and from the root without installing, `python -m lessons.06_paged_kv_cache.run_lesson06`.
"""
