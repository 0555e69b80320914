-- wrk script for bench/serve_soak.sh and bench/serve_limits.sh: a mix of requests against
-- `tandem serve` (MIX=valid for valid searches only), counted by status class; one RESULT
-- line with throughput, latency percentiles and the counts.
--   valid:     POST /search by a random caption id, k 10                  (85% of the mix)
--   malformed: a body that is not JSON                                    (5%)
--   bad k:     k = 0                                                       (5%)
--   unknown:   a field the API does not know                               (4%)
--   oversized: a body over the server's 8 MiB limit                        (1%)
-- TOKEN=... sends it as a bearer token.
local n = tonumber(os.getenv("N"))
local valid_only = os.getenv("MIX") == "valid"
local token = os.getenv("TOKEN")
local headers = { ["Content-Type"] = "application/json" }
if token then headers["Authorization"] = "Bearer " .. token end
local oversized = '{"text": "' .. string.rep("a", 9 * 1024 * 1024) .. '"}'

-- DELAY_MS=d: each connection waits d ms before its next request, so C connections offer
-- about C / d requests per ms whatever the answers' latency (an open-loop rate, as from many
-- independent clients), rather than as fast as the server answers.
local delay_ms = tonumber(os.getenv("DELAY_MS") or "")
if delay_ms then
  delay = function() return delay_ms end
end

local threads = {}
function setup(thread) table.insert(threads, thread) end

function init(args)
  ok, client_errors, busy, server_errors = 0, 0, 0, 0
end

request = function()
  local r = valid_only and 0 or math.random()
  local body
  if r < 0.85 then
    body = string.format('{"id": %d, "direction": "text_to_image", "k": 10}', math.random(0, n - 1))
  elseif r < 0.90 then
    body = '{"id": 3, "direction": '
  elseif r < 0.95 then
    body = '{"id": 3, "direction": "text_to_image", "k": 0}'
  elseif r < 0.99 then
    body = '{"id": 3, "direction": "text_to_image", "colour": "red"}'
  else
    body = oversized
  end
  return wrk.format("POST", "/search", headers, body)
end

response = function(status, headers, body)
  if status == 503 then busy = busy + 1
  elseif status >= 500 then server_errors = server_errors + 1
  elseif status >= 400 then client_errors = client_errors + 1
  else ok = ok + 1 end
end

done = function(summary, latency, requests)
  local totals = { ok = 0, client_errors = 0, busy = 0, server_errors = 0 }
  for _, t in ipairs(threads) do
    for key, _ in pairs(totals) do totals[key] = totals[key] + t:get(key) end
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d seconds=%.1f per_s=%.1f ok_per_s=%.1f p50_ms=%.2f p99_ms=%.2f ok=%d 4xx=%d 503=%d other_5xx=%d socket_errors=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    totals.ok / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    totals.ok, totals.client_errors, totals.busy, totals.server_errors,
    e.connect + e.read + e.write + e.timeout))
end
