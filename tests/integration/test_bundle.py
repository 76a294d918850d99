"""playbooks/bundle.yml against the FIXTURE upstream on loopback, and the fleet's side reading it.

The FIXTURE repos (tests/fixtures/upstream/build.py) are served by `git daemon` on 127.0.0.1, a
small CMake "wheel" made here (a valid wheel without CMake in it, pinned through
bundle_cmake3_hashes) and an OpenBLAS stand-in tarball by an HTTP server on 127.0.0.1, reached
through a forward proxy on 127.0.0.1 set with rnn_bootstrap_proxy_env: the proxy's log shows that
the downloads went through it. Nothing here reaches GitHub or PyPI.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from localplay import playbook, task_results

REPO = Path(__file__).resolve().parents[2]
CMAKE = "3.31.6"
PLATFORMS = ["manylinux_2_17_x86_64", "manylinux_2_17_aarch64"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory):
    """The FIXTURE repos, their commits, and git daemon serving them: (url, shas, dir)."""
    out = tmp_path_factory.mktemp("upstream")
    built = subprocess.run(
        [sys.executable, str(REPO / "tests/fixtures/upstream/build.py"), str(out)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    shas = dict(line.split() for line in built.stdout.splitlines() if line.strip())
    port = free_port()
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={out}", "--listen=127.0.0.1",
         f"--port={port}", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    assert daemon.poll() is None, "git daemon could not start"
    yield {"url": f"git://127.0.0.1:{port}/github.com/", "shas": shas}
    daemon.terminate()
    daemon.wait()


def make_wheel(directory: Path, platform: str) -> Path:
    """A valid, empty wheel named like CMake's (pip reads its METADATA; it installs nothing)."""
    name = f"cmake-{CMAKE}-py3-none-{platform}.whl"
    info = f"cmake-{CMAKE}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: cmake\nVersion: {CMAKE}\n",
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: py3-none-{platform}\n",
    }
    record = "".join(f"{p},,\n" for p in files) + f"{info}/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, text in {**files, f"{info}/RECORD": record}.items():
            info_ = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
            zf.writestr(info_, text)
    (directory / name).write_bytes(buf.getvalue())
    return directory / name


class Proxy(http.server.BaseHTTPRequestHandler):
    """A forward HTTP proxy for GET that logs the absolute URLs it is asked for."""

    log: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).log.append(self.path)
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(self.path) as resp:
                body, status, ctype = resp.read(), resp.status, resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            body, status, ctype = b"", err.code, ""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if ctype:
            self.send_header("Content-Type", ctype)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def serve(handler: Any) -> tuple[http.server.ThreadingHTTPServer, int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory):
    """An HTTP server with the wheels (pip/) and the OpenBLAS stand-in, and a proxy in front of it."""
    root = tmp_path_factory.mktemp("downloads")
    (root / "pip").mkdir()
    wheels = [make_wheel(root / "pip", p) for p in PLATFORMS]
    tarball = root / "OpenBLAS-0.3.28.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        data = b"FIXTURE stand-in, not OpenBLAS\n"
        member = tarfile.TarInfo("OpenBLAS-0.3.28/README")
        member.size, member.mtime = len(data), 0
        tar.addfile(member, io.BytesIO(data))
    files, files_port = serve(functools.partial(Quiet, directory=str(root)))
    Proxy.log = []
    proxy, proxy_port = serve(Proxy)
    yield {
        "base": f"http://127.0.0.1:{files_port}/",
        "proxy": f"http://127.0.0.1:{proxy_port}",
        "wheels": wheels,
        "tarball": tarball,
    }
    files.shutdown()
    proxy.shutdown()


