// Waiting made visible: an estimated wait while queued, the tab title while a fit runs, and
// a browser notification when it ends (if the person allowed them).
import { formatSeconds } from "./api.js";

/** "Queued — position 2, starts in about 3m 10s." from a job reference or queue event. */
export function queuedText(position, waitS, behind = "") {
  const where = !position || position <= 1 ? "next up" : `position ${position}`;
  if (waitS === null || waitS === undefined) return `Queued — ${where}.`;
  if (waitS < 5) return `Queued — ${where}, starting any moment${behind}.`;
  return `Queued — ${where}, starts in about ${formatSeconds(roundWait(waitS))}${behind}.`;
}

function roundWait(s) {
  return s > 120 ? Math.round(s / 30) * 30 : Math.round(s / 5) * 5;
}

const baseTitle = document.title;
const siteName = baseTitle.split(" · ").pop();

/** Show progress or a final word in the tab's title, in place of the page's own name (the
 * text names the concept: "37% Rex · Perfusion Studio", not "37% Rex · Rex · …"). */
export function titleProgress(text) {
  document.title = text ? `${text} · ${siteName}` : baseTitle;
}

/** Ask for notification permission (call from a click). */
export async function askToNotify() {
  if (!("Notification" in window) || Notification.permission !== "default") return;
  try { await Notification.requestPermission(); } catch { /* older browsers: callback form */ }
}

export function canAskToNotify() {
  return "Notification" in window && Notification.permission === "default";
}

export function notify(title, body, url) {
  if (!("Notification" in window) || Notification.permission !== "granted") return null;
  try {
    const n = new Notification(title, { body, icon: "/static/img/icon.svg", tag: url });
    n.addEventListener("click", () => { window.focus(); n.close(); });
    return n;
  } catch { return null; }
}
