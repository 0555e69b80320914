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
toolkit=$(realpath -m "${1:-target/cuda-toolkit}")
root="$toolkit/nvidia/cu13"

if [ ! -x "$root/nvvm/bin/cicc" ]; then
  # One --target per wheel: pip skips a folder that an earlier wheel already created.
  for wheel in nvidia-cuda-nvcc==13.5.37 nvidia-cuda-runtime==13.5.37 nvidia-cuda-crt==13.5.37 \
    nvidia-nvvm==13.5.37 nvidia-cuda-cccl==13.3.5.0.6; do
    scratch="$toolkit/wheels/${wheel%%=*}"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$scratch" "$wheel"
    mkdir -p "$root"
    cp -rn "$scratch/nvidia/cu13/." "$root/"
  done
fi

export CUDA_ROOT="$root" CUDA_PATH="$root" PATH="$root/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
# cudarc 0.19 knows CUDA up to 13.4; the 13.5 compiler builds for that API.
export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13040}"
nvcc --version | tail -2

cargo build --release --target-dir target/cuda -p tandem --features cuda --lib
cargo clippy --release --target-dir target/cuda -p tandem -p tandem-cli --features tandem/cuda \
  --all-targets -- -D warnings
echo "cuda feature: library built, every target type-checks"
