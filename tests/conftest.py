"""Shared test configuration: hypothesis profiles and paths to outside vectors."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

REPO_ROOT = Path(__file__).resolve().parent.parent
# ../shared/wycheproof beside the checkout (CI lays shared/ beside its clone).
WYCHEPROOF_DIR = Path(os.environ.get("SECURECHAT_WYCHEPROOF", REPO_ROOT.parent / "shared" / "wycheproof"))

settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "fuzz", max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
