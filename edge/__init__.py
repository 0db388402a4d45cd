"""edge: single-shot detectors from PyTorch to NVIDIA Jetson.

Stages (each a file with a JSON sidecar): train -> export -> surgery -> quantize -> build -> run.
See README.md and docs/ for the guide. Library code logs through ``logging``; only the CLI prints.
"""

__version__ = "0.1.0"
