#!/usr/bin/env bash
# Compiles tandem's `cuda` feature on a machine without a GPU or a system CUDA toolkit: NVIDIA's
# CUDA 13 compiler, headers and runtime come from their PyPI wheels (700 MB unpacked), candle's
# kernels are compiled to PTX for sm_90 (H100/H200; set CUDA_COMPUTE_CAP for another GPU), then
#   1. `cargo build --release -p tandem --features cuda --lib`: full code generation of the
#      library, candle's CUDA kernels included;
#   2. `cargo clippy --release -p tandem -p tandem-cli --features tandem/cuda --all-targets
#      -- -D warnings`: every target (tests, benches, examples, the CLI) type-checks.
# Linking a binary needs the driver's libcuda and cuBLAS/cuRAND/NVRTC, which a GPU machine has.
#
# Usage: bench/cuda_build_check.sh [TOOLKIT_DIR (default target/cuda-toolkit)]
# Takes about 20 minutes on 2 cores (its own target dir: target/cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/cuda_toolkit.sh
cuda_toolkit "${1:-target/cuda-toolkit}" pip
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"

cargo build --release --target-dir target/cuda -p tandem --features cuda --lib
cargo clippy --release --target-dir target/cuda -p tandem -p tandem-cli --features tandem/cuda \
  --all-targets -- -D warnings
echo "cuda feature: library built, every target type-checks"
