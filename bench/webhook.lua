-- wrk script: POSTs pre-signed, unique webhook deliveries from REQUESTS_FILE.
-- Each thread takes every Nth line so no delivery is sent twice (a repeat would be a cheap
-- duplicate and flatter the numbers). DELAY_MS > 0 paces each connection (fixed-rate runs).
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local nthreads = counter
  requests = {}
  local path = os.getenv("REQUESTS_FILE")
  local n = 0
  for line in io.lines(path) do
    if n % tonumber(os.getenv("WRK_THREADS")) == id then
      local tab = string.find(line, "\t", 1, true)
      local sig = string.sub(line, 1, tab - 1)
      local body = string.sub(line, tab + 1)
      table.insert(requests, wrk.format("POST", "/webhook",
        { ["Content-Type"] = "application/json", ["X-Hub-Signature-256"] = sig }, body))
    end
    n = n + 1
  end
  index = 0
  wrapped = 0
  non200 = 0
  pace = tonumber(os.getenv("DELAY_MS") or "0")
end

function request()
  index = index + 1
  if index > #requests then
    index = 1
    wrapped = 1
  end
  return requests[index]
end

function delay()
  return pace
end

function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
end

function done(summary, latency, requests_)
  local bad = 0
  local wrapped_any = 0
  for _, t in ipairs(threads) do
    bad = bad + (t:get("non200") or 0)
    wrapped_any = wrapped_any + (t:get("wrapped") or 0)
  end
  io.write(string.format(
    "RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f requests=%d non200=%d errors=%d wrapped=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.requests, bad,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout,
    wrapped_any))
end
