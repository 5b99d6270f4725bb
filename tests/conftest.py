"""Shared fixtures: where real data is (tests/fixtures always; the full datasets when present)."""
from __future__ import annotations

from pathlib import Path

import pytest
from _real_data import FIXTURES, _label, shared_dir

SHARED_DATA = shared_dir()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``$SCMM_SHARED_DATA`` or ``../shared/data`` (the full datasets); skips plainly if absent.

    Tests that must run on a fresh clone use ``fixtures_dir`` instead; see tests/_real_data.py.
    """
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{_label(SHARED_DATA)} absent: the full datasets come with scmm.datasets "
                    "(or set SCMM_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """tests/fixtures: small subsets of the real datasets, in the repository."""
    return FIXTURES


@pytest.fixture(scope="session")
def planted_chromatin_run(tmp_path_factory) -> dict:
    """A trained, analysed run of the planted-motif simulation with its chromatin analyses
    (tests/_chromatin_runs.py; about a minute on 2 cores)."""
    from _chromatin_runs import planted_run
    return planted_run(tmp_path_factory.mktemp("planted"))
