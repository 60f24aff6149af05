"""Weight downloads from a loopback HTTP server and file:// URLs; resolving and fetching cards."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import yaml

from meerbench.errors import ModelError
from meerbench.models.card_schema import read_card
from meerbench.models.cards import register_card_file
from meerbench.models.weights import fetch, fetch_model_weights, resolve_weights, weights_dir
from meerbench.registry import MODELS

PAYLOAD = b"not really weights " * 5000
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args: object) -> None:
        QuietHandler.requests.append(self.path)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("served")
    (root / "w.bin").write_bytes(PAYLOAD)
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_http_fetch_verifies_and_reuses(server, tmp_path):
    path = fetch(f"{server}/w.bin", SHA, "w.bin", tmp_path)
    assert path == tmp_path / "w.bin" and path.read_bytes() == PAYLOAD
    before = len(QuietHandler.requests)
    assert fetch(f"{server}/w.bin", SHA.upper(), "w.bin", tmp_path) == path
    assert len(QuietHandler.requests) == before  # already there with the right hash


def test_corrupted_download_leaves_nothing(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(ModelError) as info:
        fetch(f"{server}/w.bin", wrong, "w.bin", tmp_path)
    assert wrong in str(info.value) and SHA in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_file_url(tmp_path):
    source = tmp_path / "src" / "w.bin"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    path = fetch(source.as_uri(), SHA, "w.bin", tmp_path / "dest")
    assert path.read_bytes() == PAYLOAD


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("kind", ["unreachable", "404"])
def test_download_errors_say_where_to_put_the_file(server, tmp_path, kind):
    url = (f"http://127.0.0.1:{closed_port()}/w.bin" if kind == "unreachable"
           else f"{server}/nothing.bin")
    with pytest.raises(ModelError) as info:
        fetch(url, SHA, "model.pth", tmp_path)
    message = str(info.value)
    assert url in message and "model.pth" in message and str(tmp_path) in message
    assert list(tmp_path.iterdir()) == []


def card_file(folder: Path, name: str, **weights: object) -> Path:
    data = {"schema": 1, "name": name, "description": "test card", "architecture": "iresnet18",
            "contract": {"input_size": [112, 112], "channels": "RGB", "mean": [0.5] * 3,
                         "std": [0.5] * 3, "alignment": "arcface-112", "embedding_dim": 512},
            "weights": {"licence": "test", **weights}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_resolve_weights(tmp_path):
    card = read_card(card_file(tmp_path, "local-test", file_name="lt.pth", url="http://x/lt.pth"))
    with pytest.raises(ModelError, match="meerbench weights fetch local-test"):
        resolve_weights(card)
    placed = weights_dir() / "lt.pth"
    placed.parent.mkdir(parents=True, exist_ok=True)
    placed.write_bytes(b"x")
    try:
        assert resolve_weights(card) == placed
    finally:
        placed.unlink()
    other = tmp_path / "mine.pth"
    other.write_bytes(b"x")
    assert resolve_weights(card, other) == other
    with pytest.raises(ModelError, match="not found"):
        resolve_weights(card, tmp_path / "nope.pth")


@pytest.fixture()
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))


def test_fetch_model_weights(scratch_registry, server, tmp_path):
    name = register_card_file(card_file(tmp_path, "fetch-test", file_name="ft.pth",
                                        url=f"{server}/w.bin", sha256=SHA))
    path = fetch_model_weights(name, progress=False)
    assert path == weights_dir() / "ft.pth" and path.read_bytes() == PAYLOAD
    path.unlink()
    unverified = register_card_file(card_file(tmp_path, "nohash-test", file_name="nh.pth",
                                              url=f"{server}/w.bin"))
    with pytest.raises(ModelError, match="--sha256"):
        fetch_model_weights(unverified)
    assert fetch_model_weights(unverified, sha256=SHA, progress=False).read_bytes() == PAYLOAD


def test_fetch_without_url_explains_manual_download():
    with pytest.raises(ModelError) as info:
        fetch_model_weights("arcface-r50")
    message = str(info.value)
    assert "by hand" in message and "1drv.ms" in message
    assert str(weights_dir() / "arcface-r50-ms1mv3.pth") in message
    with pytest.raises(ModelError, match="nothing to fetch"):
        fetch_model_weights("pixels")
