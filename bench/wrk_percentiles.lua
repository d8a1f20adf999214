-- wrk's --latency prints p50/p75/p90/p99; the goal is stated at p95: print it (microseconds).
done = function(summary, latency, requests)
  io.write(string.format("p95_us %d\n", latency:percentile(95)))
end
