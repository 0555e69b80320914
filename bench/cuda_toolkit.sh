# Sourced by the CUDA scripts: puts a CUDA compiler on the PATH and sets what candle's and
# cudarc's build scripts read. With `nvcc` already on the PATH (a GPU machine's own toolkit)
# that one is used; otherwise NVIDIA's CUDA 13 compiler, headers and runtime come from their
# PyPI wheels (700 MB unpacked) into TOOLKIT_DIR.
#
#   source bench/cuda_toolkit.sh; cuda_toolkit TOOLKIT_DIR [pip]
#
# `pip` as the second argument takes the wheels even where a system nvcc exists.
cuda_toolkit() {
  local toolkit root wheel scratch
  toolkit=$(realpath -m "$1")
  if [ "${2:-}" != pip ] && command -v nvcc > /dev/null; then
    root=$(dirname "$(dirname "$(command -v nvcc)")")
  else
    root="$toolkit/nvidia/cu13"
    if [ ! -x "$root/nvvm/bin/cicc" ]; then
      # One --target per wheel: pip skips a folder that an earlier wheel already created.
      for wheel in nvidia-cuda-nvcc==13.5.37 nvidia-cuda-runtime==13.5.37 \
        nvidia-cuda-crt==13.5.37 nvidia-nvvm==13.5.37 nvidia-cuda-cccl==13.3.5.0.6; do
        scratch="$toolkit/wheels/${wheel%%=*}"
        python3 -m pip install --quiet --disable-pip-version-check --no-deps \
          --target "$scratch" "$wheel"
        mkdir -p "$root"
        cp -rn "$scratch/nvidia/cu13/." "$root/"
      done
    fi
    # cudarc 0.19 knows CUDA up to 13.4; the 13.5 compiler builds for that API.
    export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13040}"
  fi
  export CUDA_ROOT="$root" CUDA_PATH="$root" PATH="$root/bin:$PATH"
  nvcc --version | tail -2
}
