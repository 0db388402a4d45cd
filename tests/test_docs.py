"""Every command in the user's guide is executed here, where it can run on this machine.

The convention (docs/README.md, "How these pages are tested"):

* A fenced block tagged ``bash``, ``sh``, ``shell`` or ``console`` holds commands. In a ``console`` block
  only lines starting with ``$ `` are commands (plus their ``\\`` continuation lines); the other lines are
  sample output and are not checked. A ``bash`` block is one script.
* The line right before such a block (blank lines allowed in between) is its verdict, an HTML comment:

      <!-- docs-test: run -->
      <!-- docs-test: run requires=bccd exit=2 expect="GStreamer" absent="--fp16" timeout=120 -->
      <!-- docs-test: skip reason="needs a Jetson" -->

  ``run`` blocks are executed in page order (docs/README.md, guide.md, tensorrt.md, troubleshooting.md,
  then any other page), all in one scratch folder laid out like a checkout (``data/``,
  ``calibration/*.txt``, ``deploy/``, ``scripts/``, ``edge/``, and ``../shared`` when it exists), with the
  installed ``edge`` first on PATH, so later blocks use what earlier ones wrote, as a reader following
  the pages would. ``requires`` names what a block needs (``bccd``: ../shared/datasets/bccd;
  ``shared-models``: ../shared/models; ``torch``); it is skipped with that reason where absent.
  ``exit`` is the expected exit status (default 0), ``expect`` text that must appear in the output,
  ``absent`` text that must not. ``skip`` blocks are listed as skipped tests with their reason.
* A command block without a verdict fails the suite, so does a verdict that is misspelt, a ``skip``
  without a reason, a block in an unknown language, or an untagged block that looks like commands.

Besides running blocks, the suite checks every ``edge``/``edge-run`` command in the docs and the root
README (run or skipped) against the real argument parsers (the verb exists, every flag exists), that
scripts the docs name exist, that relative links resolve, and that docs/README.md indexes every page.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from tests.paths import BCCD, REPO, SHARED

DOCS = REPO / "docs"
SHARED_MODELS = SHARED / "models"
PAGE_ORDER = ("README.md", "guide.md", "tensorrt.md", "troubleshooting.md")

COMMAND_LANGS = {"bash", "sh", "shell", "console"}
OTHER_LANGS = {"", "text", "json", "jsonl", "yaml", "ini", "python", "diff", "csv", "markdown", "md", "toml"}
VERDICT_RE = re.compile(r"^\s*<!--\s*docs-test:(.*?)-->\s*$")
RUN_KEYS = {"requires", "exit", "expect", "absent", "timeout"}
REQUIREMENTS = ("bccd", "shared-models", "torch")
LOOKS_LIKE_COMMAND = re.compile(r"^\s*(\$ |sudo |edge |edge-run |\.venv/bin/|bash |python3? |pip3? |deploy/|scripts/)")
DEFAULT_TIMEOUT_S = 300


# ------------------------------------------------------------------------------------------- parsing


@dataclass
class Verdict:
    action: str  # run | skip
    reason: str = ""
    requires: Tuple[str, ...] = ()
    exit: int = 0
    expect: str = ""
    absent: str = ""
    timeout: int = DEFAULT_TIMEOUT_S


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    body: List[str]
    verdict: Optional[Verdict] = None
    problems: List[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def is_command(self) -> bool:
        return self.lang in COMMAND_LANGS

    def commands(self) -> List[str]:
        """The commands, continuation lines joined (console: only ``$ `` lines; bash: every line)."""
        out: List[str] = []
        pending: Optional[str] = None
        for raw in self.body:
            if pending is not None:
                pending += "\n" + raw
                if not raw.rstrip().endswith("\\"):
                    out.append(pending)
                    pending = None
                continue
            if self.lang == "console":
                if not raw.startswith("$ "):
                    continue
                raw = raw[2:]
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            if raw.rstrip().endswith("\\"):
                pending = raw
            else:
                out.append(raw)
        if pending is not None:
            out.append(pending)
        return out

    def script(self) -> str:
        if self.lang == "console":
            return "\n".join(self.commands()) + "\n"
        return "\n".join(self.body) + "\n"


def parse_verdict(text: str) -> Tuple[Optional[Verdict], List[str]]:
    """``run requires=bccd exit=2`` -> Verdict; problems as messages."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        return None, [f"unparsable docs-test comment ({exc})"]
    if not words or words[0] not in ("run", "skip"):
        return None, [f"docs-test comment must start with 'run' or 'skip', found {text.strip()!r}"]
    action, problems = words[0], []
    opts: Dict[str, str] = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep:
            problems.append(f"docs-test option {word!r} is not KEY=VALUE")
            continue
        opts[key] = value
    verdict = Verdict(action)
    if action == "skip":
        unknown = sorted(set(opts) - {"reason"})
        if unknown:
            problems.append(f"skip takes only reason=..., found {unknown}")
        verdict.reason = opts.get("reason", "").strip()
        if not verdict.reason:
            problems.append('skip needs a reason: <!-- docs-test: skip reason="needs a Jetson" -->')
        return verdict, problems
    unknown = sorted(set(opts) - RUN_KEYS)
    if unknown:
        problems.append(f"unknown run option(s) {unknown}; known: {sorted(RUN_KEYS)}")
    if "requires" in opts:
        verdict.requires = tuple(r for r in opts["requires"].split(",") if r)
        bad = [r for r in verdict.requires if r not in REQUIREMENTS]
        if bad:
            problems.append(f"unknown requirement(s) {bad}; known: {list(REQUIREMENTS)}")
    for key in ("exit", "timeout"):
        if key in opts:
            try:
                setattr(verdict, key, int(opts[key]))
            except ValueError:
                problems.append(f"{key}={opts[key]!r} is not an integer")
    verdict.expect = opts.get("expect", "")
    verdict.absent = opts.get("absent", "")
    return verdict, problems


