"""AIOS installs as a package, with one command, and says what is missing instead of a traceback.

- pyproject.toml declares the dependencies; requirements.txt (engine + server) and
  requirements-dev.txt (+ the dev tools) list the same ones.
- The wheel holds aios with its bundled model and nothing else of the clone.
- `aios generate | serve | bench` each take --help; `aios generate` runs the bundled model.
- Without fastapi or uvicorn, `python -m aios.server` and `aios serve` print one line naming the
  extra to install and exit with status 2.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from aios.cli import COMMANDS
from aios.cli import main as aios_main

tomllib = pytest.importorskip("tomllib")            # Python >= 3.11

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def requirements(path: Path) -> set[str]:
    """The requirement lines of a requirements file, normalized (`-r` includes left out)."""
    out = set()
    for line in path.read_text().splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith(("#", "-r")):
            out.add(str(Requirement(line)))
    return out


def normalized(reqs: list[str]) -> set[str]:
    return {str(Requirement(r)) for r in reqs if not r.startswith("aios[")}


def test_requirements_files_list_what_pyproject_declares():
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    assert requirements(REPO / "requirements.txt") == normalized(project["dependencies"] + extras["server"])
    assert requirements(REPO / "requirements-dev.txt") == normalized(extras["dev"])
    assert "aios[server]" in extras["dev"]
    assert "-r requirements.txt" in (REPO / "requirements-dev.txt").read_text()
    assert {"fastapi", "uvicorn", "pydantic"} <= {Requirement(r).name for r in extras["server"]}
    assert "jinja2" in {Requirement(r).name for r in project["dependencies"]}


def test_the_aios_command_is_declared():
    assert PYPROJECT["project"]["scripts"] == {"aios": "aios.cli:main"}


@pytest.mark.slow
def test_the_wheel_holds_aios_and_its_bundled_model_only(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "aios", src / "aios", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("aios-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("aios/assets/aios-tiny-bible/model.safetensors", "aios/assets/aios-tiny-bible/tokenizer.json",
                   "aios/cli/__init__.py", "aios/bench/peers/hf_runner.py", "aios/server/__main__.py"):
        assert needed in names, needed
    assert {n.split("/")[0] for n in names if not n.startswith("aios-")} == {"aios"}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "aios = aios.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_aios_command_takes_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        aios_main([command, "--help"])
    assert exit_.value.code == 0
    assert "--model" in capsys.readouterr().out


def test_aios_alone_lists_the_commands(capsys):
    assert aios_main([]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in COMMANDS)


def test_aios_generate_runs_the_bundled_model(capsys):
    assert aios_main(["generate", "--prompt", "In the beginning", "--max-tokens", "4", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("In the beginning") and len(out.strip()) > len("In the beginning")
    assert "4 tokens in" in err


@pytest.mark.parametrize("blocked", [["fastapi"], ["uvicorn", "pydantic"]])
def test_aios_serve_without_the_server_extra_is_one_line_and_status_2(blocked, monkeypatch, capsys):
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)                      # `import name` now fails
    monkeypatch.delitem(sys.modules, "aios.server.__main__", raising=False)
    with pytest.raises(SystemExit) as exit_:
        aios_main(["serve", "--help"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    verb = "is" if len(blocked) == 1 else "are"
    assert f"{' and '.join(blocked)} {verb} not installed" in err and "pip install 'aios[server]'" in err


@pytest.mark.parametrize("missing", ["uvicorn", "fastapi"])
def test_python_m_aios_server_without_a_server_package_names_the_extra_without_a_traceback(missing):
    code = (f"import runpy, sys\nsys.modules[{missing!r}] = None\nsys.argv = ['aios.server']\n"
            "runpy.run_module('aios.server', run_name='__main__', alter_sys=True)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: the server needs fastapi, uvicorn and pydantic ({missing} is not installed): pip install "
        "'aios[server]' (from a clone: pip install -e '.[server]' or -r requirements.txt)"]
