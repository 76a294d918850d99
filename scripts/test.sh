#!/usr/bin/env bash
# The whole test suite, from a fresh Debian/Ubuntu machine: installs what it needs, then runs
# lint, unit and integration tests, the collection build, ansible-test sanity and Molecule.
# Every stage runs even if an earlier one failed; the summary at the end says which failed.
#   scripts/test.sh                 everything
#   scripts/test.sh lint unit       only those stages (lint unit build sanity molecule)
#   CHARRNN_REAL_UPSTREAM=git://127.0.0.1:9418/github.com/ scripts/test.sh real
#                                   OPT-IN: the real torch/distro and char-rnn through that mirror
#                                   (../shared/upstream/README.md); builds Torch7 for real: the real
#                                   scenario on Debian 12 and 13, then the fleet scenario
# CHARRNN_PLATFORMS=debian-12,... limits the Molecule platforms (default: the whole matrix;
# platforms whose images cannot be pulled are reported as NOT RUN).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
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
  yamllint --strict . && ansible-lint --profile production && ruff check . && ruff format --check .
}

stage_unit() {
  pytest -q tests/unit tests/integration
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
  echo "built $(basename "$tarball"): $(tar -tzf "$tarball" | wc -l) files, no test files"
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
  python tests/containers/testbed.py molecule default --upstream fixture || rc=1
  # a fleet from cold with an artifact store: 4 Debian 12 hosts and 1 Debian 13 host, one build per key
  python tests/containers/testbed.py molecule fleet debian-12:4 debian-13 --upstream fixture || rc=1
  # the training service (Debian 12 only: systemd, kill -9 and resume, status/sample/fetch playbooks)
  python tests/containers/testbed.py molecule train debian-12 --upstream fixture || rc=1
  # fault injection on one Debian 12 host: each fault, its message, the recovery; prints a table
  python tests/containers/testbed.py molecule faults debian-12 --upstream fixture || rc=1
  return $rc
}

stage_real() {
  local rc=0
  python tests/containers/testbed.py molecule real debian-12 debian-13 --upstream real || rc=1
  python tests/containers/testbed.py molecule fleet debian-12:4 debian-13 --upstream real || rc=1
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
