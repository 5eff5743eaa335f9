# Shared by scripts/demo and scripts/test: create .venv if missing and install the project.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TASKFLOW_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "taskflow needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# Every package comes from the pinned versions in scripts/constraints.txt (refreshed by
# scripts/lock), so a new upstream release changes nothing until the file does. The
# build backend is installed from the same pins and used without build isolation, which
# would otherwise fetch its newest release.
constraints="$ROOT/scripts/constraints.txt"
stamp="$VENV/.taskflow-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$constraints" -nt "$stamp" ]; then
  pip_install() { "$VENV/bin/python" -m pip install --quiet --constraint "$constraints" "$@"; }
  pip_install --upgrade pip
  pip_install hatchling editables
  pip_install --no-build-isolation -e "$ROOT[${TASKFLOW_EXTRAS:-dev}]"
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
