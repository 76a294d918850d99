"""Container test bed: images for the platform matrix, and Molecule runs over what is available.

    testbed.py images [NAME ...]                  prepare images, print what is ready
    testbed.py molecule SCENARIO [NAME ...]       prepare, then `molecule test` on the ready ones

NAME defaults to every platform in platforms.yml (or $CHARRNN_PLATFORMS, comma separated);
NAME:N runs N hosts of that platform (a fleet). Each Molecule run gets an empty Torch7 artifact
store of its own, $CHARRNN_ARTIFACT_STORE (.cache/molecule/artifacts-SCENARIO).

GitHub is out of reach of tests, so the upstream the roles clone is given to Molecule as a Git
URL rewrite and pinned commits (environment variables that the scenarios read):
  --upstream fixture (default)  the FIXTURE repos of tests/fixtures/upstream, built and served
                                here on git://127.0.0.1:$CHARRNN_FIXTURE_PORT (default: a free port);
                                stand-ins written by this project, NOT real Torch or char-rnn
  --upstream real               the real torch/distro and char-rnn from a mirror whose URL prefix
                                is $CHARRNN_REAL_UPSTREAM (see ../shared/upstream/README.md), at
                                the commits the roles pin
Containers boot systemd as PID 1, except on platforms marked `systemd: false` in platforms.yml
(Debian testing: its systemd does not boot on a cgroup-v1 host); there they run `sleep infinity`
and the scenarios that need systemd (train, train_real) report them NOT RUN.
Images are cached: each carries a label with a hash of its recipe and is rebuilt only when the
recipe changes. A platform built here (debootstrap) that fails to build is a failure; a platform
whose public base image cannot be pulled is reported as NOT RUN, never as passed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RECIPE_LABEL = "org.rnn-bootstrap.recipe"
IMAGE_PREFIX = "localhost/charrnn-test"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")


@dataclass
class Platform:
    name: str
    family: str
    debootstrap: str | None = None
    pull: str | None = None
    testing: bool = False  # a Debian testing release: its archive's Release file expires weekly
    systemd: bool = True  # boots systemd as PID 1; false: the container runs without it
    status: str = "pending"  # ready | not run | failed, then passed / FAILED after molecule
    reason: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def image(self) -> str:
        return f"{IMAGE_PREFIX}/{self.name}:latest"

    @property
    def required(self) -> bool:
        """Platforms built from Debian's archive must work here; pulled ones may be unreachable."""
        return self.debootstrap is not None


def podman(*args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], check=check, text=True, capture_output=capture)


def recipe_hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
    return digest.hexdigest()[:16]


def image_recipe(image: str) -> str | None:
    result = podman("image", "inspect", "--format", f'{{{{index .Labels "{RECIPE_LABEL}"}}}}', image, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def load_platforms(names: list[str]) -> list[Platform]:
    """Platforms by name; ``NAME:N`` asks for N hosts of that platform (a fleet)."""
    data = yaml.safe_load((HERE / "platforms.yml").read_text())
    platforms = [Platform(**entry) for entry in data["platforms"]]
    if not names:
        return platforms
    known = {p.name: p for p in platforms}
    counts = {name.partition(":")[0]: int(name.partition(":")[2] or 1) for name in names}
    unknown = [n for n in counts if n not in known]
    if unknown:
        sys.exit(f"unknown platform(s) {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [known[n] for n in counts]
    for platform in chosen:
        platform.extra["hosts"] = counts[platform.name]
    return chosen


# A testing release's Release file carries a Valid-Until a week ahead, and a mirror that is not
# refreshed (or a snapshot of the archive) serves it expired: apt then refuses the whole suite.
# Signatures are still checked; only the date is not. Stable releases carry no Valid-Until.
TESTING_APT_CONF = (
    "// charrnn test bed: Debian testing's Release file expires weekly; keep using a stale mirror.\n"
    'Acquire::Check-Valid-Until "false";\n'
)


def debootstrap_script(suite: str, scripts: Path = Path("/usr/share/debootstrap/scripts")) -> list[str]:
    """The script argument for SUITE: a debootstrap older than the suite has none for it, and
    every release after the newest it knows is bootstrapped the way sid is."""
    if (scripts / suite).exists() or not (scripts / "sid").exists():
        return []
    return [str(scripts / "sid")]


def debootstrap_base(platform: Platform) -> str:
    """Build (or reuse) a minimal Debian rootfs image for SUITE from Debian's archive."""
    suite = platform.debootstrap
    tag = f"{IMAGE_PREFIX}/base-{platform.name}:latest"
    apt_conf = TESTING_APT_CONF if platform.testing else ""
    recipe = recipe_hash("debootstrap", "minbase", suite, DEBIAN_MIRROR, apt_conf)
    if image_recipe(tag) == recipe:
        return tag
    with tempfile.TemporaryDirectory(prefix=f"debootstrap-{suite}-", dir="/var/tmp") as work:
        root = Path(work) / "root"
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", suite, str(root), DEBIAN_MIRROR, *debootstrap_script(suite)],
            text=True,
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            raise RuntimeError(f"debootstrap {suite} failed:\n{tail}")
        if apt_conf:
            (root / "etc/apt/apt.conf.d/99charrnn-testing-valid-until").write_text(apt_conf)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["podman", "import", "--change", f"LABEL {RECIPE_LABEL}={recipe}", "-", tag],
            stdin=tar.stdout,
            check=True,
            capture_output=True,
        )
        tar.wait()
    return tag


def pulled_base(platform: Platform) -> str:
    """Pull a public base image; raise LookupError when it cannot be had."""
    if podman("image", "exists", platform.pull, check=False).returncode == 0:
        return platform.pull
    result = podman("pull", "-q", platform.pull, check=False)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["pull failed"])[-1]
        raise LookupError(f"cannot pull {platform.pull}: {reason}")
    return platform.pull