def parse_markdown(text: str, page: str) -> List[Block]:
    """Fenced blocks (``` or ~~~, CommonMark-style closing) with their verdicts and problems."""
    lines = text.splitlines()
    blocks: List[Block] = []
    i = 0
    last_nonblank: Optional[str] = None
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)", line)
        if not m:
            if line.strip():
                last_nonblank = line
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).strip().lower()
        start = i
        body: List[str] = []
        i += 1
        while i < len(lines):
            close = re.match(r"^ {0,3}(`{3,}|~{3,})\s*$", lines[i])
            if close and close.group(1)[0] == fence[0] and len(close.group(1)) >= len(fence):
                break
            body.append(lines[i])
            i += 1
        block = Block(page, start + 1, lang, body)
        vm = VERDICT_RE.match(last_nonblank or "")
        if vm:
            block.verdict, problems = parse_verdict(vm.group(1))
            block.problems.extend(problems)
        if block.is_command:
            if block.verdict is None and not block.problems:
                block.problems.append(
                    "command block without a verdict: put <!-- docs-test: run --> or "
                    '<!-- docs-test: skip reason="..." --> on the line before it'
                )
            elif block.verdict is not None and block.verdict.action == "run" and not block.commands():
                block.problems.append("run block holds no command")
        else:
            if vm:
                block.problems.append(f"docs-test verdict on a {lang or 'untagged'} block, which is not run")
            if lang not in OTHER_LANGS:
                block.problems.append(
                    f"unknown block language {lang!r}: tag commands as bash or console, anything else as "
                    f"one of {sorted(OTHER_LANGS - {''})}"
                )
            elif lang == "" and any(LOOKS_LIKE_COMMAND.match(b) for b in body):
                block.problems.append("untagged block that looks like commands: tag it bash or console")
        blocks.append(block)
        last_nonblank = None
        i += 1
    return blocks


def doc_pages() -> List[Path]:
    if not DOCS.is_dir():
        return []
    present = {p.name: p for p in DOCS.glob("*.md")}
    ordered = [present.pop(name) for name in PAGE_ORDER if name in present]
    return ordered + [present[name] for name in sorted(present)]


def all_blocks() -> List[Block]:
    """Every fenced block of docs/*.md, then of the root README (its blocks need verdicts too)."""
    blocks: List[Block] = []
    for page in doc_pages():
        blocks.extend(parse_markdown(page.read_text(encoding="utf-8"), page.name))
    readme = REPO / "README.md"
    if readme.exists():
        blocks.extend(parse_markdown(readme.read_text(encoding="utf-8"), "../README.md"))
    return blocks


