// On every page: the sign-out button.
import { api } from "./api.js";

for (const button of document.querySelectorAll("[data-action=signout]")) {
  button.addEventListener("click", async () => {
    await api("/api/auth/logout", { method: "POST" }).catch(() => null);
    window.location.assign("/");
  });
}
