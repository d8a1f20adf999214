// Live job progress: watchJob(jobId, {onEvent, onClose}) follows /ws/jobs/{id}.
// Every message is {"id": cursor, "event": {...}}; the cursor is kept in sessionStorage per
// job so a reconnect (or a page reload) resumes with ?after=<cursor> and misses nothing.

const FINAL_STATES = new Set(["succeeded", "failed", "canceled"]);
const NO_RETRY_CODES = new Set([1000, 4403, 4404]); // done, foreign origin, not yours
const MAX_BACKOFF_MS = 15000;

function storageKey(jobId) {
  return `job-events:${jobId}`;
}

/**
 * Watch a job's events until its final state.
 * @param {string} jobId
 * @param {{onEvent?: (event: object, id: string) => void, onClose?: (info: {code: number, final: object|null}) => void}} handlers
 * @returns {{stop: () => void}}
 */
export function watchJob(jobId, { onEvent = () => {}, onClose = () => {} } = {}) {
  let socket = null;
  let stopped = false;
  let attempt = 0;
  let final = null;
  let timer = null;

  const finish = (code) => {
    if (stopped) return;
    stopped = true;
    clearTimeout(timer);
    onClose({ code, final });
  };

  const connect = () => {
    if (stopped) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const after = sessionStorage.getItem(storageKey(jobId));
    const query = after ? `?after=${encodeURIComponent(after)}` : "";
    socket = new WebSocket(`${scheme}//${location.host}/ws/jobs/${jobId}${query}`);

    socket.onopen = () => {
      attempt = 0;
    };
    socket.onmessage = (message) => {
      let data;
      try {
        data = JSON.parse(message.data);
      } catch {
        return;
      }
      if (data.id) sessionStorage.setItem(storageKey(jobId), data.id);
      const event = data.event || {};
      if (event.type === "state" && FINAL_STATES.has(event.state)) final = event;
      onEvent(event, data.id);
    };
    socket.onclose = (closeEvent) => {
      if (final || NO_RETRY_CODES.has(closeEvent.code)) {
        if (final) sessionStorage.removeItem(storageKey(jobId));
        finish(closeEvent.code);
        return;
      }
      // Dropped: retry with exponential backoff and jitter, resuming after the last id.
      const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** attempt) * (0.75 + Math.random() / 2);
      attempt += 1;
      timer = setTimeout(connect, delay);
    };
  };

  connect();
  return {
    stop() {
      if (socket) socket.close();
      finish(1000);
    },
  };
}
