// Follow a job live: the one websocket client of /ws/jobs/{id}.
// Every message is {"id": cursor, "event": {...}}; a reconnect sends ?after=<cursor>, so a
// dropped connection loses nothing. The server closes (1000) after the final state event.
// Where the socket cannot be used, or the server refuses it, `poll()` (it returns the job's
// state) is asked until the job is done. A fresh page starts from the first event: its view
// (loss curve, steps, previews) is rebuilt from them.

// The job states after which nothing more happens (JobState.finished on the server).
const FINAL = new Set(["succeeded", "failed", "canceled"]);
const NO_RETRY_CODES = new Set([1000, 4403, 4404]); // done, foreign origin, not yours
const MAX_BACKOFF_MS = 15000;

export function isFinal(state) {
  return FINAL.has(state);
}

export function follow(jobId, { onEvent, onFinish, poll, pollMs = 1500 }) {
  let finished = false;
  let cursor = null;
  let attempt = 0;
  const finish = (state) => {
    if (finished) return;
    finished = true;
    onFinish(state);
  };

  const connect = () => {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const query = cursor ? `?after=${encodeURIComponent(cursor)}` : "";
    const ws = new WebSocket(`${scheme}://${window.location.host}/ws/jobs/${jobId}${query}`);
    ws.addEventListener("open", () => { attempt = 0; });
    ws.addEventListener("message", (message) => {
      let data;
      try { data = JSON.parse(message.data); } catch (error) { return; }
      if (data.id) cursor = data.id;
      const event = data.event;
      if (!event || !event.type) return;
      onEvent(event);
      if (event.type === "state" && isFinal(event.state)) finish(event.state);
    });
    ws.addEventListener("close", (close) => {
      if (finished) return;
      // Closed without a final state we saw: ask the API for the truth.
      if (NO_RETRY_CODES.has(close.code) || attempt >= 5) { pollUntilDone(); return; }
      // Dropped: retry with exponential backoff and jitter, resuming after the cursor.
      const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** attempt) * (0.75 + Math.random() / 2);
      attempt += 1;
      setTimeout(connect, delay);
    });
  };

  async function pollUntilDone() {
    while (!finished) {
      try {
        const state = await poll();
        if (isFinal(state)) { finish(state); return; }
      } catch (error) { /* transient: try again */ }
      await new Promise((resolve) => setTimeout(resolve, pollMs));
    }
  }

  if ("WebSocket" in window) connect();
  else pollUntilDone();
}
