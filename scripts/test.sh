#!/usr/bin/env bash
# The whole test suite, from a fresh Debian/Ubuntu machine: installs what it needs, then runs
# lint, unit and integration tests, the collection build, ansible-test sanity and Molecule.
# Every stage runs even if an earlier one failed; the summary at the end says which failed.
#   scripts/test.sh                 everything
#   scripts/test.sh lint unit       only those stages (lint unit build sanity molecule)
#   CHARRNN_REAL_UPSTREAM=git://127.0.0.1:9418/github.com/ scripts/test.sh real
#                                   OPT-IN: the real torch/distro and char-rnn through that mirror
#                                   (../shared/upstream/README.md); builds Torch7 for real: the real
#                                   scenario on Debian 12, 13 and testing (CMake 4: the pinned
#                                   CMake 3 builds it), then the fleet scenario, then the
#                                   OCI image (tests/containers/image.py) with the real Torch7
#   scripts/test.sh sweep           OPT-IN: the fleet scenario with its whole sweep check (FIXTURE upstream)
# CHARRNN_PLATFORMS=debian-12,... limits the Molecule platforms (default: the whole matrix;
# platforms whose images cannot be pulled are reported as NOT RUN).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
# The container test bed (podman) needs root: another user gets this script re-run through sudo,
# with the environment (CHARRNN_*, TMPDIR). Root, as in CI, needs no sudo.
if [ "$(id -u)" -ne 0 ]; then exec sudo -E "$0" "$@"; fi
cd "$REPO" || exit 1

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(lint unit build sanity molecule)
VENV="$REPO/.venv-test"

setup() {
  ensure_debs python3 git podman runc debootstrap luajit luarocks gcc g++ cmake libopenblas-dev shellcheck
  ensure_venv "$VENV" "$REPO/requirements-test.txt"
  link_collection
  export PATH="$VENV/bin:$PATH"
  export CONTAINERS_CONF="$REPO/tests/containers/containers.conf"
  # Tests that need these tools skip without them on a developer's machine; here they must run.
  export CHARRNN_REQUIRE_LUAROCKS=1 CHARRNN_REQUIRE_TOOLS=1
}

stage_lint() {
  yamllint --strict . && ansible-lint --profile production && ruff check . && ruff format --check . \
    && "$VENV/bin/python" scripts/role_specs.py check && changelog_lint && docs_lint
}

# antsibull-changelog's lint, and a release entry for the version galaxy.yml declares. Fragments
# added since are listed (a release takes them with `antsibull-changelog release --version V --update-existing`).
changelog_lint() {
  antsibull-changelog lint || return 1
  "$VENV/bin/python" - <<'PY'
import pathlib, sys, yaml
version = yaml.safe_load(open("galaxy.yml"))["version"]
releases = yaml.safe_load(open("changelogs/changelog.yaml"))["releases"] or {}
if version not in releases:
    sys.exit(f"changelogs/changelog.yaml has no release {version} (galaxy.yml's version): antsibull-changelog release --version {version}")
released = {f for release in releases.values() for f in release.get("fragments", [])}
pending = sorted(p.name for p in pathlib.Path("changelogs/fragments").glob("*.y*ml") if p.name not in released)
print(f"changelog: release {version} present" + (f"; fragments not yet in a release: {', '.join(pending)}" if pending else ""))
PY
}

# antsibull-docs' collection docs lint, plugin and role docs included. It copies the collection and
# its dependencies with `git ls-files` when they sit in a Git checkout, and the venv's amazon.aws
# (whose doc fragments plugins/inventory/ec2.py uses) sits in this one untracked: hand it a copy.
docs_lint() {
  # antsibull-docs lints a copy of the git-tracked tree; the collections ours depends on go beside
  # it, and only those: with the venv's bundled collections also on sys.path, a fresh clone's lint
  # could not resolve amazon.aws's doc fragments (seen in CI, not in older venvs).
  local deps="${TMPDIR:-/var/tmp}/rnn_bootstrap-docs-lint" dep
  rm -rf "$deps" && mkdir -p "$deps/ansible_collections"
  for dep in amazon.aws community.general; do
    mkdir -p "$deps/ansible_collections/${dep%%.*}"
    cp -r "$("$VENV/bin/python" -c "import ansible_collections.$dep as m; print(list(m.__path__)[0])")" \
      "$deps/ansible_collections/${dep/.//}"
  done
  ANSIBLE_COLLECTIONS_PATH="$deps" ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false \
    antsibull-docs lint-collection-docs --plugin-docs . \
    && echo "antsibull-docs lint-collection-docs --plugin-docs: clean"
}

stage_unit() {
  pytest -q --durations=10 tests/unit tests/integration  # the slowest tests, in every log
}

