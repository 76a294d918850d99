"""Air-gapped provisioning from a bundle: a Debian 12 container whose only source is the bundle.

    python tests/containers/airgap.py [--keep]

1. builds the FIXTURE upstream and serves it with git daemon on loopback (as testbed.py does);
2. makes the bundle from it with playbooks/bundle.yml (no OpenBLAS: Debian has the package; the CMake
   3 wheels are the real ones from PyPI, checked against the role's pins);
3. prepares a host with the network: only the distribution's packages (the system_deps role with
   the toolchain), then saves it as an image. The OS repository is out of the bundle's scope: an
   air-gapped fleet has its own distribution mirror;
4. starts that image with --network=none (no interface but loopback: GitHub, PyPI, the Debian archive
   and the FIXTURE's git daemon are all unreachable) and the bundle mounted read-only at
   /srv/charrnn-bundle, and runs site.yml pointed at the bundle only, twice (the second run must change
   nothing), then checks the host: th requires the packages, the checkouts are at the pinned commits;
5. starts a second air-gapped host after the bundle is made again (it now holds the artifact the first
   host built and published): that host installs Torch7 from the bundle without building.

Prints one line per step with its time. Needs the localhost/charrnn-test/debian-12 image (testbed.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
IMAGE = "localhost/charrnn-test/debian-12"
PREP_IMAGE = "localhost/charrnn-test/airgap-prep"
MOUNT = "/srv/charrnn-bundle"
sys.path.insert(0, str(HERE))
import testbed  # noqa: E402


def step(title: str, func, *args):
    start = time.monotonic()
    result = func(*args)
    print(f"{title}: {time.monotonic() - start:.0f} s", flush=True)
    return result


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], check=check, capture_output=True, text=True)


def play(work: Path, playbook: str, hosts: list[str], extra: dict, *args: str) -> dict:
    """ansible-playbook over the podman connection; the json callback's result."""
    inventory = work / "inventory.ini"
    inventory.write_text(
        "[all]\n" + "".join(f"{h} ansible_connection=containers.podman.podman\n" for h in hosts) if hosts
        else f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )  # fmt: skip
    extra_file = work / "extra.json"
    extra_file.write_text(json.dumps(extra))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
           "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"}  # fmt: skip
    cmd = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        str(inventory),
        playbook,
        "-e",
        f"@{extra_file}",
    ]
    proc = subprocess.run([*cmd, *args], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        sys.exit(f"{playbook}: no JSON result\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    failed = {h: s for h, s in data["stats"].items() if s["failures"] or s["unreachable"]}
    if failed:
        msgs = [
            f"{t['task']['name']}: {r.get('msg', '')} {r.get('stderr', '')}"
            for p in data["plays"] for t in p["tasks"] for r in t["hosts"].values() if r.get("failed")
        ]  # fmt: skip
        sys.exit(f"{playbook} failed on {failed}:\n" + "\n".join(msgs)[-4000:])
    return data


def start(name: str, image: str, *args: str) -> None:
    podman("rm", "-f", name, check=False)
    podman("run", "-d", "--name", name, "--systemd=always", *args, image, "/sbin/init")
    for _second in range(60):  # systemd up before Ansible starts (package tasks, services)
        state = podman("exec", name, "systemctl", "is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            return
        time.sleep(1)


def sh(name: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
    return podman("exec", name, "sh", "-c", command, check=check)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--keep", action="store_true", help="leave the containers and the image")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="charrnn-airgap-", dir=os.environ.get("TMPDIR")))
    bundle = work / "charrnn-bundle"
    store = work / "store"  # the fleet's artifact store on the controller, fed from the bundle
    prep, hosts = "charrnn-airgap-prep", ["charrnn-airgap-1", "charrnn-airgap-2"]
    env, daemon = testbed.fixture_upstream()
    shas = {"torch7_version": env["CHARRNN_TORCH7_VERSION"], "char_rnn_version": env["CHARRNN_CHAR_RNN_VERSION"]}
    make = {
        **shas,
        "bundle_dir": str(bundle),
        "git_mirrors_url_rewrites": [{"url": env["CHARRNN_UPSTREAM_URL"], "insteadof": "https://github.com/"}],
        "bundle_openblas": False,
        "bundle_torch7_artifact_store": str(store),
    }
    fleet = {
        **shas,
        "git_mirrors_url_rewrites": [{"url": f"file://{MOUNT}/git/github.com/", "insteadof": "https://github.com/"}],
        "git_mirrors_allow_file_protocol": True,
        "torch7_cmake3_find_links": f"{MOUNT}/pip",
        "system_deps_openblas_url": f"file://{MOUNT}/openblas/OpenBLAS-0.3.28.tar.gz",
        "torch7_artifact_store": str(store),
        "system_deps_extra_packages": ["luajit"],
    }
    try:
        store.mkdir()
        step("bundle made from the FIXTURE upstream", play, work, "playbooks/bundle.yml", [], make)
        daemon.terminate()
        daemon.wait()
        daemon = None
        print("FIXTURE git daemon stopped: the upstream is gone", flush=True)

        def prepare() -> None:
            start(prep, IMAGE, "--network=host")
            # the system_deps role itself, in a play that gathers facts
            packages = work / "packages.yml"
            packages.write_text(json.dumps([{"hosts": "all", "become": True, "roles": [
                "rnn_bootstrap.char_rnn.python_bootstrap",
                {"role": "rnn_bootstrap.char_rnn.system_deps", "system_deps_toolchain": True,
                 # the FIXTURE luajit-rocks wraps Debian's luajit (as in molecule/default)
                 "system_deps_extra_packages": ["luajit"]}]}]))  # fmt: skip
            play(work, str(packages), [prep], {})
            podman("commit", prep, PREP_IMAGE)
            podman("rm", "-f", prep)

        step("distribution packages pre-installed (with the network), image saved", prepare)

        def provision(host: str) -> dict:
            start(host, PREP_IMAGE, "--network=none", "-v", f"{bundle}:{MOUNT}:ro")
            links = sh(host, "ls /sys/class/net").stdout.split()
            assert links == ["lo"], links
            apt = sh(host, "apt-get -o Acquire::Retries=0 download hello 2>&1", check=False)
            assert apt.returncode != 0, apt.stdout
            gitd = sh(host, f"git ls-remote {env['CHARRNN_UPSTREAM_URL']}torch/distro.git 2>&1", check=False)
            assert gitd.returncode != 0, gitd.stdout
            print(f"{host}: network interfaces {links}; apt download: {apt.stdout.strip().splitlines()[-1]}")
            return play(work, "site.yml", [host], fleet)

        first = step(f"{hosts[0]}: site.yml from the bundle only", provision, hosts[0])
        again = step(f"{hosts[0]}: site.yml again", play, work, "site.yml", [hosts[0]], fleet)
        changed = again["stats"][hosts[0]]["changed"]
        print(f"{hosts[0]}: first run changed={first['stats'][hosts[0]]['changed']}, second run changed={changed}")
        assert changed == 0, changed
        checks = {
            "th": "th -e \"require 'torch'; require 'nn'; require 'nngraph'; require 'optim'; print('ok')\"",
            "distro": "git -C /opt/torch rev-parse HEAD",
            "char-rnn": "git -C /opt/rnn-karpathy rev-parse HEAD",
            "origin": "git -C /opt/rnn-karpathy remote get-url origin",
        }
        for what, command in checks.items():
            print(f"{hosts[0]}: {what}: {sh(hosts[0], command).stdout.strip()}")
        assert sh(hosts[0], checks["distro"]).stdout.strip() == shas["torch7_version"]
        assert sh(hosts[0], checks["char-rnn"]).stdout.strip() == shas["char_rnn_version"]
        built = sorted(p.name for p in store.iterdir())
        print(f"artifact store after {hosts[0]}: {built}")

        # the bundle made again (upstream back) now carries that artifact; a fresh host installs it
        env2, daemon = testbed.fixture_upstream()
        make["git_mirrors_url_rewrites"] = [{"url": env2["CHARRNN_UPSTREAM_URL"], "insteadof": "https://github.com/"}]
        step("bundle made again (with the artifact)", play, work, "playbooks/bundle.yml", [], make)
        daemon.terminate()
        daemon.wait()
        daemon = None
        carried = sorted(p.name for p in (bundle / "torch7-artifacts").iterdir())
        print(f"bundle's torch7-artifacts: {carried}")
        assert carried == built, carried
        shutil.rmtree(store)
        shutil.copytree(bundle / "torch7-artifacts", store)  # the fleet's store, from the bundle only
        second = step(f"{hosts[1]}: site.yml from the bundle only", provision, hosts[1])
        tasks = {t["task"]["name"]: t["hosts"].get(hosts[1], {}) for p in second["plays"] for t in p["tasks"]}
        cloned = [
            n
            for n, r in tasks.items()
            if "at the pinned commit, with submodules - torch/distro" in n and r.get("changed")
        ]
        installed = [n for n, r in tasks.items() if "Install the artifact" in n and r.get("changed")]
        assert not cloned and installed, (cloned, installed)
        print(f"{hosts[1]}: th: {sh(hosts[1], checks['th']).stdout.strip()}; built Torch7: no (installed the artifact)")
        print("AIRGAP PASSED")
        return 0
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait()
        if not opts.keep:
            for name in [prep, *hosts]:
                podman("rm", "-f", name, check=False)
            podman("rmi", "-f", PREP_IMAGE, check=False)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
