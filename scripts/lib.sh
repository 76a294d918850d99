# Shared by scripts/run.sh and scripts/test.sh: set-up steps that are safe to repeat.
# shellcheck shell=bash

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ANSIBLE_CONFIG="$REPO/ansible.cfg"

log() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_debs PKG...: install the Debian/Ubuntu packages that are missing (apt only).
ensure_debs() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || { echo "missing packages ${missing[*]} and no apt-get: install them by hand" >&2; return 1; }
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# ensure_venv DIR REQUIREMENTS: a virtualenv with exactly those pins; reinstalls only when they change.
ensure_venv() {
  local dir=$1 req=$2 stamp
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then ensure_debs python3-venv; fi
  stamp=$(cat "$REPO"/requirements*.txt | sha256sum | cut -c1-16)
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  if [ "$(cat "$dir/.requirements-stamp" 2>/dev/null)" != "$stamp-$(basename "$req")" ]; then
    log "installing $(basename "$req") into $dir"
    mkdir -p "$REPO/.cache"
    if ! { "$dir/bin/python" -m pip install --upgrade pip && "$dir/bin/python" -m pip install -r "$req"; } \
        >"$REPO/.cache/pip-$(basename "$dir").log" 2>&1; then
      tail -n 30 "$REPO/.cache/pip-$(basename "$dir").log"
      echo "pip install failed; the whole log is in .cache/pip-$(basename "$dir").log" >&2
      return 1
    fi
    echo "$stamp-$(basename "$req")" >"$dir/.requirements-stamp"
  fi
}

# The checkout is the collection: link it where ansible.cfg's collections_path looks, so
# rnn_bootstrap.char_rnn.* resolves from a fresh clone without `ansible-galaxy collection install`.
link_collection() {
  local parent="$REPO/.cache/collections/ansible_collections/rnn_bootstrap"
  mkdir -p "$parent"
  ln -sfn "$REPO" "$parent/char_rnn"
}
