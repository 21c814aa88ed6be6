# Shared by the scripts that run the local stack (`keel-local --serve`): load.sh, canary-replay.sh.
# Source it; `who` names the calling script in messages.

# wait_serving <who> <log> <pid>: waits (at most 5 minutes) until the stack started as <pid>,
# writing to <log>, says it serves, and prints its URL. If it stops first or never serves, says
# why (the log's tail) and exits.
wait_serving() {
  local who="$1" log="$2" pid="$3" url=""
  for _ in $(seq 1 600); do
    url="$(sed -n 's/^Serving booking-api at \(http:[^ ]*\) .*/\1/p' "$log" | head -n 1)"
    if [ -n "$url" ]; then
      echo "$url"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$who: the local stack stopped before serving:" >&2
      tail -n 40 "$log" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "$who: the local stack did not serve within 5 minutes:" >&2
  tail -n 40 "$log" >&2
  exit 1
}

# stop_process <pid>: asks it to stop (TERM), gives it 30 s to stop its own servers, then KILLs it.
stop_process() {
  local pid="$1"
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
