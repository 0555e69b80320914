# Sourced by bench/serve_soak.sh and bench/serve_limits.sh (run from the repository root):
# wrk, the release binaries, and a synthetic index of N images and N captions in $WORK.
#   serve_setup            builds, installs wrk if missing, sets $index
#   serve_start LOG ARGS…  starts `tandem serve` on a free loopback port with ARGS, waits for
#                          it, sets $server (its pid) and $addr; on the CPUs in $SERVE_CPUS
#                          (taskset's list, e.g. 0) when it is set
WORK=${WORK:-/tmp/tandem-serve-load}

serve_setup() {
  mkdir -p "$WORK"
  command -v wrk > /dev/null || apt-get install -y -qq wrk > /dev/null
  cargo build --release -q -p tandem-cli
  cargo build --release -q -p tandem --example synthetic_index
  index="$WORK/index-$N"
  [ -f "$index/index.safetensors" ] || target/release/examples/synthetic_index "$index" "$N" >&2
}

serve_start() {
  local log=$1
  shift
  TANDEM_LOG=warn ${SERVE_CPUS:+taskset -c "$SERVE_CPUS"} target/release/tandem serve \
    --index "$index" --addr 127.0.0.1:0 "$@" > "$log" &
  server=$!
  for _ in $(seq 600); do grep -q "listening on" "$log" && break; sleep 0.1; done
  addr=$(sed -n 's|^listening on http://||p' "$log")
}
