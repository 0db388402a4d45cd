"""The report of ``edge doctor``: one ``Check`` per line (status ok | warn | fail | skip), the
``DoctorReport`` that holds them (environment checks, self-test checks, platform facts), its text and JSON
forms, and its exit code (1 when a check failed).
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from edge.doctor.facts import PlatformFacts

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
STATUSES = (OK, WARN, FAIL, SKIP)


@dataclass
class Check:
    """One report line. ``status``: ok | warn | fail | skip; ``fix``: what to do when not ok."""

    name: str
    status: str
    summary: str
    fix: str = ""
    details: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check status {self.status!r} is not one of {STATUSES}")

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "status": self.status, "summary": self.summary, "fix": self.fix,
                "details": self.details}


@dataclass
class DoctorReport:
    """The environment checks and, with --selftest, the self-test checks."""

    checks: List[Check]
    selftest: Optional[List[Check]] = None
    facts: Optional[PlatformFacts] = None

    def all_checks(self) -> List[Check]:
        return list(self.checks) + list(self.selftest or [])

    def counts(self) -> Dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for c in self.all_checks():
            out[c.status] += 1
        return out

    @property
    def exit_code(self) -> int:
        """1 when any check failed; skipped and warned checks do not fail the run."""
        return 1 if any(c.status == FAIL for c in self.all_checks()) else 0

    def to_dict(self) -> Dict[str, Any]:
        from edge import __version__

        data: Dict[str, Any] = {
            "edge_version": __version__,
            "python": sys.version.split()[0],
            "platform": f"{platform.system()} {platform.machine()}",
            "checks": [c.to_dict() for c in self.checks],
            "summary": self.counts(),
            "exit_code": self.exit_code,
        }
        if self.facts is not None:
            data["jetson"] = {"is_jetson": self.facts.is_jetson, "model": self.facts.model, "l4t": self.facts.l4t,
                              "jetpack": self.facts.jetpack}
        if self.selftest is not None:
            data["selftest"] = [c.to_dict() for c in self.selftest]
        return data

    def format_text(self) -> str:
        from edge import __version__

        lines = [f"edge doctor: edge {__version__}, Python {sys.version.split()[0]}, "
                 f"{platform.system()} {platform.machine()}"]
        sections = [("environment", self.checks)]
        if self.selftest is not None:
            sections.append(("self-test", self.selftest))
        for title, checks in sections:
            lines.append(f"-- {title}")
            width = max([len(c.name) for c in checks] + [8])
            for c in checks:
                lines.append(f"  {c.status:<4}  {c.name:<{width}}  {c.summary}")
                if c.fix and c.status != OK:
                    lines.append(f"        {'':<{width}}  fix: {c.fix}")
        counts = self.counts()
        lines.append("summary: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES))
        return "\n".join(lines)

    def format_json(self) -> str:
        """``to_dict`` as indented JSON (what ``edge doctor --json`` prints)."""
        return json.dumps(self.to_dict(), indent=2, default=str)