def build_layer(platform: Platform, base: str) -> None:
    containerfile = HERE / f"Containerfile.{platform.family}"
    base_id = podman("image", "inspect", "--format", "{{.Id}}", base).stdout.strip()
    recipe = recipe_hash(containerfile.read_text(), (HERE / "container-units.sh").read_text(), base_id)
    if image_recipe(platform.image) == recipe:
        return
    result = podman(
        "build", "--network=host", "-f", str(containerfile), "--build-arg", f"BASE={base}",
        "--label", f"{RECIPE_LABEL}={recipe}", "-t", platform.image, str(HERE),
        check=False,
    )  # fmt: skip
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise RuntimeError(f"layer build failed:\n{tail}")


def prepare(platform: Platform) -> None:
    started = time.monotonic()
    try:
        base = debootstrap_base(platform) if platform.debootstrap else pulled_base(platform)
        build_layer(platform, base)
        platform.status = "ready"
    except LookupError as exc:
        platform.status, platform.reason = "not run", str(exc)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        platform.status, platform.reason = "failed", str(exc)
        if not platform.required:  # an unreachable mirror for a pulled distro is not our failure
            platform.status = "not run"
    platform.seconds = time.monotonic() - started


def prepare_all(platforms: list[Platform]) -> None:
    if shutil.which("podman") is None:
        sys.exit("podman is not installed: scripts/test.sh installs it (Debian packages podman, runc)")
    for platform in platforms:
        print(f"image {platform.name}: preparing", flush=True)
        prepare(platform)
        print(f"image {platform.name}: {platform.status} ({platform.seconds:.0f} s) {platform.reason}", flush=True)


# Without systemd the container only has to stay up for Ansible to exec into it; `sleep` as PID 1
# ignores the image's stop signal (systemd's SIGRTMIN+3), and podman would wait 10 s to kill it.
WITHOUT_SYSTEMD = {"command": "sleep infinity", "extra_opts": ["--stop-signal=SIGKILL"]}
# CMake-4 hosts fetch the pinned CMake 3 from PyPI through the controller's network. Where that
# network intercepts TLS with a CA the controller trusts (this project's CI machines do), pip on
# the hosts must trust it too: the containers get the controller's bundle, read-only, and a
# /etc/pip.conf naming it (an environment variable would not survive become's sudo). The images
# are left alone.
HOST_CA = "/etc/charrnn-test/controller-ca.crt"


def controller_ca(path: Path) -> dict:
    bundle = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
    if not Path(bundle).is_file():
        return {}
    path.write_text(f"# tests/containers/testbed.py: the controller's CA bundle\n[global]\ncert = {HOST_CA}\n")
    return {"volumes": [f"{bundle}:{HOST_CA}:ro", f"{path}:/etc/pip.conf:ro"]}


