// Personal API tokens: list, create (secret shown once), delete.
import { api, show, el, $ } from "./api.js";

const date = (iso) => (iso ? new Date(iso).toLocaleString() : "never");

async function refresh() {
  const tokens = await api("/api/tokens");
  const rows = $("#token-rows");
  rows.replaceChildren(
    ...tokens.map((t) => {
      const remove = el("button", { type: "button", class: "danger", text: "Delete" });
      remove.addEventListener("click", async () => {
        await api(`/api/tokens/${t.id}`, { method: "DELETE" });
        refresh();
      });
      return el("tr", {}, el("td", { text: t.name }), el("td", { text: date(t.created_at) }),
        el("td", { text: date(t.last_used_at) }), el("td", {}, remove));
    }),
  );
}

$("#token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  show($("#token-error"), "");
  try {
    const created = await api("/api/tokens", { method: "POST", json: { name: $("#token-name").value } });
    $("#token-secret").textContent = created.token;
    $("#token-new").hidden = false;
    refresh();
  } catch (error) {
    show($("#token-error"), error.message);
  }
});

refresh();
