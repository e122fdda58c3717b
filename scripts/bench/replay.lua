-- wrk script: replays pre-signed requests from REQUESTS (a file written by events.py), each
-- once, cycling if the run outlasts them. DELAY_MS paces each connection (rate-limited runs);
-- OFFSET skips that many requests first (a long run split over several wrk invocations
-- continues where the previous one stopped instead of replaying it).
local file = os.getenv("REQUESTS")
local delay_ms = tonumber(os.getenv("DELAY_MS") or "0")
local reqs, n, i = {}, 0, tonumber(os.getenv("OFFSET") or "0")

local function decode_headers(s)
  local h = {}
  for k, v in s:gmatch('"([^"]+)":%s*"([^"]*)"') do h[k] = v end
  return h
end

init = function(args)
  for line in io.lines(file) do
    local path, headers, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
    n = n + 1
    reqs[n] = wrk.format("POST", path, decode_headers(headers), body)
  end
end

request = function()
  i = i + 1
  return reqs[(i - 1) % n + 1]
end

if delay_ms > 0 then
  delay = function() return delay_ms end
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_s=%.3f rps=%.0f p50_ms=%.3f p99_ms=%.3f non2xx=%d errors=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    (summary.errors.status or 0), (summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout)))
end
