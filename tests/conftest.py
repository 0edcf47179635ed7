"""Shared test configuration: hypothesis profiles and the vendored vectors' folder."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

REPO_ROOT = Path(__file__).resolve().parent.parent
# Vendored with their license and source (tests/vectors/wycheproof/README.md): the repository stands alone.
WYCHEPROOF_DIR = REPO_ROOT / "tests" / "vectors" / "wycheproof"

settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "fuzz", max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
