"""scmm.datasets: download, checksum and cache, against a local HTTP server serving a fixture."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from _real_data import FIXTURES, real_data

import scmm
from scmm import datasets

FILE = "pbmc10k_cite_500.h5mu"


@pytest.fixture(scope="module")
def server():
    """Serves tests/fixtures on 127.0.0.1 (a free port); ``server.requests`` lists the paths asked for."""
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(FIXTURES), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.requests = requests
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy_for_localhost(monkeypatch):
    """A proxy set in the environment must not be asked for 127.0.0.1."""
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def checksum():
    return hashlib.sha256((FIXTURES / FILE).read_bytes()).hexdigest()


@pytest.fixture
def registered(monkeypatch, server, checksum):
    """A temporary registry entry pointing at the local server."""
    entry = datasets.Dataset(server.base + FILE, checksum, "pbmc_small/pbmc_small.h5mu")
    monkeypatch.setitem(datasets.REGISTRY, "pbmc_small", entry)
    return entry


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_download_verify_and_reuse(tmp_path, server, registered):
    before = len(server.requests)
    path = datasets.fetch("pbmc_small", cache_dir=tmp_path, progress=False)
    assert path == tmp_path / "pbmc_small" / "pbmc_small.h5mu"
    assert path.read_bytes() == (FIXTURES / FILE).read_bytes()
    assert server.requests[before:] == ["/" + FILE]
    assert leftovers(tmp_path) == [path]                         # no temporary file left
    # a second fetch reuses the verified file without touching the server
    assert datasets.fetch("pbmc_small", cache_dir=tmp_path, progress=False) == path
    assert len(server.requests) == before + 1
    mdata = scmm.read(path)
    assert mdata.n_obs == 500 and set(mdata.mod) == {"rna", "prot"}


def test_cache_dir_from_environment(tmp_path, monkeypatch, server, registered):
    monkeypatch.setenv("SCMM_DATA_DIR", str(tmp_path / "env-cache"))
    assert datasets.cache_dir() == tmp_path / "env-cache"
    path = datasets.fetch("pbmc_small", progress=False)
    assert path == tmp_path / "env-cache" / "pbmc_small" / "pbmc_small.h5mu" and path.is_file()
    monkeypatch.delenv("SCMM_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets.cache_dir() == tmp_path / "xdg" / "scmm"


def test_url_and_checksum_without_registry(tmp_path, server, checksum):
    path = datasets.fetch("adhoc", cache_dir=tmp_path, url=server.base + FILE, sha256=checksum,
                          progress=False)
    assert path == tmp_path / "adhoc" / FILE and path.is_file()
    with pytest.raises(KeyError, match=r"unknown dataset 'adhoc'.*pbmc10k_cite.*url= and sha256="):
        datasets.fetch("adhoc", cache_dir=tmp_path)


def test_wrong_checksum_raises_and_leaves_nothing(tmp_path, server):
    with pytest.raises(datasets.DatasetError, match=r"SHA-256 [0-9a-f]{64}, expected 0{64}; it was not kept"):
        datasets.fetch("bad", cache_dir=tmp_path, url=server.base + FILE, sha256="0" * 64,
                       progress=False)
    assert leftovers(tmp_path) == []


def test_http_404_is_a_clear_error(tmp_path, server):
    with pytest.raises(datasets.DatasetError, match=r"could not download http://127\.0\.0\.1:\d+/missing\.h5mu: "
                                                    r"HTTP 404"):
        datasets.fetch("missing", cache_dir=tmp_path, url=server.base + "missing.h5mu", sha256="0" * 64,
                       progress=False)
    assert leftovers(tmp_path) == []


def test_unreachable_server_is_a_clear_error(tmp_path, server):
    with socket_closed() as url:
        with pytest.raises(datasets.DatasetError, match=r"could not download http://127\.0\.0\.1:\d+/x\.h5mu: "):
            datasets.fetch("x", cache_dir=tmp_path, url=url, sha256="0" * 64, progress=False)
    assert leftovers(tmp_path) == []


class socket_closed:
    """A URL on a local port where nothing listens."""

    def __enter__(self):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return f"http://127.0.0.1:{self.port}/x.h5mu"

    def __exit__(self, *exc):
        return False


def test_corrupt_cached_file_is_refused_not_used(tmp_path, server, registered):
    dest = tmp_path / "pbmc_small" / "pbmc_small.h5mu"
    dest.parent.mkdir()
    dest.write_bytes(b"truncated")
    before = len(server.requests)
    with pytest.raises(datasets.DatasetError, match=r"exists but its SHA-256 is not the expected.*delete it"):
        datasets.fetch("pbmc_small", cache_dir=tmp_path, progress=False)
    assert len(server.requests) == before and dest.read_bytes() == b"truncated"


def test_filename_cannot_leave_the_cache(tmp_path, server, checksum):
    for bad in ("../escape.h5mu", "/tmp/abs.h5mu"):
        with pytest.raises(ValueError, match="relative path inside the cache"):
            datasets.fetch("x", cache_dir=tmp_path, url=server.base + FILE, sha256=checksum,
                           filename=bad, progress=False)
    assert not (tmp_path.parent / "escape.h5mu").exists()


def test_readers_go_through_fetch(tmp_path, monkeypatch, server, checksum):
    """pbmc10k_cite() downloads its registry entry (here redirected to the fixture) and reads it."""
    monkeypatch.setitem(datasets.REGISTRY, "pbmc10k_cite",
                        datasets.Dataset(server.base + FILE, checksum, "pbmc10k_cite/pbmc10k_cite.h5mu"))
    mdata = datasets.pbmc10k_cite(cache_dir=tmp_path, progress=False)
    assert mdata.n_obs == 500 and (tmp_path / "pbmc10k_cite" / "pbmc10k_cite.h5mu").is_file()


def test_registry_entries_are_well_formed():
    assert {"pbmc10k_cite", "snare_cortex"} <= set(datasets.REGISTRY)
    for entry in datasets.REGISTRY.values():
        assert entry.url.startswith("https://")
        assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0
        assert not Path(entry.filename).is_absolute() and ".." not in Path(entry.filename).parts


def test_import_does_not_load_torch():
    code = "import sys, scmm.datasets, scmm; scmm.datasets.fetch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", sorted(datasets.REGISTRY))
def test_registry_checksums_match_the_full_data(name):
    """With the full datasets present (../shared/data has the cache layout) fetch finds and verifies
    them without the network; on a fresh clone this is skipped."""
    entry = datasets.REGISTRY[name]
    path = real_data(entry.filename)
    root = path.parents[len(Path(entry.filename).parts) - 1]
    assert datasets.fetch(name, cache_dir=root, url="http://127.0.0.1:9/unused", progress=False) == path