stage_build() {
  local out="$REPO/.cache/build"
  rm -rf "$out" && mkdir -p "$out"
  ansible-galaxy collection build --force --output-path "$out" . || return 1
  local tarball
  tarball=$(ls "$out"/rnn_bootstrap-char_rnn-*.tar.gz)
  if tar -tzf "$tarball" | grep -E '^(tests|molecule|\.ci|\.config|scripts)/'; then
    echo "the collection tarball contains test files (listed above): fix build_ignore in galaxy.yml"
    return 1
  fi
  tar -tzf "$tarball" | grep -x COPYING >/dev/null || { echo "the tarball lacks COPYING (galaxy.yml's license)"; return 1; }
  echo "built $(basename "$tarball"): $(tar -tzf "$tarball" | wc -l) files, COPYING, no test files"
  install_as_users_do "$tarball" || return 1
  ee_context "$tarball"
}

# The execution environment: `ansible-builder create` from docs/execution-environment.yml, then
# what the image build would install, read from that context: the collection tarball in
# _build/requirements.yml, and the context's own introspect.py (the builder stage's step) run on
# the collection as installed above, which must list the controller's requirements from
# meta/execution-environment.yml. Building the image needs its base image: not done here.
ee_context() {
  local tarball=$1 start=$SECONDS
  local context="${TMPDIR:-/var/tmp}/rnn_bootstrap-ee"
  local collections="${TMPDIR:-/var/tmp}/rnn_bootstrap-user/collections"
  rm -rf "$context"
  (
    set -e
    echo "+ ansible-builder create -f docs/execution-environment.yml -c $context"
    ansible-builder create -f docs/execution-environment.yml -c "$context"
    grep -F "$(basename "$tarball")" "$context/_build/requirements.yml"
    cmp "$tarball" "$context/_build/collections/$(basename "$tarball")"
    grep -E '^ARG ANSIBLE_INSTALL_REFS=' "$context/Containerfile"
    echo "+ python $context/_build/scripts/introspect.py introspect $collections"
    "$VENV/bin/python" "$context/_build/scripts/introspect.py" introspect "$collections" | tee "$context/introspect.txt"
    local want
    for want in 'boto3>=' 'botocore>=' 'torchfile==' 'numpy>=' 'matplotlib==' 'openssh-client \[platform:dpkg\]' 'openssh-clients \[platform:rpm\]'; do
      grep -E "^- '?$want.*# from collection rnn_bootstrap.char_rnn'?$" "$context/introspect.txt" >/dev/null \
        || { echo "the execution environment would not get ${want//\\/} (meta/execution-environment.yml)"; return 1; }
    done
  ) || { echo "the execution environment's build context is incomplete (above)"; return 1; }
  echo "execution environment build context checked in $((SECONDS - start))s (image not built: no base image here)"
}

# What a user of the collection does: install the tarball into an empty collections path, its
# dependencies satisfied offline by what the pinned `ansible` package bundles (galaxy.yml's bounds
# are checked against those versions; nothing comes from the network), then, from a directory
# outside this checkout and without its ansible.cfg (so the .cache link cannot be used),
# syntax-check every collection playbook and render the docs of every plugin and role.
install_as_users_do() {
  local tarball=$1 start=$SECONDS
  local home="${TMPDIR:-/var/tmp}/rnn_bootstrap-user"
  rm -rf "$home" && mkdir -p "$home/collections"
  local bundled
  bundled=$("$VENV/bin/python" -c 'import ansible_collections, os; print(os.path.dirname(list(ansible_collections.__path__)[0]))')
  (
    set -e
    cd "$home"
    unset ANSIBLE_CONFIG
    export ANSIBLE_COLLECTIONS_PATH="$home/collections:$bundled" ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false ANSIBLE_NOCOLOR=1
    echo "+ ansible-galaxy collection install --offline -p $home/collections $(basename "$tarball")"
    ansible-galaxy collection install --offline -p "$home/collections" "$tarball"
    local installed="$home/collections/ansible_collections/rnn_bootstrap/char_rnn"
    [ -f "$installed/MANIFEST.json" ] && [ -f "$installed/COPYING" ]
    ansible-galaxy collection list rnn_bootstrap.char_rnn | grep -F "$home/collections"
    local path name
    for path in "$installed"/playbooks/*.yml; do
      name=$(basename "$path" .yml)
      echo "+ ansible-playbook rnn_bootstrap.char_rnn.$name --syntax-check"
      ansible-playbook "rnn_bootstrap.char_rnn.$name" --syntax-check
    done
    doc() {  # ansible-doc TYPE NAME: fails on docs it cannot render; must come from the install
      echo "+ ansible-doc -t $1 rnn_bootstrap.char_rnn.$2"
      ansible-doc -t "$1" "rnn_bootstrap.char_rnn.$2" >"$home/doc.txt"
      grep -qF "$installed" "$home/doc.txt" || { cat "$home/doc.txt"; echo "not rendered from the installed copy"; return 1; }
      head -n 1 "$home/doc.txt"
    }
    for path in "$installed"/plugins/modules/*.py; do doc module "$(basename "$path" .py)"; done
    for path in "$installed"/roles/*/; do doc role "$(basename "$path")"; done
    doc inventory ec2
    doc filter train_status
  ) || { echo "installing the tarball as a user would failed (above)"; return 1; }
  echo "installed as a user would and checked in $((SECONDS - start))s"
}

