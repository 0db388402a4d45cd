"""Per-epoch training history: a CSV of losses, learning rate and validation mAP, and a PNG plot.

Rows are plain dicts (epoch -> figures), kept in the checkpoint (weights_only-safe) so a resumed run
carries its history on. Columns are the union of every row's keys in first-seen order; a row without a
figure (no evaluation that epoch) leaves the cell empty.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from edge.artifacts import atomic_open
from edge.errors import MissingDependencyError

log = logging.getLogger(__name__)

PathLike = Union[str, Path]


class History:
    """Ordered rows of per-epoch figures (``epoch`` first)."""

    def __init__(self, rows: Optional[List[Dict[str, Any]]] = None):
        self.rows: List[Dict[str, Any]] = [dict(r) for r in (rows or [])]

    def add(self, row: Dict[str, Any]) -> None:
        if "epoch" not in row:
            raise ValueError("a history row needs an 'epoch' key")
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [dict(row)]

    def columns(self) -> List[str]:
        cols: List[str] = []
        for row in self.rows:
            for key in row:
                if key not in cols:
                    cols.append(key)
        return cols

    def to_state(self) -> List[Dict[str, Any]]:
        """Plain list of dicts of str/int/float/None (for the checkpoint)."""
        return [
            {str(k): (v if isinstance(v, (int, float, str)) or v is None else float(v)) for k, v in r.items()}
            for r in self.rows
        ]

    def column(self, name: str) -> List[Optional[float]]:
        return [_as_float(r.get(name)) for r in self.rows]

    def write_csv(self, path: PathLike) -> Path:
        """Write all rows as CSV (atomically); floats with 6 significant digits, empty for missing."""
        cols = self.columns()
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(cols)
        for row in self.rows:
            writer.writerow([_cell(row.get(c)) for c in cols])
        with atomic_open(path, "w") as fh:
            fh.write(buf.getvalue())
        return Path(path)

    @classmethod
    def read_csv(cls, path: PathLike) -> "History":
        with open(path, encoding="utf-8", newline="") as fh:
            rows = []
            for raw in csv.DictReader(fh):
                row: Dict[str, Any] = {}
                for k, v in raw.items():
                    if v == "" or v is None:
                        continue
                    try:
                        row[k] = int(v) if k == "epoch" else float(v)
                    except ValueError:
                        row[k] = v
                rows.append(row)
        return cls(rows)

    def plot(self, path: PathLike, title: str = "", split: Optional[str] = "val") -> Path:
        """PNG with training losses (left) and the mAP on the validation ``split`` (right) per epoch, as
        ``figure`` draws them. Needs matplotlib."""
        plt = _pyplot()
        fig = self.figure(title, split)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        with atomic_open(path, "wb") as fh:
            fh.write(buf.getvalue())
        return Path(path)

    def figure(self, title: str = "", split: Optional[str] = "val") -> Any:
        """The plot as a matplotlib Figure (the caller closes it): two panels on one whole-epoch axis
        (integer ticks); the mAP panel and its legend name the split its figures were measured on."""
        plt = _pyplot()
        from matplotlib.ticker import MaxNLocator

        epochs = [r["epoch"] for r in self.rows]
        loss_cols = [c for c in self.columns() if c == "loss" or c.startswith("loss_")]
        map_cols = [c for c in ("map50", "map50_95") if c in self.columns()]
        on = f" (split: {split})" if split else ""
        fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(11, 4))
        for col in loss_cols:
            ax_loss.plot(*_series(epochs, self.column(col)), marker="o", ms=3, label=col,
                         lw=2.0 if col == "loss" else 1.0)
        ax_loss.set_ylabel("training loss")
        if loss_cols:
            ax_loss.legend(fontsize=8)
        for col in map_cols:
            label = col.replace("map", "mAP").replace("_", "-")
            ax_map.plot(*_series(epochs, self.column(col)), marker="o", ms=3, label=f"val {label}{on}")
        if epochs:
            ax_map.set_xlim(ax_loss.get_xlim())  # same epoch axis on both panels
        ax_map.set_ylabel(f"validation mAP{on}")
        ax_map.set_ylim(0, 1)
        if map_cols:
            ax_map.legend(fontsize=8)
        for ax in (ax_loss, ax_map):
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, never 2.5
            ax.grid(alpha=0.3)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return fig


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError(
            "matplotlib", "the training history plot", "install it with: pip install 'edge-detect[plot]'"
        ) from None
    return plt


def _series(epochs: List[Any], values: List[Optional[float]]):
    pairs = [(e, v) for e, v in zip(epochs, values) if v is not None and not math.isnan(v)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _as_float(value: Any) -> Optional[float]:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)
