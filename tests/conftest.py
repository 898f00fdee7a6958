"""Shared fixtures: the real assets in ../shared/assets and tiny models trained in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEPORT_SHARED_ASSETS", ROOT.parent / "shared" / "assets"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def assets() -> Path:
    """The real models and data of ../shared/assets; tests that need them skip without it."""
    if not SHARED.is_dir():
        pytest.skip(f"real assets not found at {SHARED} (a fresh clone has no ../shared; CI has it)")
    return SHARED
