#!/usr/bin/env bash
# Installs the optional extra "stock" (torch-scatter 2.1.2, torch-sparse 0.6.18) that PyG's
# LinkNeighborLoader needs without pyg-lib: the reference pipeline of benchmarks.throughput and
# benchmarks.time_to_quality. Benchmarks only: the project and its tests never need it.
#
#   bash benchmarks/install_stock.sh                # into .venv (or $PYTHON's environment)
#   WHEELS=/path/to/wheels bash benchmarks/install_stock.sh
#
# 1. If $WHEELS (default ~/.cache/gnn-bench/wheels) holds torch_scatter-*.whl and
#    torch_sparse-*.whl, they are installed as they are (--no-deps: built against this torch).
# 2. Otherwise both are built from source into $WHEELS first (no wheels on PyPI for this torch):
#    about 15 minutes on 2 cores, needs a C++ compiler and the Python headers. torch-sparse
#    imports torch in its setup.py, hence --no-build-isolation (it must see the installed torch).
#    The next install (a fresh venv of the same torch) then takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
WHEELS="${WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/gnn-bench/wheels}"
SCATTER="torch-scatter==2.1.2"
SPARSE="torch-sparse==0.6.18"

shopt -s nullglob
scatter_whl=("$WHEELS"/torch_scatter-2.1.2*.whl)
sparse_whl=("$WHEELS"/torch_sparse-0.6.18*.whl)
if [[ ${#scatter_whl[@]} -gt 0 && ${#sparse_whl[@]} -gt 0 ]]; then
    echo "installing prebuilt wheels from $WHEELS: ${scatter_whl[0]##*/} ${sparse_whl[0]##*/}"
else
    echo "no wheels in $WHEELS: building $SCATTER and $SPARSE from source (~15 min on 2 cores)"
    mkdir -p "$WHEELS"
    "$PYTHON" -m pip wheel --no-deps --no-build-isolation -w "$WHEELS" "$SCATTER" "$SPARSE"
    scatter_whl=("$WHEELS"/torch_scatter-2.1.2*.whl)
    sparse_whl=("$WHEELS"/torch_sparse-0.6.18*.whl)
fi
"$PYTHON" -m pip install --no-deps "${scatter_whl[0]}" "${sparse_whl[0]}"
"$PYTHON" - <<'PY'
import torch_geometric.typing as t
import torch_scatter, torch_sparse
assert t.WITH_TORCH_SPARSE, "PyG cannot load torch-sparse (built for another torch?)"
print(f"ok: torch-scatter {torch_scatter.__version__}, torch-sparse {torch_sparse.__version__}")
PY
