"""Test inputs are seeded explicitly: no test calls the builtin ``hash()``, whose value for a string changes
from one Python process to the next (PYTHONHASHSEED salting), so a seed made from it gives every CI run
other inputs and makes a failure impossible to replay."""

from __future__ import annotations

import ast
from typing import List

from tests.paths import REPO

TESTS = REPO / "tests"


def hash_calls(source: str, filename: str) -> List[int]:
    """Line numbers of calls to the builtin ``hash`` in ``source``."""
    tree = ast.parse(source, filename)
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hash"]


def test_the_scan_finds_a_hash_seed():
    assert hash_calls("rng = np.random.default_rng(abs(hash(case)) % 2**32)\n", "x.py") == [1]
    assert hash_calls("card['data']['hash'] == dataset_hash(ds)\nh = obj.hash(1)\n", "x.py") == []


def test_no_test_seeds_from_the_salted_builtin_hash():
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        for line in hash_calls(path.read_text(encoding="utf-8"), str(path)):
            found.append(f"{path.relative_to(REPO)}:{line}")
    assert not found, (
        f"hash() called at {found}: str hashes are salted per process, so inputs differ on every run. "
        "Seed with a fixed number instead (np.random.default_rng(7), or an index into the case list)"
    )
