"""Shared test fixtures: where the real data lives, and skipping when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Real test data (read-only): $SAMLUNG_DATA, else <repo>/../shared/data.
DATA_DIR = Path(
    os.environ.get("SAMLUNG_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


def requires_data(*parts: str) -> pytest.MarkDecorator:
    """Skip a test unless ``DATA_DIR / parts...`` exists."""
    target = DATA_DIR.joinpath(*parts)
    return pytest.mark.skipif(
        not target.exists(),
        reason=f"real data not found at {target}; set SAMLUNG_DATA to the shared data folder",
    )


@pytest.fixture
def data_dir() -> Path:
    """The real data folder; skips the test when it is absent."""
    if not DATA_DIR.is_dir():
        pytest.skip(
            f"real data not found at {DATA_DIR}; set SAMLUNG_DATA to the shared data folder"
        )
    return DATA_DIR