BLOCKS = all_blocks()
COMMAND_BLOCKS = [b for b in BLOCKS if b.is_command]


# ------------------------------------------------------------------------ the convention's own tests


SAMPLE = """\
# Sample

<!-- docs-test: run expect="hello" -->
```console
$ echo hello \\
    world
hello world
$ true
```

```bash
edge doctor
```

<!-- docs-test: skip -->
```bash
sudo reboot
```

<!-- docs-test: run colour=red -->
```sh
true
```

~~~markdown
<!-- docs-test: run -->
```bash
not a real block: inside another fence
```
~~~

```
$ edge eval
```

<!-- docs-test: run -->
```json
{}
```
"""


def test_parser_finds_commands_and_every_missing_or_bad_verdict():
    blocks = parse_markdown(SAMPLE, "sample.md")
    assert [b.lang for b in blocks] == ["console", "bash", "bash", "sh", "markdown", "", "json"]
    console = blocks[0]
    assert console.verdict is not None and console.verdict.expect == "hello"
    assert console.commands() == ["echo hello \\\n    world", "true"]  # output lines are not commands
    assert not console.problems
    assert "without a verdict" in blocks[1].problems[0]
    assert "needs a reason" in blocks[2].problems[0]
    assert "unknown run option" in blocks[3].problems[0]
    assert not blocks[4].problems  # the nested ``` inside ~~~ is content, not a block
    assert "looks like commands" in blocks[5].problems[0]
    assert "not run" in blocks[6].problems[0]


def test_parser_reads_run_options():
    verdict, problems = parse_verdict('run requires=bccd,torch exit=2 expect="a b" absent=--fp16 timeout=9')
    assert not problems
    assert verdict is not None
    assert (verdict.requires, verdict.exit, verdict.expect, verdict.absent, verdict.timeout) == (
        ("bccd", "torch"), 2, "a b", "--fp16", 9)
    _, problems = parse_verdict("run requires=gpu")
    assert "unknown requirement" in problems[0]
    _, problems = parse_verdict("maybe")
    assert "must start with" in problems[0]


# --------------------------------------------------------------------------------- the pages, linted


def test_docs_pages_exist():
    names = {p.name for p in doc_pages()}
    missing = [n for n in PAGE_ORDER if n not in names]
    assert not missing, f"docs/ lacks {missing}"


def test_every_command_block_has_a_valid_verdict():
    problems = [f"{b.id}: {p}" for b in BLOCKS for p in b.problems]
    assert not problems, "docs blocks without a valid verdict:\n" + "\n".join(problems)
    assert COMMAND_BLOCKS, "no command blocks found in docs/"
    assert any(b.verdict and b.verdict.action == "run" for b in COMMAND_BLOCKS), "no runnable block at all"


def test_docs_index_lists_every_page():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    unlisted = [p.name for p in doc_pages() if p.name != "README.md" and f"({p.name}" not in index]
    assert not unlisted, f"docs/README.md does not link {unlisted}"


LINK_RE = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_relative_links_resolve():
    broken = []
    for page in doc_pages():
        in_fence = False
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if re.match(r"^ {0,3}(`{3,}|~{3,})", line):
                in_fence = not in_fence
            if in_fence:
                continue
            for target in LINK_RE.findall(line):
                if re.match(r"^[a-z]+://|^mailto:|^#", target):
                    continue
                path = target.split("#", 1)[0]
                if path and not (page.parent / path).exists():
                    broken.append(f"{page.name}:{n}: {target}")
    assert not broken, "broken relative links:\n" + "\n".join(broken)


# ----------------------------------------------------------- every documented flag exists for real


def _split_commands(text: str) -> List[List[str]]:
    """Shell words of each simple command in ``text`` (lines, pipelines and lists split; comments dropped)."""
    commands: List[List[str]] = []
    for line in text.replace("\\\n", " ").splitlines():
        try:
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            words = list(lexer)
        except ValueError:
            continue
        commands.append([])
        for w in words:
            if w and set(w) <= set(";&|()"):
                commands.append([])
            else:
                commands[-1].append(w)
    return [c for c in commands if c]


