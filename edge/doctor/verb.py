"""The ``edge doctor`` verb: the environment report and, when asked, the self-test, from the command
line's options (``run_doctor``). ``edge.cli.doctor`` parses the options and prints the report.
"""

from __future__ import annotations

from typing import List, Optional

from edge.doctor.probes import collect_report
from edge.doctor.report import DoctorReport
from edge.doctor.selftest import SelftestConfig, run_selftest
from edge.errors import EdgeError


def _selftest_model(model: Optional[str]) -> str:
    if model:
        return str(model)
    from edge.bundled import bundled_model

    return str(bundled_model())


def run_doctor(*, selftest: bool = False, model: Optional[str] = None, int8_model: Optional[str] = None,
               images: Optional[str] = None, precisions: Optional[List[str]] = None, iterations: int = 20,
               workspace_mb: int = 256, work_dir: Optional[str] = None) -> DoctorReport:
    """``edge doctor [--selftest ...]``: the environment report, plus the self-test's checks with ``selftest``.

    model (default: the bundled model), int8_model, images, precisions and work_dir are self-test options:
    giving one without ``selftest`` raises EdgeError. Files are kept in ``work_dir`` when it is given.
    """
    selftest_only = (("--model", model), ("--int8-model", int8_model), ("--images", images),
                     ("--precision", precisions), ("--work-dir", work_dir))
    given = [flag for flag, value in selftest_only if value is not None]
    if given and not selftest:
        raise EdgeError(f"{', '.join(given)}: self-test option(s) given without --selftest; add --selftest")
    report = collect_report()
    if selftest:
        cfg = SelftestConfig(
            model=_selftest_model(model), int8_model=int8_model, images=images,
            precisions=precisions, iterations=iterations, workspace_mb=workspace_mb,
            work_dir=work_dir, keep=work_dir is not None,
        )
        report.selftest = run_selftest(cfg)
    return report
