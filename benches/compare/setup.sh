#!/usr/bin/env bash
# Creates benches/compare/.venv and installs ai2-tango 1.3.2 (pinned in requirements.txt) from PyPI.
#
# Idempotent: if the venv exists and was installed from the current requirements.txt
# (stamp file .venv/.requirements.sha256) and `tango` imports at version 1.3.2, it does nothing.
#
# Usage: bash benches/compare/setup.sh        (from anywhere)
#        PYTHON=python3.11 bash benches/compare/setup.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] &&
    "$venv/bin/python" -c 'from tango.version import VERSION; assert VERSION == "1.3.2"' 2>/dev/null; then
    echo "setup.sh: $venv already has ai2-tango 1.3.2 (requirements unchanged); nothing to do"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup.sh: creating venv $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv"
fi

echo "setup.sh: installing pinned requirements from $req"
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$req"
"$venv/bin/python" -c 'from tango.version import VERSION; assert VERSION == "1.3.2", VERSION; print("setup.sh: ai2-tango", VERSION, "ready")'
echo "$want" > "$stamp"