def _edge_invocations(text: str) -> List[Tuple[str, List[str]]]:
    """('edge'|'edge-run', args) for each edge command in a block's text (any install prefix)."""
    found = []
    for words in _split_commands(text):
        while words and (words[0] in ("sudo", "env", "time", "exec") or re.match(r"^\w+=", words[0])):
            words = words[1:]
        if words and os.path.basename(words[0]) == "torchrun" and "--no-python" in words:
            words = words[words.index("--no-python") + 1:]
        if not words:
            continue
        prog = os.path.basename(words[0])
        if prog in ("edge", "edge-run"):
            found.append((prog, words[1:]))
    return found


def _parser_options(prog: str, verb: Optional[str]) -> Optional[set]:
    import argparse

    if prog == "edge-run":
        from edge.cli.run import build_parser

        parser = build_parser()
    else:
        from edge.cli.main import build_parser

        top = build_parser(only=verb)
        if verb is None:
            parser = top
        else:
            sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
            parser = sub.choices.get(verb)
            if parser is None:
                return None
    opts = set()
    for action in parser._actions:
        opts.update(action.option_strings)
    return opts


def _strip_heredocs(text: str) -> str:
    """Drop here-document bodies (``python - <<'EOF' ... EOF``): they are input, not commands."""
    out: List[str] = []
    until: Optional[str] = None
    for line in text.splitlines():
        if until is not None:
            if line.strip() == until:
                until = None
            continue
        out.append(line)
        m = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        if m:
            until = m.group(1)
    return "\n".join(out)


def _documented_texts() -> List[Tuple[str, str]]:
    blocks = list(COMMAND_BLOCKS)
    return [(b.id, _strip_heredocs("\n".join(b.commands()))) for b in blocks]


def test_documented_edge_commands_use_real_verbs_and_flags():
    import importlib.util

    pytest.importorskip("edge.cli.main")
    from edge.cli.main import VERBS

    available = {v for v, mod in VERBS.items() if importlib.util.find_spec(mod) is not None}
    errors: List[str] = []
    checked = 0
    for where, text in _documented_texts():
        for prog, args in _edge_invocations(text):
            verb = None
            if prog == "edge":
                positional = [a for a in args if not a.startswith("-")]
                verb = positional[0] if positional else None
                if verb is not None and verb not in available:
                    errors.append(f"{where}: `edge {verb}`: no such verb here (available: {sorted(available)})")
                    continue
            options = _parser_options(prog, verb)
            if options is None:
                errors.append(f"{where}: cannot load the parser of `{prog} {verb or ''}`")
                continue
            if prog == "edge" and verb is not None:
                options |= _parser_options("edge", None) or set()
            for arg in args:
                if not arg.startswith("-") or arg == "-" or re.match(r"^-\d", arg):
                    continue
                flag = arg.split("=", 1)[0]
                if flag not in options:
                    errors.append(f"{where}: `{prog} {verb or ''}` has no option {flag}")
            checked += 1
    assert checked > 5, f"only {checked} edge commands found in the docs"
    assert not errors, "documented commands that do not match the CLI:\n" + "\n".join(errors)


def test_scripts_named_in_the_docs_exist():
    missing = []
    for where, text in _documented_texts():
        for script in re.findall(r"(?<![\w/.])((?:deploy|scripts)/[\w./-]+\.sh)\b", text):
            if not (REPO / script).is_file():
                missing.append(f"{where}: {script}")
    assert not missing, "the docs name scripts that are not in the repository:\n" + "\n".join(missing)


# ------------------------------------------------------------------------------- running the blocks


def _edge_bin() -> Optional[Path]:
    for cand in (Path(sys.executable).parent, REPO / ".venv" / "bin"):
        if (cand / "edge").is_file() and (cand / "edge-run").is_file():
            return cand
    return None


@dataclass
class Outcome:
    status: str  # passed | failed | skipped
    message: str = ""


