"""lsutils — the helper package of the *Label Smoothing* book.

Everything a chapter needs is importable from the top level::

    import lsutils as ls
    ls.smooth_targets(torch.tensor([2]), num_classes=5, epsilon=0.1)

Modules: ``targets`` (smoothed targets and conventions), ``losses`` (label-smoothed
cross-entropy), ``registry`` (loss specs for the cached trainer), ``config`` (compute
profiles), ``data``, ``models``, ``train`` (fast trainer + cache), ``metrics``
(calibration, OOD), ``distill``, ``als``, ``schedules`` and ``viz``.
Importing ``lsutils`` never touches the network.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .registry import *  # noqa: F401,F403
from .targets import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .config import *  # noqa: F401,F403
from .data import *  # noqa: F401,F403
from .models import *  # noqa: F401,F403
from .train import *  # noqa: F401,F403
from .report import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403
# chapter modules (one line each; keep this marker last)
from .distill import *  # noqa: F401,F403
from .geometry import *  # noqa: F401,F403
from .selective import *  # noqa: F401,F403
from .schedules import *  # noqa: F401,F403
from .als import *  # noqa: F401,F403
