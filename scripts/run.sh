#!/usr/bin/env bash
# Provision the machine this runs on with site.yml (Torch7, LuaRocks, char-rnn).
# Extra arguments go to ansible-playbook, e.g. `scripts/run.sh --check` or `-e char_rnn_user=me`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO" || exit 1
ensure_debs python3 git
ensure_venv "$REPO/.venv" "$REPO/requirements.txt"
link_collection
log "ansible-playbook site.yml on this machine"
as_root env ANSIBLE_CONFIG="$ANSIBLE_CONFIG" "$REPO/.venv/bin/ansible-playbook" \
  -i localhost, -c local site.yml "$@"
