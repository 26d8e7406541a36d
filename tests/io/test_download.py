"""ssl_jax.io.dataset.download against a local HTTP server: resume, verification, safe extraction."""

from __future__ import annotations

import hashlib
import io
import json
import re
import stat
import subprocess
import sys
import tarfile
import threading
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ssl_jax.cli.data import download as download_cmd
from ssl_jax.io.dataset import download as dl

REPO = Path(__file__).resolve().parents[2]


class FileServer:
    """Serves `files` at /files/<name> (with Range support) and a Zenodo-like record at /api."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.cut: dict[str, int] = {}  # name -> bytes sent before the connection drops (once)
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        self.record: dict | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = urllib.parse.urlparse(self.path).path
                rng = self.headers.get("Range")
                server.requests.append((path, rng))
                if path == "/api/record":
                    if server.record is None:
                        return self.send_error(404)
                    body = json.dumps(server.record).encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    return self.wfile.write(body)
                name = urllib.parse.unquote(path.removeprefix("/files/"))
                data = server.files.get(name)
                if data is None:
                    return self.send_error(404)
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and not server.ignore_range:
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        return self.end_headers()
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                cut = server.cut.pop(name, None)
                self.wfile.write(body if cut is None else body[:cut])  # then the connection closes

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def file_requests(self, name: str) -> list[str | None]:
        return [r for p, r in self.requests if p == f"/files/{name}"]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


DATA = _bytes(300_000)
SPEC = dl.RemoteFile("a.bin", len(DATA), _md5(DATA))


@pytest.fixture
def server():
    s = FileServer({"a.bin": DATA})
    yield s
    s.close()


def _get(server, tmp_path, spec=SPEC, **kw):
    kw.setdefault("backoff", 0.0)
    return dl.download_file(spec, tmp_path, base_url=server.url + "/files", **kw)


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    server.cut["a.bin"] = 100_000
    msgs: list[str] = []
    path = _get(server, tmp_path, log=msgs.append)
    assert path.read_bytes() == DATA and not (tmp_path / "a.bin.part").exists()
    assert server.file_requests("a.bin") == [None, "bytes=100000-"]
    assert any("connection lost at 100000 of 300000 bytes" in m for m in msgs)
    assert msgs[-1] == "a.bin: done (size + md5)"
    # already complete and verified: no request at all
    _get(server, tmp_path)
    assert len(server.file_requests("a.bin")) == 2


def test_resume_from_an_earlier_run(server, tmp_path):
    (tmp_path / "a.bin.part").write_bytes(DATA[:1234])
    assert _get(server, tmp_path).read_bytes() == DATA
    assert server.file_requests("a.bin") == ["bytes=1234-"]
    # the original downloader left partial files under the final name: resumed too
    (tmp_path / "a.bin").write_bytes(DATA[:5000])
    assert _get(server, tmp_path).read_bytes() == DATA
    assert server.file_requests("a.bin")[-1] == "bytes=5000-"


def test_gives_up_after_retries_and_resumes_next_run(server, tmp_path):
    server.cut["a.bin"] = 10_000
    with pytest.raises(dl.DownloadError, match=r"a.bin: gave up after 1 attempts .*10000 of 300000 "
                                               r"bytes; last error: IncompleteRead.*run again to resume"):
        _get(server, tmp_path, retries=0)
    assert (tmp_path / "a.bin.part").stat().st_size == 10_000
    assert _get(server, tmp_path).read_bytes() == DATA
    assert server.file_requests("a.bin")[-1] == "bytes=10000-"


def test_server_ignoring_range_restarts(server, tmp_path):
    server.ignore_range = True
    (tmp_path / "a.bin.part").write_bytes(b"x" * 777)  # garbage that a 200 must replace
    assert _get(server, tmp_path).read_bytes() == DATA


def test_corrupted_file_is_detected_and_deleted(server, tmp_path):
    bad = bytearray(DATA)
    bad[123_456] ^= 0xFF
    server.files["a.bin"] = bytes(bad)
    with pytest.raises(dl.ChecksumError, match=rf"a.bin: downloaded file is corrupt \(md5 {_md5(bad)}, "
                                               rf"expected {SPEC.md5}\); it was deleted"):
        _get(server, tmp_path)
    assert not (tmp_path / "a.bin").exists() and not (tmp_path / "a.bin.part").exists()
    # a corrupt file already in place is found by verification and fetched again
    (tmp_path / "a.bin").write_bytes(bytes(bad))
    assert dl.verify_file(tmp_path / "a.bin", SPEC).detail.startswith("md5 ")
    server.files["a.bin"] = DATA
    assert _get(server, tmp_path).read_bytes() == DATA


def test_size_and_http_errors(server, tmp_path):
    server.files["a.bin"] = DATA[:-1]
    with pytest.raises(dl.DownloadError, match=r"a.bin: the server has 299999 bytes, expected 300000"):
        _get(server, tmp_path)
    with pytest.raises(dl.DownloadError, match=r"nope.bin: HTTP 404 .* from http://127\.0\.0\.1:\d+/files/nope\.bin"):
        _get(server, tmp_path, spec=dl.RemoteFile("nope.bin", 10))
    with pytest.raises(ValueError, match="only http"):
        dl.download_file(SPEC, tmp_path, url="file:///etc/passwd")


def test_checksums_from_the_record_api(server, tmp_path):
    unpinned = dl.RemoteFile("a.bin", len(DATA))
    server.record = {"files": [{"key": "a.bin", "size": len(DATA), "checksum": "md5:" + _md5(DATA)}]}
    msgs: list[str] = []
    kw = dict(base_url=server.url + "/files", checksums_url=server.url + "/api/record",
              manifest=[unpinned], backoff=0.0, log=msgs.append)
    (path,) = dl.download(["a.bin"], tmp_path, **kw)
    assert path.read_bytes() == DATA and msgs[-1] == "a.bin: done (size + md5)"
    res = dl.verify(["a.bin"], tmp_path, checksums_url=server.url + "/api/record", manifest=[unpinned])
    assert res == [dl.Verification("a.bin", True, "size + md5")]
    path.write_bytes(DATA[:-1] + b"\0")
    assert not dl.verify(["a.bin"], tmp_path, checksums_url=server.url + "/api/record",
                         manifest=[unpinned])[0].ok
    # no record reachable → a warning and size-only checks
    server.record = None
    msgs.clear()
    res = dl.verify(["a.bin"], tmp_path, checksums_url=server.url + "/api/record", manifest=[unpinned],
                    log=msgs.append)
    assert res[0].detail == "size only (no checksum known)" and "warning: could not read checksums" in msgs[0]
    # InvenioRDM shape
    server.record = {"files": {"entries": {"a.bin": {"key": "a.bin", "size": 1, "checksum": "md5:" + "0" * 32}}}}
    assert dl.fetch_checksums(server.url + "/api/record") == {"a.bin": ("0" * 32, 1)}


def test_select_files():
    assert [f.name for f in dl.select_files()] == [
        "images.zip", "churches.json", "building_parts.json", "LICENSE", "README.md", "style_names.txt"]
    assert len(dl.select_files(["all"])) == 11
    assert [f.name for f in dl.select_files(["all"], exclude=["images.zip", "models.zip"])][:2] == [
        "image_meta.json", "churches.json"]
    with pytest.raises(ValueError, match=r"unknown file.* nope\.zip; the record has images\.zip"):
        dl.select_files(["nope.zip"])
    assert dl.file_url("a b.json", "http://x/files/") == "http://x/files/a%20b.json?download=1"


# ------------------------------------------------------------------------------ CLI


@pytest.fixture
def real_names_server():
    files = {"parent_child_rel.txt": _bytes(925, 1), "style_names.txt": _bytes(3460, 2)}
    s = FileServer(files)
    s.record = {"files": [{"key": k, "size": len(v), "checksum": "md5:" + _md5(v)} for k, v in files.items()]}
    yield s
    s.close()


def test_cli_download_and_verify(real_names_server, tmp_path):
    s = real_names_server
    s.cut["style_names.txt"] = 1000
    args = ["--dest", str(tmp_path), "--base-url", s.url + "/files", "--checksums-url", s.url + "/api/record"]
    r = CliRunner().invoke(download_cmd, ["--files", "parent_child_rel.txt,style_names.txt", *args])
    assert r.exit_code == 0, r.output
    assert "2 files in" in r.output
    assert (tmp_path / "style_names.txt").read_bytes() == s.files["style_names.txt"]
    assert s.file_requests("style_names.txt") == [None, "bytes=1000-"]
    r = CliRunner().invoke(download_cmd, ["parent_child_rel.txt", "style_names.txt", "--verify-only", *args])
    assert r.exit_code == 0 and "ok   style_names.txt: size + md5" in r.output
    (tmp_path / "style_names.txt").write_bytes(b"\0" * 3460)
    r = CliRunner().invoke(download_cmd, ["-f", "style_names.txt", "-f", "LICENSE", "--verify-only", *args])
    assert r.exit_code == 1
    assert re.search(r"FAIL style_names.txt: md5 [0-9a-f]{32}, expected", r.output)
    assert "FAIL LICENSE: missing" in r.output and "2 of 2 files failed verification" in r.output
    r = CliRunner().invoke(download_cmd, ["nope.txt", *args])
    assert r.exit_code == 1 and "unknown file(s) nope.txt" in r.output


@pytest.mark.subprocess
def test_cli_list_and_top_level_registration():
    from ssl_jax.cli import main

    r = CliRunner().invoke(main, ["download", "--list"])
    assert r.exit_code == 0, r.output
    assert re.search(r"\* images.zip +11.5 GB", r.output) and "parent_child_rel.txt" in r.output
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "download_wikichurches.py"), "--list",
                          "--files", "building_parts.json"], capture_output=True, text=True, check=True)
    assert "building_parts.json" in out.stdout and "images.zip" not in out.stdout


# ------------------------------------------------------------------------------ extraction


def _tar(path: Path, members: list[tarfile.TarInfo], data: bytes = b"hello") -> Path:
    with tarfile.open(path, "w") as tf:
        for m in members:
            if m.isfile():
                m.size = len(data)
                tf.addfile(m, io.BytesIO(data))
            else:
                tf.addfile(m)
    return path


def _info(name: str, kind=tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, link
    return m


@pytest.mark.parametrize(("member", "why"), [
    (_info("../evil.txt"), r"'\.\./evil\.txt': '\.\.' in path"),
    (_info("ok/../../evil.txt"), r"'\.\.' in path"),
    (_info("/tmp/abs.txt"), r"'/tmp/abs\.txt': absolute path"),
    (_info("link", tarfile.SYMTYPE, "/etc/passwd"), r"'link': symbolic link to '/etc/passwd'"),
    (_info("hard", tarfile.LNKTYPE, "/etc/passwd"), r"'hard': hard link to '/etc/passwd'"),
    (_info("dev", tarfile.CHRTYPE), r"'dev': device, fifo or other special member"),
])
def test_malicious_tar_is_refused(tmp_path, member, why):
    arch = _tar(tmp_path / "bad.tar", [_info("fine.txt"), member])
    dest = tmp_path / "out"
    with pytest.raises(dl.UnsafeArchiveError, match=rf"bad\.tar: refusing to extract — .*{why}"):
        dl.safe_extract(arch, dest)
    assert not dest.exists()  # nothing was written, not even the harmless member


def _zip(path: Path, names: list[str], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for n in names:
            zf.writestr(n, b"hello")
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize(("names", "symlink", "why"), [
    (["fine.txt", "../evil.txt"], None, r"'\.\./evil\.txt': '\.\.' in path"),
    (["fine.txt", "/abs.txt"], None, r"'/abs\.txt': absolute path"),
    (["fine.txt", "C:/win.txt"], None, r"'C:/win\.txt': absolute path"),
    (["fine.txt", "a\\..\\..\\evil.txt"], None, r"'\.\.' in path"),
    (["fine.txt"], "images/link.jpg", r"'images/link\.jpg': symbolic link"),
])
def test_malicious_zip_is_refused(tmp_path, names, symlink, why):
    arch = _zip(tmp_path / "bad.zip", names, symlink)
    dest = tmp_path / "out"
    with pytest.raises(dl.UnsafeArchiveError, match=rf"bad\.zip: refusing to extract — .*{why}"):
        dl.safe_extract(arch, dest)
    assert not dest.exists()


def test_safe_archives_extract(tmp_path):
    z = _zip(tmp_path / "ok.zip", ["a.txt", "sub/b.txt", "sub/deeper/c.txt"])
    out = dl.safe_extract(z, tmp_path / "z")
    assert sorted(p.relative_to(tmp_path / "z").as_posix() for p in out) == ["a.txt", "sub/b.txt",
                                                                          "sub/deeper/c.txt"]
    t = tmp_path / "ok.tar.gz"
    with tarfile.open(t, "w:gz") as tf:
        for name in ("x.txt", "d/y.txt"):
            m = _info(name)
            m.size = 3
            tf.addfile(m, io.BytesIO(b"abc"))
    dl.safe_extract(t, tmp_path / "t")
    assert (tmp_path / "t" / "d" / "y.txt").read_bytes() == b"abc"
    with pytest.raises(dl.UnsafeArchiveError, match="not a zip or tar archive"):
        (tmp_path / "junk.bin").write_bytes(b"junk" * 100)
        dl.safe_extract(tmp_path / "junk.bin", tmp_path / "j")


@pytest.mark.parametrize("prefix", ["images/", "", "wikichurches/"])
def test_extract_images_lands_in_images_folder(tmp_path, prefix):
    z = _zip(tmp_path / "images.zip", [f"{prefix}Q1_wd0.jpg", f"{prefix}Q2_wd0.jpg"])
    folder = dl.extract_images(z, tmp_path / "ds")
    assert folder == tmp_path / "ds" / "images"
    assert sorted(p.name for p in folder.iterdir()) == ["Q1_wd0.jpg", "Q2_wd0.jpg"]