def platforms_override(scenario: str, platforms: list[Platform], path: Path) -> None:
    """A Molecule base config whose `platforms` list replaces the default one.

    Instances are named after the scenario too: podman's container names are global to the
    machine, and two scenarios (or checkouts) with a `debian-12` would remove each other's.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    ca = controller_ca(path.with_name("pip.conf"))
    # What a scenario's own platform entry adds (a tmpfs, say) is kept for each of its hosts,
    # beside the CA bundle's volumes.
    own = yaml.safe_load((REPO / "molecule" / scenario / "molecule.yml").read_text()) or {}
    extra = {k: v for k, v in (own.get("platforms") or [{}])[0].items() if k in PLATFORM_EXTRAS}
    volumes = [*extra.pop("volumes", []), *ca.get("volumes", [])]
    entries = [
        {
            **extra,
            "name": f"charrnn-{scenario}-{p.name}" + (f"-{i}" if p.extra.get("hosts", 1) > 1 else ""),
            "image": p.image,
            "pre_build_image": True,
            **({"systemd": "always", "command": "/sbin/init"} if p.systemd else WITHOUT_SYSTEMD),
            "network": "host",
            **({"volumes": volumes} if volumes else {}),
            "groups": [p.family, p.name.replace("-", "_").replace(".", "_")],
        }
        for p in platforms
        for i in range(1, p.extra.get("hosts", 1) + 1)
    ]
    path.write_text(yaml.safe_dump({"platforms": entries}, sort_keys=False))


# `molecule test`'s sequence plus a check-mode run of site.yml on the converged hosts (check mode
# must not fail where a real run has nothing to do), one action at a time so that each is timed;
# destroy always runs. (A check-mode run on bare hosts cannot get far: apt has no package lists.)
SEQUENCE = ("destroy", "syntax", "create", "converge", "idempotence", "check", "verify")
# Check mode runs in the default and train scenarios; the fleet runs the same roles on more hosts.
# The faults scenario converges once, then its verify injects faults and re-runs the roles.
SEQUENCES = {
    "fleet": tuple(action for action in SEQUENCE if action != "check"),
    "faults": tuple(action for action in SEQUENCE if action not in ("check", "idempotence")),
}
# Platform settings a scenario's molecule.yml may add to the hosts testbed.py makes.
PLATFORM_EXTRAS = ("volumes", "capabilities")
# Small tmpfs volumes made for a scenario (and removed after it): name -> tmpfs mount options.
# (Molecule's schema has no tmpfs size, and podman's volume `size` option wants project quotas.)
SCENARIO_VOLUMES = {"faults": {"charrnn-faults-small": "nr_blocks=2048,mode=0755"}}  # 8 MB


def make_volumes(scenario: str) -> None:
    for name, options in SCENARIO_VOLUMES.get(scenario, {}).items():
        podman("volume", "rm", "-f", name, check=False)
        podman("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs", "--opt", f"o={options}", name)


def remove_volumes(scenario: str) -> None:
    for name in SCENARIO_VOLUMES.get(scenario, {}):
        podman("volume", "rm", "-f", name, check=False)


# Scenarios that run systemd services: a platform whose containers run without systemd as PID 1
# (platforms.yml `systemd: false`) is NOT RUN there.
NEEDS_SYSTEMD = frozenset({"train", "train_real", "fleet"})  # fleet: its sweep's runs


def run_molecule(scenario: str, platforms: list[Platform]) -> bool:
    ready = [p for p in platforms if p.status == "ready"]
    if not ready:
        print(f"molecule {scenario}: no platform is ready, nothing ran")
        return False
    override = REPO / ".cache" / "molecule" / f"platforms-{scenario}.yml"
    platforms_override(scenario, ready, override)
    # A Torch7 artifact store of this scenario's own (on this controller), emptied before the
    # converge, so that every run starts from cold.
    store = REPO / ".cache" / "molecule" / f"artifacts-{scenario}"
    os.environ["CHARRNN_ARTIFACT_STORE"] = str(store)
    base = ["molecule", "-c", str(REPO / ".config" / "molecule" / "config.yml"), "-c", str(override)]
    print(f"molecule {scenario} on {', '.join(p.name for p in ready)}", flush=True)
    timings: list[tuple[str, float, bool]] = []
    ok = True
    run_started = time.time()
    make_volumes(scenario)
    try:
        for action in SEQUENCES.get(scenario, SEQUENCE):
            if action == "converge":
                shutil.rmtree(store, ignore_errors=True)
            started = time.monotonic()
            ok = subprocess.run([*base, action, "-s", scenario], cwd=REPO, check=False).returncode == 0
            timings.append((action, time.monotonic() - started, ok))
            if not ok:
                break
    finally:
        started = time.monotonic()
        destroyed = subprocess.run([*base, "destroy", "-s", scenario], cwd=REPO, check=False).returncode == 0
        timings.append(("destroy", time.monotonic() - started, destroyed))
        remove_volumes(scenario)
    table = REPO / ".cache" / "molecule" / f"{scenario}-table.txt"  # a table the verifier wrote
    if table.exists() and table.stat().st_mtime >= run_started:
        print(f"\n{table.read_text()}", end="")
    print(f"\nmolecule {scenario}: " + ", ".join(f"{a} {s:.0f} s{'' if good else ' FAILED'}" for a, s, good in timings))
    for platform in ready:
        platform.status = "passed" if ok else "FAILED"
        platform.seconds = sum(step[1] for step in timings)
    return ok


def role_default(role: str, name: str) -> str:
    return str(yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())[name])


def free_port() -> str:
    """A loopback port nobody listens on now (two test runs on one machine must not collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def fixture_upstream() -> tuple[dict[str, str], subprocess.Popen]:
    """Build the FIXTURE repos and serve them with git daemon on loopback."""
    out = REPO / ".cache" / "upstream"
    shutil.rmtree(out, ignore_errors=True)
    built = subprocess.run(
        [sys.executable, str(REPO / "tests" / "fixtures" / "upstream" / "build.py"), str(out)],
        check=True, text=True, capture_output=True,
    )  # fmt: skip
    shas = dict(line.split() for line in built.stdout.splitlines() if line.strip())
    port = os.environ.get("CHARRNN_FIXTURE_PORT") or free_port()
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={out}", "--listen=127.0.0.1",
         f"--port={port}", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    if daemon.poll() is not None:
        sys.exit(f"git daemon for the FIXTURE upstream could not listen on 127.0.0.1:{port}")
    env = {
        "CHARRNN_UPSTREAM": "fixture",
        "CHARRNN_UPSTREAM_URL": f"git://127.0.0.1:{port}/github.com/",
        # for the faults scenario, which stops this server and starts it again
        "CHARRNN_FIXTURE_DAEMON_PID": str(daemon.pid),
        "CHARRNN_FIXTURE_DAEMON_ARGS": shlex.join(daemon.args),
        "CHARRNN_TORCH7_VERSION": shas["torch/distro"],
        "CHARRNN_CHAR_RNN_VERSION": shas["karpathy/char-rnn"],
    }
    print(
        "upstream: FIXTURE repos written by this project (not real Torch, not real char-rnn): "
        f"torch/distro@{shas['torch/distro'][:12]}, karpathy/char-rnn@{shas['karpathy/char-rnn'][:12]} "
        f"on {env['CHARRNN_UPSTREAM_URL']}",
        flush=True,
    )
    return env, daemon


def real_upstream() -> dict[str, str]:
    url = os.environ.get("CHARRNN_REAL_UPSTREAM", "")
    if not url:
        sys.exit("--upstream real needs CHARRNN_REAL_UPSTREAM, e.g. git://127.0.0.1:9418/github.com/")
    env = {
        "CHARRNN_UPSTREAM": "real",
        "CHARRNN_UPSTREAM_URL": url,
        "CHARRNN_TORCH7_VERSION": role_default("torch7", "torch7_version"),
        "CHARRNN_CHAR_RNN_VERSION": role_default("char_rnn", "char_rnn_version"),
    }
    print(f"upstream: REAL torch/distro@{env['CHARRNN_TORCH7_VERSION'][:12]}, "
          f"karpathy/char-rnn@{env['CHARRNN_CHAR_RNN_VERSION'][:12]} through {url}", flush=True)  # fmt: skip
    return env


def report(title: str, platforms: list[Platform]) -> None:
    print(f"\n{title}")
    for p in platforms:
        origin = f"debootstrap {p.debootstrap}" if p.debootstrap else p.pull
        origin += " (testing release)" if p.testing else ""
        origin += ", without systemd" if not p.systemd else ""
        line = f"  {p.name:<20} {p.status:<8} {origin}"
        print(f"{line}  -- {p.reason}" if p.reason else line)
    ran = [p.name for p in platforms if p.status in ("passed", "FAILED")]
    not_run = [p.name for p in platforms if p.status == "not run"]
    print(f"  ran here: {', '.join(ran) or 'none'}")
    print(f"  NOT RUN (counted as not run, not as passed): {', '.join(not_run) or 'none'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["images", "molecule"])
    parser.add_argument("args", nargs="*", help="for molecule: SCENARIO [NAME ...]; for images: [NAME ...]")
    parser.add_argument("--upstream", choices=["fixture", "real"], default="fixture")
    opts = parser.parse_args()
    args = list(opts.args)
    scenario = args.pop(0) if opts.command == "molecule" and args else "default"
    env_names = [n for n in os.environ.get("CHARRNN_PLATFORMS", "").split(",") if n]
    platforms = load_platforms(args or env_names)
    prepare_all(platforms)
    broken = [p for p in platforms if p.status == "failed"]
    if opts.command == "images":
        report("images", platforms)
        return 1 if broken else 0
    if scenario in NEEDS_SYSTEMD:
        for platform in platforms:
            if platform.status == "ready" and not platform.systemd:
                platform.status = "not run"
                platform.reason = f"scenario {scenario} needs systemd as PID 1; {platform.name} runs without it here"
    daemon = None
    if opts.upstream == "real":
        os.environ.update(real_upstream())
    else:
        env, daemon = fixture_upstream()
        os.environ.update(env)
    try:
        ok = run_molecule(scenario, platforms) if not broken else False
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait()
    report(f"molecule scenario '{scenario}' (upstream: {os.environ['CHARRNN_UPSTREAM'].upper()})", platforms)
    return 0 if ok and not broken else 1


if __name__ == "__main__":
    sys.exit(main())
