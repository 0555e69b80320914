-- wrk script for bench/serve_load.sh: POST /search with a random caption id (text→image, k 10)
-- of the N captions, and one RESULT line with throughput, latency percentiles and errors.
local n = tonumber(os.getenv("N"))
local exact = os.getenv("EXACT") == "1"

request = function()
  local body = string.format(
    '{"id": %d, "direction": "text_to_image", "k": 10%s}',
    math.random(0, n - 1),
    exact and ', "exact": true' or ''
  )
  return wrk.format("POST", "/search", { ["Content-Type"] = "application/json" }, body)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d seconds=%.1f per_s=%.1f p50_ms=%.2f p99_ms=%.2f non_2xx=%d socket_errors=%d\n",
    summary.requests,
    summary.duration / 1e6,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000,
    latency:percentile(99) / 1000,
    e.status,
    e.connect + e.read + e.write + e.timeout
  ))
end
