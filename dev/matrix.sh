#!/usr/bin/env bash
# Run the smoke tests (pytest -m smoke) against an older Airflow, in a venv of its own.
#
#   dev/matrix.sh 2.11              # newest 2.11.x
#   dev/matrix.sh 3.1 -k registers  # extra arguments go to pytest
#   dev/matrix.sh 3.1.8             # an exact release
#
# The venv lives in .matrix/airflow-<ver>/ and is reused while its inputs are unchanged: this script,
# pyproject.toml, the package version (airflow_workload_identity/__init__.py), the optional
# dev/matrix-constraints-<ver>.txt and the Python version. The package is installed editable, so
# code changes need no rebuild. MATRIX_REFRESH=1 forces a rebuild (picks up new patch releases).
#
# No constraints files are used by default: Airflow's own constraints live on GitHub, which is not
# reachable, and plain resolution against PyPI gives a working Airflow for 2.11 and 3.1 (see the
# matrix report). If a future release breaks that, pin it in dev/matrix-constraints-<ver>.txt
# (pip requirements syntax); it is passed to uv with --constraint and changes the venv's hash.
#
# Environment: MATRIX_PYTHON (default 3.11); MATRIX_REFRESH=1; MATRIX_EXTRA_PACKAGES (space-separated
# requirements added to the venv, e.g. apache-airflow-providers-fab to get FAB/wtforms on 3.x; part of
# the venv's hash); UV_EXCLUDE_NEWER (uv's own, e.g. 2026-11-01T00:00:00Z: a reproducible resolution).
set -euo pipefail

usage() { echo "usage: $0 <airflow version: 2.11 | 3.1 | x.y.z> [pytest args...]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
ver=$1
shift
if [[ $ver =~ ^[0-9]+\.[0-9]+$ ]]; then
    airflow_req="apache-airflow==${ver}.*"
elif [[ $ver =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    airflow_req="apache-airflow==${ver}"
else
    usage
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python_spec=${MATRIX_PYTHON:-3.11}
read -r -a extra_packages <<<"${MATRIX_EXTRA_PACKAGES:-}"
venv="$root/.matrix/airflow-$ver"
if [[ ${#extra_packages[@]} -gt 0 ]]; then  # a venv of its own, so both variants can be kept warm
    venv+="-$(printf '%s\n' "${extra_packages[@]}" | sha256sum | cut -c1-8)"
fi
constraints="$root/dev/matrix-constraints-$ver.txt"
py="$venv/bin/python"

mkdir -p "$root/.matrix"
# One build per version at a time (parallel CI legs of the same version share the venv).
exec 9>"$venv.lock"
flock 9

# Everything that decides the venv's contents.
inputs=$(
    {
        echo "airflow=$airflow_req python=$python_spec extra=${extra_packages[*]}"
        cat "${BASH_SOURCE[0]}" "$root/pyproject.toml" "$root/airflow_workload_identity/__init__.py"
        if [[ -f $constraints ]]; then cat "$constraints"; fi
    } | sha256sum | cut -d' ' -f1
)
stamp="$venv/.matrix-inputs"

log() { printf '[matrix %s] %s\n' "$ver" "$*" >&2; }

if [[ ${MATRIX_REFRESH:-0} != 1 && -f $stamp && $(cat "$stamp") == "$inputs" ]] && "$py" -c '' 2>/dev/null; then
    log "reusing $venv"
else
    log "building $venv ($airflow_req, Python $python_spec${extra_packages[*]+, ${extra_packages[*]}})"
    rm -rf "$venv"
    # Only interpreters already on the machine: downloading one needs GitHub, which is not reachable.
    uv venv --quiet --no-python-downloads --python "$python_spec" "$venv"
    install=(uv pip install --quiet --compile-bytecode --python "$py"
        -e "$root[all]" "$airflow_req" "moto[server]" "pyjwt[crypto]" pytest pytest-timeout
        google-cloud-storage gcp-storage-emulator azure-storage-blob
        ${extra_packages[@]+"${extra_packages[@]}"})
    if [[ -f $constraints ]]; then
        log "constraints: ${constraints#"$root"/}"
        install+=(--constraint "$constraints")
    fi
    "${install[@]}"
    echo "$inputs" >"$stamp"
fi

log "$("$py" -c '
import sys
from importlib.metadata import version
names = ["apache-airflow", "apache-airflow-core", "sqlalchemy", "flask", "flask-appbuilder", "fastapi",
         "pendulum", "boto3", "botocore", "aiobotocore", "moto", "pytest"]
out = []
for n in names:
    try:
        out.append(f"{n}=={version(n)}")
    except Exception:
        pass
print("Python", sys.version.split()[0], " ".join(out))
')"

# Isolated Airflow home on SQLite and no ambient cloud identity (tests/conftest.py also does this).
airflow_home=$(mktemp -d "${TMPDIR:-/tmp}/matrix-airflow-$ver.XXXXXX")
trap 'rm -rf "$airflow_home"' EXIT
export AIRFLOW_HOME=$airflow_home
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$airflow_home/airflow.db"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__UNIT_TEST_MODE=False
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
export PATH="$venv/bin:$PATH"
unset VIRTUAL_ENV PYTHONPATH

cd "$root"
log "pytest -m smoke $*"
"$py" -m pytest -m smoke "$@" 9>&-  # the venv lock is not inherited by stray test processes
