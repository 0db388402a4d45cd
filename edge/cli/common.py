"""What every command-line entry point shares: logging set up from -v/-q, and one way to end a verb.

An ``EdgeError`` is one clear line and exit status 2 (no traceback), Ctrl-C exit 130. A write that fails
(``edge.errors.OutputError``: the path and the cause, ENOSPC, EISDIR, EACCES) is an EdgeError; an
``OSError`` that only a write can raise (a full disk, a read-only file system) and that escaped the
atomic writers is reported the same way.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Optional

from edge.errors import WRITE_ERRNOS, EdgeError, OutputError


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def run_verb(run: Callable[[argparse.Namespace], Optional[int]], args: argparse.Namespace) -> int:
    """Run a verb with logging set up: an EdgeError is one clear line and exit 2, Ctrl-C exit 130."""
    configure_logging(args.verbose, args.quiet)
    try:
        return int(run(args) or 0)
    except EdgeError as exc:
        logging.getLogger("edge").error("%s", exc)
        return 2
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        logging.getLogger("edge").debug("write failed", exc_info=True)
        logging.getLogger("edge").error("%s", OutputError.from_os_error(exc.filename or "a file", exc))
        return 2
    except KeyboardInterrupt:
        logging.getLogger("edge").error("interrupted")
        return 130
