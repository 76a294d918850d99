"""The char-rnn OCI image (playbooks/image.yml), built and used as a user would.

    python tests/containers/image.py [--upstream fixture|real] [--keep]

1. serves the upstream as testbed.py does (FIXTURE repos on loopback by default; --upstream real
   takes $CHARRNN_REAL_UPSTREAM) and runs playbooks/image.yml on the Debian 12 minbase image
   (localhost/charrnn-test/base-debian-12) with an EMPTY artifact store: a builder container builds
   Torch7 and publishes it, the final container installs it; then again: nothing changes; then
   without the image but with the store: no builder, the image installs the stored artifact;
2. checks the image: labels for every pin (matching the pins given), USER charrnn, no compiler,
   no -dev package, no apt lists; prints its size;
3. trains a few iterations with the checkpoints on a named volume, samples from `best` and
   `latest`, runs it again with more epochs and checks it resumed from the newest checkpoint, then
   once more and checks it says the run is finished.

Containers, the volume and the image are named charrnn-image-*; all are removed at the end unless
--keep. Prints one line per step with its time.
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
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BASE = "localhost/charrnn-test/base-debian-12"
IMAGE = "localhost/charrnn-test/charrnn-image-test"
PREFIX = "charrnn-image-test"
VOLUME = "charrnn-image-test-data"
LABEL = "org.rnn-bootstrap.char-rnn"
sys.path.insert(0, str(HERE))
import airgap  # noqa: E402  (its podman() and step())
import testbed  # noqa: E402

# A small model; the FIXTURE corpus gives 190 iterations an epoch at batch 10 x seq 20, the real
# tinyshakespeare about 5,300.
TRAIN = ["-rnn_size", "16", "-num_layers", "1", "-seq_length", "20", "-batch_size", "10", "-eval_val_every", "10"]
EPOCHS = {"fixture": ("0.1", "0.2"), "real": ("0.004", "0.008")}


def play(work: Path, extra: dict) -> dict:
    """playbooks/image.yml on the controller (the json callback's result); prints each play's time."""
    inventory = work / "inventory.ini"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    (work / "extra.json").write_text(json.dumps(extra))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
           "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"}  # fmt: skip
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), "playbooks/image.yml",
           "-e", f"@{work / 'extra.json'}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        sys.exit(f"image.yml: no JSON result\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    for item in data["plays"]:
        duration = item["play"].get("duration", {})
        if duration.get("start") and duration.get("end"):
            seconds = (parse_time(duration["end"]) - parse_time(duration["start"])).total_seconds()
            print(f"    {seconds:4.0f} s  play '{item['play']['name']}'")
    failed = {h: s for h, s in data["stats"].items() if s["failures"] or s["unreachable"]}
    if failed:
        msgs = [
            f"{t['task']['name']}: {r.get('msg', '')} {r.get('stderr', '')}"
            for p in data["plays"] for t in p["tasks"] for r in t["hosts"].values()
            if r.get("failed") or r.get("unreachable")
        ]  # fmt: skip
        sys.exit(f"image.yml failed on {failed}:\n" + "\n".join(msgs)[-4000:])
    return data


def image_build(title: str, work: Path, extra: dict, plan_says: str) -> dict:
    """image.yml, timed; checks the builder's plan says `plan_says` and that the final container
    installed the artifact from the store. Returns the results by task name, then host."""
    result = airgap.step(title, play, work, extra)
    hosts = {t["task"]["name"].split(" : ")[-1]: t["hosts"] for p in result["plays"] for t in p["tasks"]}
    plan = hosts.get("Report where the image's Torch7 comes from", {}).get(f"{PREFIX}-builder", {}).get("msg", "")
    print(f"plan: {plan}")
    assert plan_says in plan, plan
    installed = hosts.get("Install the artifact (sha256 and key checked first) or confirm the installed one", {})
    assert installed.get(f"{PREFIX}-final", {}).get("changed"), "the final container did not install the artifact"
    return hosts


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """podman run --rm of the image, the volume at /data; output echoed."""
    proc = subprocess.run(
        ["podman", "run", "--rm", "--network=none", "--name", f"{PREFIX}-run", "-v", f"{VOLUME}:/data", *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    print(f"$ podman run ... {' '.join(args[-12:])}  (exit {proc.returncode})")
    lines = (proc.stdout + proc.stderr).splitlines()
    # the launcher's and the entry point's own lines (start, resume, finish), then the output's tail
    for line in [x for x in lines[:-4] if x.startswith(("char-rnn launcher:", "char-rnn image:"))] + lines[-4:]:
        print(f"    {line}")
    if check and proc.returncode != 0:
        sys.exit(f"podman run {' '.join(args)} failed with {proc.returncode}")
    return proc


def inside(command: str) -> str:
    return airgap.podman("run", "--rm", "--network=none", "--entrypoint", "/bin/sh", IMAGE, "-c", command).stdout


def cleanup() -> None:
    for name in (f"{PREFIX}-run", f"{PREFIX}-final", f"{PREFIX}-builder"):
        airgap.podman("rm", "-f", name, check=False)
    airgap.podman("volume", "rm", "-f", VOLUME, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--upstream", choices=["fixture", "real"], default="fixture")
    parser.add_argument("--keep", action="store_true", help="leave the image, volume and containers")
    opts = parser.parse_args()
    if airgap.podman("image", "exists", BASE, check=False).returncode != 0:
        sys.exit(f"{BASE} is missing: python tests/containers/testbed.py images debian-12 builds it")
    work = Path(tempfile.mkdtemp(prefix="charrnn-image-", dir=os.environ.get("TMPDIR")))
    store = work / "store"
    daemon = None
    if opts.upstream == "real":
        env = testbed.real_upstream()
    else:
        env, daemon = testbed.fixture_upstream()
    extra = {
        "char_rnn_image_base": BASE,
        "char_rnn_image_pull": "never",
        "char_rnn_image_name": IMAGE,
        "char_rnn_image_tag": "latest",
        "char_rnn_image_container_prefix": PREFIX,
        "torch7_artifact_store": str(store),
        "git_mirrors_url_rewrites": [{"url": env["CHARRNN_UPSTREAM_URL"], "insteadof": "https://github.com/"}],
        "torch7_version": env["CHARRNN_TORCH7_VERSION"],
        "char_rnn_version": env["CHARRNN_CHAR_RNN_VERSION"],
        # the test trains for seconds: no thread probe
        "char_rnn_image_threads": "auto",
    }
    if opts.upstream == "fixture":
        extra["system_deps_extra_packages"] = ["luajit"]  # the FIXTURE luajit-rocks wraps Debian's luajit
    started = time.monotonic()
    try:
        cleanup()
        airgap.podman("rmi", "-f", IMAGE, check=False)
        store.mkdir(parents=True)
        hosts = image_build("image built (empty store: builder container)", work, extra, "builds and publishes it")
        artifacts = sorted(p.name for p in store.iterdir())
        print(f"store now holds {artifacts}; {PREFIX}-final installed that artifact")
        assert any(a.endswith(".tar.gz") for a in artifacts), artifacts
        report = [r.get("msg") for r in hosts.get("Report the image", {}).values() if r.get("msg")]
        print(f"playbook: {report[0] if report else '(no report)'}")

        again = airgap.step("image.yml again", play, work, extra)
        changed = sum(s["changed"] for s in again["stats"].values())
        print(f"second run: changed={changed}")
        assert changed == 0, again["stats"]

        # the image gone, the store kept: no builder this time, the image installs the stored artifact
        airgap.podman("rmi", "-f", IMAGE)
        hosts = image_build(
            "image built again (artifact in the store: no builder)", work, extra, "has the Torch7 artifact of the image"
        )
        built = hosts.get("Build Torch7 in the background (or confirm the recorded build is intact)", {})
        assert not [h for h, r in built.items() if not r.get("skipped")], f"Torch7 was built: {built}"
        assert sorted(p.name for p in store.iterdir()) == artifacts, "the store changed"

        info = json.loads(airgap.podman("image", "inspect", IMAGE).stdout)[0]
        labels, config = info["Labels"], info["Config"]
        size = int(info["Size"])
        print(f"image {IMAGE}: {size / 1e6:.1f} MB ({size} bytes); base {BASE}: "
              f"{int(json.loads(airgap.podman('image', 'inspect', BASE).stdout)[0]['Size']) / 1e6:.1f} MB")  # fmt: skip
        for key in sorted(labels):
            if key.startswith((LABEL, "org.opencontainers")):
                print(f"  label {key}={labels[key]}")
        assert labels[f"{LABEL}.torch7-commit"] == env["CHARRNN_TORCH7_VERSION"], labels
        assert labels[f"{LABEL}.char-rnn-commit"] == env["CHARRNN_CHAR_RNN_VERSION"], labels
        assert labels[f"{LABEL}.base-image"] == BASE, labels
        assert labels[f"{LABEL}.collection"].startswith("rnn_bootstrap.char_rnn "), labels
        assert "torch " in labels[f"{LABEL}.rocks"] and "nngraph " in labels[f"{LABEL}.rocks"], labels
        assert labels[f"{LABEL}.torch7-artifact"] in " ".join(artifacts), labels
        assert config.get("User") == "charrnn" and "/data" in (config.get("Volumes") or {}), config
        print(
            f"  user {config['User']}, entrypoint {config['Entrypoint']}, cmd {config['Cmd']},"
            f" volumes {sorted(config['Volumes'])}"
        )

        tools = inside(
            "for c in gcc cc c++ g++ cpp cmake make ld; do command -v $c; done;"
            " dpkg-query -W -f '${binary:Package}\\n'"
            " | grep -E -- '-dev(:|$)|^(gcc|g\\+\\+|cpp)(-[0-9.]+)?(:|$)|^binutils(-|:|$)';"
            " ls /var/lib/apt/lists | grep -v -x -e lock -e partial; true"
        )
        print(f"compilers, -dev packages, apt lists in the image: {tools.split() or 'none'}")
        assert not tools.strip(), tools
        whoami = inside("id -un; command -v th")
        print(f"image runs as / th: {whoami.split()}")
        assert whoami.split()[0] == "charrnn", whoami

        airgap.podman("volume", "create", VOLUME)
        short, longer = EPOCHS[opts.upstream]
        first_run = airgap.step(
            "train (fresh volume)",
            run,
            "-e",
            "FIXTURE_SECONDS_PER_BATCH=0",
            IMAGE,
            "train",
            *TRAIN,
            "-max_epochs",
            short,
        )
        assert "starting run default" in first_run.stdout + first_run.stderr
        listing = run(IMAGE, "checkpoints").stdout
        assert "latest: lm_default" in listing and "best: lm_default" in listing, listing
        owners = inside_volume("stat -c '%U %n' /data/cv/default/* | sort -u")
        print(f"checkpoint files on the volume: {owners.splitlines()}")
        assert owners and all(line.startswith("charrnn ") for line in owners.splitlines()), owners
        for which in ("best", "latest"):
            text = airgap.step(f"sample {which}", run, IMAGE, "sample", which, "-length", "200", "-seed", "7").stdout
            assert len(text.strip()) > 0, f"sample {which} printed nothing"
        env = ("-e", "FIXTURE_SECONDS_PER_BATCH=0", "-e", f"CHARRNN_MAX_EPOCHS={longer}")
        resumed = airgap.step("train again, more epochs (resumes)", run, *env, IMAGE, "train", *TRAIN)
        out = resumed.stdout + resumed.stderr
        assert "resuming run default from /data/cv/default/lm_default_" in out, out[-2000:]
        finished = airgap.step("train again (finished)", run, IMAGE, "train", *TRAIN, "-max_epochs", longer)
        assert "already finished" in finished.stdout + finished.stderr
        bad = run(IMAGE, "train", "-rnn_sise", "16", check=False)
        assert bad.returncode == 2 and "unknown option(s) -rnn_sise" in bad.stderr, bad.stderr
        print(f"IMAGE PASSED in {time.monotonic() - started:.0f} s (image {size / 1e6:.1f} MB)")
        return 0
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait()
        if not opts.keep:
            cleanup()
            airgap.podman("rmi", "-f", IMAGE, check=False)
            shutil.rmtree(work, ignore_errors=True)


def inside_volume(command: str) -> str:
    return airgap.podman(
        "run", "--rm", "--network=none", "-v", f"{VOLUME}:/data", "--entrypoint", "/bin/sh", IMAGE, "-c", command
    ).stdout


if __name__ == "__main__":
    sys.exit(main())
