// Sign in / sign up: post JSON to the API, which sets the session cookie.
import { api, show, $ } from "./api.js";

const form = $("#auth-form");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const mode = form.dataset.mode;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  show($("#auth-error"), "");
  try {
    await api(mode === "signin" ? "/api/auth/login" : "/api/auth/signup", {
      method: "POST",
      json: { username: $("#username").value.trim(), password: $("#password").value },
    });
    window.location.assign(form.dataset.next || "/");
  } catch (error) {
    show($("#auth-error"), error.message);
    button.disabled = false;
  }
});
