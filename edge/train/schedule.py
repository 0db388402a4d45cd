"""Learning-rate schedule, stepped once per iteration: linear warm-up, then cosine or step decay.

Pure Python (no torch): ``factor(it)`` is the multiplier of the peak learning rate at iteration ``it``
(0-based, counted over the whole run), so a resumed run that restores the iteration counter continues
on exactly the same curve.

    warm-up (it < W):  f = s + (1 - s) * it / W               s = warmup_start_factor
    cosine  (it >= W): f = e + (1 - e) * (1 + cos(pi * p)) / 2,  p = (it - W) / (T - W),  e = final_factor
    step    (it >= W): f = gamma ** (number of milestones m with it >= m * T)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List


@dataclass
class LRSchedule:
    """Per-iteration learning rate of a run of ``total_iters`` iterations.

    Attributes:
        base_lr: the peak learning rate (reached at the end of warm-up).
        total_iters: iterations in the whole run (epochs x iterations per epoch).
        warmup_iters: linear warm-up length (0: none).
        warmup_start_factor: the warm-up's first factor (lr = base_lr * it at iteration 0).
        kind: ``cosine`` or ``step``.
        final_factor: cosine's last factor. milestones: step's fractions of ``total_iters``; gamma: its factor.
        iteration: iterations done so far (the state that ``state_dict`` saves).
    """

    base_lr: float
    total_iters: int
    warmup_iters: int = 0
    warmup_start_factor: float = 0.01
    kind: str = "cosine"
    final_factor: float = 0.01
    milestones: List[float] = field(default_factory=lambda: [0.67, 0.9])
    gamma: float = 0.1
    iteration: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("cosine", "step"):
            raise ValueError(f"schedule kind {self.kind!r}: expected 'cosine' or 'step'")
        if self.total_iters < 1:
            raise ValueError(f"total_iters = {self.total_iters}: expected >= 1")
        self.warmup_iters = max(0, min(int(self.warmup_iters), int(self.total_iters)))

    def factor(self, it: int) -> float:
        """Multiplier of ``base_lr`` at iteration ``it``."""
        if it < self.warmup_iters:
            s = self.warmup_start_factor
            return s + (1.0 - s) * it / float(self.warmup_iters)
        if self.kind == "cosine":
            span = max(1, self.total_iters - self.warmup_iters)
            p = min(1.0, (it - self.warmup_iters) / float(span))
            e = self.final_factor
            return e + (1.0 - e) * 0.5 * (1.0 + math.cos(math.pi * p))
        passed = sum(1 for m in self.milestones if it >= m * self.total_iters)
        return self.gamma**passed

    def lr(self, it: int) -> float:
        return self.base_lr * self.factor(it)

    def apply(self, optimizer: Any, it: int = -1) -> float:
        """Set every param group's ``lr`` for iteration ``it`` (default: the current one); returns it.

        A group's own ``lr_scale`` key (default 1) multiplies its learning rate.
        """
        lr = self.lr(self.iteration if it < 0 else it)
        for group in optimizer.param_groups:
            group["lr"] = lr * float(group.get("lr_scale", 1.0))
        return lr

    def step(self) -> None:
        self.iteration += 1

    def state_dict(self) -> Dict[str, Any]:
        return {
            "iteration": int(self.iteration),
            "base_lr": float(self.base_lr),
            "total_iters": int(self.total_iters),
            "warmup_iters": int(self.warmup_iters),
            "kind": self.kind,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore the iteration counter (the schedule's shape comes from the run's config)."""
        self.iteration = int(state["iteration"])
