"""Where the tests find real data: small subsets in tests/fixtures (always there) and
the full public datasets (present on CI, absent on a fresh clone).

The full datasets are looked for in ``$SCMM_SHARED_DATA`` if set, else in
``../shared/data`` beside the repository, then in the ``scmm.datasets`` cache
(``$SCMM_DATA_DIR`` or ``~/.cache/scmm``), which has the same layout; a test
that needs one that is absent is skipped with a reason that says how to get it.
``SCMM_SHARED_DATA=/nonexistent`` simulates a fresh clone.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DEFAULT_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# full-data file -> how to fetch it
FETCH = {
    "pbmc10k_cite/pbmc10k_cite.h5mu": "scmm.datasets.pbmc10k_cite()",
    "pbmc10k_cite/filtered_feature_bc_matrix.h5": "scmm.datasets.fetch('pbmc10k_cite_10x')",
    "snare_cortex/snare_cortex.h5mu": "scmm.datasets.snare_cortex()",
}


def shared_dir() -> Path:
    """``$SCMM_SHARED_DATA`` if set, else ``../shared/data``."""
    env = os.environ.get("SCMM_SHARED_DATA")
    return Path(env).expanduser() if env else DEFAULT_SHARED


def _label(folder: Path) -> str:
    return "../shared/data" if folder == DEFAULT_SHARED else str(folder)


def fixture(name: str) -> Path:
    """A file of tests/fixtures; its absence is a broken checkout, so it fails."""
    path = FIXTURES / name
    assert path.is_file(), f"fixture {path} is missing: regenerate with tests/fixtures/make_fixtures.py"
    return path


def real_data(rel: str) -> Path:
    """The full-data file ``rel`` (e.g. 'pbmc10k_cite/pbmc10k_cite.h5mu'), or a plain skip."""
    from scmm.datasets import cache_dir

    for folder in (shared_dir(), cache_dir()):
        if (folder / rel).is_file():
            return folder / rel
    how = FETCH.get(rel)
    hint = f": fetch it with {how}" if how else ""
    pytest.skip(f"{_label(shared_dir())}/{rel} absent{hint}")