stage_sanity() {
  # ansible-test wants the collection at ansible_collections/NAMESPACE/NAME: copy the tracked
  # tree there, outside this checkout (inside it, ansible-test would list files with our git,
  # which ignores the copy, and find nothing to test).
  local root="${TMPDIR:-/var/tmp}/rnn_bootstrap-sanity"
  local dest="$root/ansible_collections/rnn_bootstrap/char_rnn"
  rm -rf "$root" && mkdir -p "$dest"
  git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$dest" 2>/dev/null
  # The collections ours imports from (the ec2 inventory plugin builds on amazon.aws's), beside it.
  local amazon_aws
  amazon_aws=$("$VENV/bin/python" -c 'import ansible_collections.amazon.aws as m; print(list(m.__path__)[0])')
  mkdir -p "$root/ansible_collections/amazon"
  ln -sfn "$amazon_aws" "$root/ansible_collections/amazon/aws"
  # ansible-test bootstraps pip in its venvs with a script from outside the package registries;
  # an ensurepip stand-in lets it do the same with what Python ships.
  local cache="$HOME/.ansible/test/cache"
  mkdir -p "$cache"
  # (ansible-core 2.19's ansible-test asks for pip 24.2.)
  [ -f "$cache/get_pip_24_2.py" ] || printf 'import ensurepip\nensurepip.bootstrap(upgrade=True)\n' >"$cache/get_pip_24_2.py"
  local py
  py=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  (cd "$dest" && ansible-test sanity --venv --python "$py" --color no)
}

stage_molecule() {
  local rc=0
  # every platform of platforms.yml, Debian testing (debian-14, CMake 4) included
  python tests/containers/testbed.py molecule default --upstream fixture || rc=1
  # a fleet from cold with an artifact store: 4 Debian 12 hosts and 1 Debian 13 host, one build per key;
  # then a sweep over a Debian 12 and the Debian 13 host: placement, leaderboard, purge
  python tests/containers/testbed.py molecule fleet debian-12:4 debian-13 --upstream fixture || rc=1
  # the training service (Debian 12 only: systemd, kill -9 and resume, status/sample/fetch playbooks)
  python tests/containers/testbed.py molecule train debian-12 --upstream fixture || rc=1
  # fault injection on one Debian 12 host: each fault, its message, the recovery; prints a table
  python tests/containers/testbed.py molecule faults debian-12 --upstream fixture || rc=1
  # an air-gapped Debian 12 host (--network=none) provisioned from a bundle alone (about 3 min)
  python tests/containers/airgap.py || rc=1
  # the OCI image (playbooks/image.yml) from the Debian 12 base: build, labels, no compiler, size,
  # train on a volume, sample, resume
  python tests/containers/image.py --upstream fixture || rc=1
  return $rc
}

# OPT-IN (its time): the fleet scenario with the whole sweep check: sweep.yml in check mode, a larger
# grid that adds only its new runs, removal that keeps the checkpoints (CHARRNN_SWEEP_FULL=1)
stage_sweep() {
  CHARRNN_SWEEP_FULL=1 python tests/containers/testbed.py molecule fleet debian-12:4 debian-13 --upstream fixture
}

stage_real() {
  local rc=0
  python tests/containers/testbed.py molecule real debian-12 debian-13 debian-14 --upstream real || rc=1
  python tests/containers/testbed.py molecule fleet debian-12:4 debian-13 --upstream real || rc=1
  python tests/containers/image.py --upstream real || rc=1
  return $rc
}

setup || { echo "set-up failed"; exit 1; }
declare -A result seconds
failed=0
for stage in "${stages[@]}"; do
  log "stage $stage"
  start=$SECONDS
  if "stage_$stage"; then result[$stage]=passed; else result[$stage]=FAILED; failed=$((failed + 1)); fi
  seconds[$stage]=$((SECONDS - start))
done

log "summary"
for stage in "${stages[@]}"; do printf '  %-10s %-7s %5ss\n' "$stage" "${result[$stage]}" "${seconds[$stage]}"; done
echo "stages: $(( ${#stages[@]} - failed )) passed, $failed failed"
[ "$failed" -eq 0 ]
