// Follow a job live. Uses the jobs engineer's progress.js (`watchJob(jobId, {onEvent, onClose})`)
// when it is there; otherwise speaks the same protocol itself: WS /ws/jobs/{id}?after=<id>
// replays every event after the cursor, so a reload or a dropped connection loses nothing.
// If the socket cannot be used, polls `poll()` (it returns the job's state).

const FINAL = new Set(["succeeded", "failed", "canceled"]);

export function isFinal(state) {
  return FINAL.has(state);
}

export async function follow(jobId, { onEvent, onFinish, poll, pollMs = 1500 }) {
  let finished = false;
  const finish = (state) => {
    if (finished) return;
    finished = true;
    onFinish(state);
  };
  const handle = (message) => {
    const event = message && message.event ? message.event : message;
    if (!event || !event.type) return;
    onEvent(event);
    if (event.type === "state" && isFinal(event.state)) finish(event.state);
  };
  try {
    const progress = await import("./progress.js");
    // progress.js keeps a per-job cursor in sessionStorage so a reload resumes after it. This
    // page rebuilds its whole view (loss curve, steps, previews) from the events, so a fresh
    // page starts from the first event; reconnects within the page still resume.
    try { sessionStorage.removeItem(`job-events:${jobId}`); } catch (error) { /* no storage */ }
    progress.watchJob(jobId, {
      onEvent: handle,
      // The socket closed without a final state we saw: ask the API for the truth.
      onClose: () => { if (!finished) pollUntilDone(); },
    });
    return;
  } catch (error) {
    // progress.js missing or failing: use the websocket directly
  }
  if ("WebSocket" in window) socket(null, 0);
  else pollUntilDone();

  function socket(after, failures) {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const query = after ? `?after=${encodeURIComponent(after)}` : "";
    const ws = new WebSocket(`${scheme}://${window.location.host}/ws/jobs/${jobId}${query}`);
    let cursor = after;
    let received = false;
    ws.addEventListener("message", (message) => {
      received = true;
      const data = JSON.parse(message.data);
      if (data.id) cursor = data.id;
      handle(data);
    });
    ws.addEventListener("close", (close) => {
      if (finished) return;
      if (close.code >= 4000 || failures >= 5) { pollUntilDone(); return; }
      const next = received ? 0 : failures + 1;
      setTimeout(() => socket(cursor, next), 500 * (next + 1));
    });
  }

  async function pollUntilDone() {
    while (!finished) {
      try {
        const state = await poll();
        if (isFinal(state)) { finish(state); return; }
      } catch (error) { /* transient: try again */ }
      await new Promise((resolve) => setTimeout(resolve, pollMs));
    }
  }
}
