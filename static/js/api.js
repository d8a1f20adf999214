// Tiny JSON API client shared by the pages.

/** A readable message from a FastAPI error body. */
export function errorMessage(body, status) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail
      .map((d) => {
        const field = (d.loc || []).filter((p) => p !== "body" && p !== "query").join(".");
        return field ? `${field}: ${d.msg}` : d.msg;
      })
      .join("; ");
  }
  return `Request failed (${status}).`;
}

/** fetch() a JSON API route; throws Error(message) on a non-2xx answer. */
export async function api(path, { method = "GET", json, form } = {}) {
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    let message = errorMessage(body, response.status);
    const retryAfter = Number(response.headers.get("Retry-After"));
    if (response.status === 429 && retryAfter > 0) message += ` Try again in ${waitText(retryAfter)}.`;
    const error = new Error(message);
    error.status = response.status;
    error.retryAfter = retryAfter || null;
    throw error;
  }
  return body;
}

/** "N minutes" (or seconds under a minute) for a Retry-After in seconds. */
export function waitText(seconds) {
  if (seconds < 60) return `${Math.ceil(seconds)} second${Math.ceil(seconds) === 1 ? "" : "s"}`;
  const minutes = Math.ceil(seconds / 60);
  return `${minutes} minute${minutes === 1 ? "" : "s"}`;
}

export function show(el, message) {
  if (!el) return;
  el.textContent = message || "";
  el.hidden = !message;
}

export const $ = (selector, root = document) => root.querySelector(selector);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key === "href" || key === "src" || key === "alt" || key === "type" || key === "download" || key === "aria-label") node.setAttribute(key, value === true ? "" : value);
    else node[key] = value;
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

export function formatSeconds(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.max(0, Math.round(s));
  return s >= 60 ? `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}
