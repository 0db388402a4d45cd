"""The package must stay Python 3.8 compatible (JetPack 5 ships Python 3.8): compile it with a real 3.8."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import pytest

from tests.paths import REPO as ROOT


def _python38():
    for cand in [shutil.which("python3.8"), *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")))]:
        if cand and subprocess.run([cand, "-c", "import sys; assert sys.version_info[:2] == (3, 8)"],
                                   capture_output=True).returncode == 0:
            return cand
    return None


def test_every_module_compiles_under_python38(tmp_path):
    py38 = _python38()
    if py38 is None:
        pytest.skip("no Python 3.8 interpreter on this machine (ruff --target-version py38 still checks syntax)")
    files = sorted(str(p) for p in (ROOT / "edge").rglob("*.py"))
    code = (
        "import os, sys, py_compile\n"
        "bad = []\n"
        "for i, f in enumerate(sys.argv[2:]):\n"
        "    try:\n"
        "        py_compile.compile(f, cfile=os.path.join(sys.argv[1], str(i) + '.pyc'), doraise=True)\n"
        "    except py_compile.PyCompileError as e:\n"
        "        bad.append(str(e))\n"
        "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([py38, "-c", code, str(tmp_path), *files], capture_output=True, text=True)
    assert proc.returncode == 0, f"not Python 3.8 syntax:\n{proc.stdout}{proc.stderr}"
    assert len(files) > 10 and sys.version_info >= (3, 8)
