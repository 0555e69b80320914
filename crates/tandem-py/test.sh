#!/usr/bin/env bash
# The Python package's tests: a venv under target/py-venv with maturin, numpy and pytest from
# PyPI (matplotlib for the example's plot), the extension built in place (`maturin develop`, dev profile, the workspace's target
# folder), then pytest. PyTorch is optional: its adapter's comparison with PyTorch runs when
# torch is importable in the venv. Some tests compare with the CLI: target/debug/tandem (built
# by `cargo test --workspace`, or here when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x target/py-venv/bin/python ]; then
  python3 -m venv target/py-venv
fi
target/py-venv/bin/pip install --quiet --disable-pip-version-check maturin==1.16.0 numpy pytest matplotlib
VIRTUAL_ENV="$PWD/target/py-venv" target/py-venv/bin/maturin develop --quiet \
  -m crates/tandem-py/Cargo.toml
[ -x target/debug/tandem ] || cargo build -p tandem-cli
TANDEM_BIN="$PWD/target/debug/tandem" target/py-venv/bin/python -m pytest -q crates/tandem-py/tests "$@"
# The notebook-style example, as a script (2 epochs: it checks that it runs, not how well).
target/py-venv/bin/python examples/python/demo.py --epochs 2 --out target/py-demo
test -s target/py-demo/recall.png
