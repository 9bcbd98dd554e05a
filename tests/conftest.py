"""Test configuration: hypothesis profiles.

The default profile ("engine") keeps the whole engine suite well under a minute: few examples
per property, no per-example deadline (the first call of an op may import sympy), and a fixed
derandomized seed so a run is reproducible. Pick another profile with the environment variable
``UNROLLGRAPH_HYPOTHESIS_PROFILE`` (e.g. ``thorough`` for a long local search).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "engine",
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("UNROLLGRAPH_HYPOTHESIS_PROFILE", "engine"))