class DocsRun:
    """One scratch checkout shared by all run blocks, executed in page order, each at most once."""

    def __init__(self, root: Path):
        self.root = root
        self.workdir = root / "edge"
        self.outcomes: Dict[str, Outcome] = {}
        self.bin = _edge_bin()
        self._torch: Optional[bool] = None
        self._prepare()

    def _prepare(self) -> None:
        self.workdir.mkdir(parents=True)
        if SHARED.is_dir():
            (self.root / "shared").symlink_to(SHARED, target_is_directory=True)
        shutil.copytree(REPO / "data", self.workdir / "data")
        calib = self.workdir / "calibration"
        calib.mkdir()
        for f in (REPO / "calibration").glob("*.txt"):
            shutil.copy2(f, calib / f.name)
        for name in ("deploy", "scripts", "edge"):
            if (REPO / name).is_dir():
                (self.workdir / name).symlink_to(REPO / name, target_is_directory=True)

    def missing(self, requirement: str) -> Optional[str]:
        if requirement == "bccd" and not BCCD.is_dir():
            return f"the BCCD dataset is not at {BCCD}"
        if requirement == "shared-models" and not (SHARED_MODELS / "ultralight-rfb-320.onnx").is_file():
            return f"the foreign test model is not in {SHARED_MODELS}"
        if requirement == "torch":
            if self._torch is None:
                assert self.bin is not None
                probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"
                self._torch = subprocess.run([str(self.bin / "python"), "-c", probe]).returncode == 0
            if not self._torch:
                return "torch is not installed (the train/export extras: bash scripts/bootstrap.sh dev)"
        return None

    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        assert self.bin is not None
        env["PATH"] = str(self.bin) + os.pathsep + env.get("PATH", "")
        for key in ("DISPLAY", "WAYLAND_DISPLAY", "PYTHONPATH"):
            env.pop(key, None)
        env["MPLBACKEND"] = "Agg"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def execute(self, block: Block) -> Outcome:
        verdict = block.verdict
        assert verdict is not None
        for req in verdict.requires:
            why = self.missing(req)
            if why:
                return Outcome("skipped", f"{block.id} needs {req}: {why}")
        try:
            proc = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", block.script()], cwd=str(self.workdir), env=self.env(),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=verdict.timeout,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
            return Outcome("failed", f"{block.id} ran past {verdict.timeout} s\n{out[-4000:]}")
        out = proc.stdout or ""
        tail = f"\n--- script ---\n{block.script()}--- output (last 4000 characters) ---\n{out[-4000:]}"
        if proc.returncode != verdict.exit:
            return Outcome("failed", f"{block.id} exited {proc.returncode}, expected {verdict.exit}{tail}")
        if verdict.expect and verdict.expect not in out:
            return Outcome("failed", f"{block.id}: output lacks {verdict.expect!r}{tail}")
        if verdict.absent and verdict.absent in out:
            return Outcome("failed", f"{block.id}: output contains {verdict.absent!r}{tail}")
        return Outcome("passed")

    def outcome(self, block: Block) -> Outcome:
        """Run every earlier run block not yet run, then this one (a block sees its predecessors' files)."""
        for current in COMMAND_BLOCKS:
            if current.verdict is not None and current.verdict.action == "run" and current.id not in self.outcomes:
                failed = [k for k, o in self.outcomes.items() if o.status == "failed"]
                if failed:
                    self.outcomes[current.id] = Outcome("skipped", f"an earlier block failed: {failed[0]}")
                else:
                    self.outcomes[current.id] = self.execute(current)
            if current is block:
                break
        return self.outcomes[block.id]


@pytest.fixture(scope="module")
def docs_run(tmp_path_factory) -> DocsRun:
    if _edge_bin() is None:
        pytest.skip("edge is not installed next to this Python or in .venv: run `bash scripts/bootstrap.sh dev`")
    return DocsRun(tmp_path_factory.mktemp("docs-run"))


@pytest.mark.parametrize("block", COMMAND_BLOCKS, ids=[b.id for b in COMMAND_BLOCKS])
def test_docs_block(block: Block, request):
    if block.problems or block.verdict is None:
        pytest.fail(f"{block.id}: " + "; ".join(block.problems or ["no verdict"]))
    if block.verdict.action == "skip":
        pytest.skip(f"{block.id}: {block.verdict.reason}")
    run: DocsRun = request.getfixturevalue("docs_run")
    outcome = run.outcome(block)
    if outcome.status == "skipped":
        pytest.skip(outcome.message)
    if outcome.status == "failed":
        pytest.fail(outcome.message, pytrace=False)