def bundle_vars(upstream, downloads, bundle: Path, store: Path, corpus: Path) -> dict[str, Any]:
    url = upstream["url"]
    return {
        "bundle_dir": str(bundle),
        "bundle_git_url_rewrites": [{"url": url, "insteadof": "https://github.com/"}],
        "bundle_torch7_version": upstream["shas"]["torch/distro"],
        "bundle_char_rnn_version": upstream["shas"]["karpathy/char-rnn"],
        "bundle_cmake3_find_links": downloads["base"] + "pip/",
        "bundle_cmake3_hashes": [sha256(w) for w in downloads["wheels"]],
        "bundle_openblas_url": downloads["base"] + "OpenBLAS-0.3.28.tar.gz",
        "bundle_openblas_sha256": sha256(downloads["tarball"]),
        "bundle_corpus_src": str(corpus),
        "bundle_dataset": "mine",
        "bundle_torch7_artifact_store": str(store),
        "bundle_archive": True,
        "rnn_bootstrap_proxy_env": {"http_proxy": downloads["proxy"], "no_proxy": ""},
    }


def run_bundle(tmp_path: Path, variables: dict[str, Any]) -> dict[str, Any]:
    play = {"hosts": "localhost", "gather_facts": False, "vars": variables,
            "roles": [{"role": "rnn_bootstrap.char_rnn.bundle"}]}  # fmt: skip
    return playbook(tmp_path, [play])


@pytest.fixture(scope="module")
def made(upstream, downloads, tmp_path_factory: pytest.TempPathFactory):
    """The bundle, made twice: (bundle dir, variables, first run, second run)."""
    tmp = tmp_path_factory.mktemp("bundle")
    store = tmp / "store"
    store.mkdir()
    (store / "torch7-debian12-x86_64-stand-in.tar.gz").write_bytes(b"stand-in artifact")
    (store / "torch7-debian12-x86_64-stand-in.json").write_text('{"sha256": "x"}')
    corpus = tmp / "corpus.txt"
    corpus.write_text("To be, or not to be\n" * 100)
    variables = bundle_vars(upstream, downloads, tmp / "out" / "charrnn-bundle", store, corpus)
    first = run_bundle(tmp, variables)
    second = run_bundle(tmp, variables)
    return {"bundle": tmp / "out" / "charrnn-bundle", "vars": variables, "first": first, "second": second}


def test_bundle_holds_every_pinned_source_with_checksums(made, upstream, downloads) -> None:
    bundle, first = made["bundle"], made["first"]
    assert first["stats"]["localhost"]["failures"] == 0, json.dumps(task_results(first), indent=1)[-3000:]
    shas = upstream["shas"]
    git_dir = bundle / "git" / "github.com"
    # every FIXTURE repo is a submodule of torch/distro or char-rnn: all mirrored, each pin present
    for repo, sha in shas.items():
        mirror = git_dir / f"{repo}.git"
        assert (mirror / "HEAD").is_file(), repo
        assert git("cat-file", "-t", sha, cwd=mirror).strip() == "commit"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {
        (url.removeprefix("https://github.com/").removesuffix(".git"), sha) for url, sha, _where in manifest["git_pins"]
    } == set(shas.items())
    names = {Path(w).name for w in downloads["wheels"]}
    assert {p.name for p in (bundle / "pip").iterdir()} == names
    assert (bundle / "openblas" / "OpenBLAS-0.3.28.tar.gz").read_bytes() == downloads["tarball"].read_bytes()
    assert (bundle / "corpus" / "mine" / "input.txt").read_text().startswith("To be")
    assert sorted(p.name for p in (bundle / "torch7-artifacts").iterdir()) == [
        "torch7-debian12-x86_64-stand-in.json",
        "torch7-debian12-x86_64-stand-in.tar.gz",
    ]
    # the manifest lists every file with its real sha256, and sha256sum -c agrees
    files = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()} - {"manifest.json", "SHA256SUMS"}
    assert set(manifest["files"]) == files
    for rel, digest in manifest["files"].items():
        assert sha256(bundle / rel) == digest, rel
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle, check=True)
    with tarfile.open(f"{bundle}.tar.gz") as tar:
        assert "charrnn-bundle/manifest.json" in tar.getnames()


