"""The ``edge`` command: one entry point, one verb per pipeline stage.

Each verb lives in ``edge/cli/<module>.py`` and exposes::

    HELP: str                                  one line for ``edge --help``
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int       exit status

Verb modules are imported only when their verb runs (or for ``--help``), so ``edge eval`` never pays
for importing torch and a missing optional dependency only breaks the verb that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from edge import __version__
from edge.cli.common import run_verb

# verb -> module under edge.cli. A verb appears here once its module exists.
VERBS = {
    "run": "edge.cli.run",
    "eval": "edge.cli.eval",
    "train": "edge.cli.train",
    "anchors": "edge.cli.anchors",
    "export": "edge.cli.export",
    "surgery": "edge.cli.surgery",
    "quantize": "edge.cli.quantize",
    "build": "edge.cli.build",
    "bench": "edge.cli.bench",
    "doctor": "edge.cli.doctor",
}


def _available_verbs():
    """Yield (verb, module) for verbs whose module is present in this installation."""
    import importlib.util

    for verb, module in VERBS.items():
        if importlib.util.find_spec(module) is not None:
            yield verb, module


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The ``edge`` parser. With ``only``, import just that verb's module (a broken or heavy module of
    another verb never slows or breaks this one); otherwise import all of them for the full help."""
    parser = argparse.ArgumentParser(
        prog="edge",
        description="Single-shot detectors from PyTorch to NVIDIA Jetson, stage by stage.",
    )
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, module_name in _available_verbs():
        if only is not None and verb != only:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            sub.add_parser(verb, help=f"(unavailable: {exc})")
            continue
        verb_parser = sub.add_parser(verb, help=module.HELP, description=module.HELP)
        module.add_arguments(verb_parser)
        verb_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    import importlib.util

    known = verb in VERBS and importlib.util.find_spec(VERBS[verb]) is not None
    parser = build_parser(only=verb if known else None)
    args = parser.parse_args(argv)
    if not getattr(args, "verb", None):
        parser.print_help()
        return 2
    if not hasattr(args, "_run"):
        parser.error(f"the {args.verb!r} verb cannot be loaded in this installation; see `edge --help`")
    return run_verb(args._run, args)


if __name__ == "__main__":
    sys.exit(main())
