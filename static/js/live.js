// Follow a job live. Uses the jobs engineer's progress.js (`watchJob(jobId, {onEvent, onClose})`,
// a websocket that replays every event after a reload or reconnect); if that module is not
// available, polls `poll()` instead (it returns true once the job is finished).

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
    progress.watchJob(jobId, {
      onEvent: handle,
      // The socket closed without a final state we saw: ask the API for the truth.
      onClose: () => { if (!finished) pollUntilDone(); },
    });
    return;
  } catch (error) {
    // progress.js missing or failing: fall back to polling
  }
  pollUntilDone();

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