def test_downloads_go_through_the_proxy_env(made, downloads) -> None:
    first = made["first"]
    assert first["stats"]["localhost"]["failures"] == 0
    seen = " ".join(Proxy.log)
    assert "OpenBLAS-0.3.28.tar.gz" in seen, Proxy.log
    assert "/pip/" in seen, Proxy.log


def test_second_run_changes_nothing(made) -> None:
    second = made["second"]
    assert second["stats"]["localhost"]["failures"] == 0
    changed = [name for name, res in task_results(second).items() if res.get("changed")]
    assert second["stats"]["localhost"]["changed"] == 0, changed


def test_a_missing_submodule_commit_is_named(upstream, downloads, tmp_path: Path) -> None:
    url, shas = upstream["url"], upstream["shas"]
    variables = bundle_vars(upstream, downloads, tmp_path / "b", tmp_path / "none", tmp_path / "c")
    variables.update(bundle_cmake3=False, bundle_openblas=False, bundle_corpus_src="", bundle_archive=False)
    # torch/nn served from torch/paths' repository: nn's pinned commit is nowhere in that mirror
    variables["bundle_git_url_rewrites"] = [
        {"url": f"{url}torch/paths.git", "insteadof": "https://github.com/torch/nn.git"},
        {"url": url, "insteadof": "https://github.com/"},
    ]
    result = task_results(run_bundle(tmp_path, variables))
    task = result["Fail naming what is missing from the Git mirrors"]
    assert task.get("failed"), task
    msg = task["msg"]
    assert f"commit {shas['torch/nn']}" in msg and "submodule extra/nn of torch7_version" in msg, msg
    assert "torch/paths.git" in msg, msg


def test_the_fleet_clones_and_installs_from_the_bundle_alone(made, upstream, tmp_path: Path) -> None:
    """The consumer's side without the upstream: Git through a file:// insteadOf into the bundle
    (as git_mirrors_url_rewrites sets it), CMake 3 with torch7_cmake3_find_links and pip --no-index."""
    bundle, variables, shas = made["bundle"], made["vars"], upstream["shas"]
    rewrite = f"url.file://{bundle}/git/github.com/.insteadOf=https://github.com/"
    dest = tmp_path / "distro"
    subprocess.run(
        ["git", "-c", rewrite, "-c", "protocol.file.allow=always", "clone", "--quiet", "--recursive",
         "https://github.com/torch/distro.git", str(dest)],
        check=True, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                                         "GIT_CONFIG_NOSYSTEM": "1", "GIT_ALLOW_PROTOCOL": "file"},
    )  # fmt: skip
    assert git("rev-parse", "HEAD", cwd=dest).strip() == shas["torch/distro"]
    assert git("-C", str(dest / "extra/nn"), "rev-parse", "HEAD").strip() == shas["torch/nn"]

    # the torch7 role's own CMake 3 task, pointed at the bundle's pip/ directory
    venv = tmp_path / "cmake3"
    play = {"hosts": "localhost", "gather_facts": True,
            "vars": {"torch7_cmake3_venv": str(venv), "torch7_cmake3_find_links": f"{bundle}/pip",
                     "torch7_cmake3_hashes": variables["bundle_cmake3_hashes"]},
            "tasks": [{"ansible.builtin.include_role": {"name": "rnn_bootstrap.char_rnn.torch7",
                                                        "tasks_from": "cmake3.yml"}}]}  # fmt: skip
    result = playbook(tmp_path, [play])
    assert result["stats"]["localhost"]["failures"] == 0, json.dumps(task_results(result), indent=1)[-3000:]
    listed = subprocess.run(
        [str(venv / "bin/pip"), "list", "--format=json"], capture_output=True, text=True, check=True
    )
    assert {"name": "cmake", "version": CMAKE} in json.loads(listed.stdout)
