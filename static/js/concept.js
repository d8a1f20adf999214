// The concept page: live fit progress, generate (streamed per-image progress), history,
// strength sweep, lightbox, and the owner's settings (rename, visibility, share, delete).
import { api, show, el, $, formatSeconds } from "./api.js";
import { follow } from "./live.js";
import { askToNotify, canAskToNotify, notify, queuedText, titleProgress } from "./waiting.js";

const root = $("#concept");
const conceptId = root.dataset.id;
const token = root.dataset.token;

// ---------------------------------------------------------------- fit progress (live)

function watchFit(jobId) {
  const losses = [];
  const phase = $("#fit-phase");
  const name = $("[data-testid=concept-name]").textContent;
  const setPhase = (text) => { phase.textContent = text; };
  let stepped = false;
  // While queued, the estimate comes from the API (recent durations, what is ahead).
  const estimate = async () => {
    const concept = await api(`/api/concepts/${conceptId}`).catch(() => null);
    const job = concept && concept.job;
    if (job && job.state === "queued") setPhase(queuedText(job.queue_position, job.wait_s));
  };
  follow(jobId, {
    onEvent(event) {
      if (event.type === "queue") {
        setPhase(queuedText(event.position, null));
        estimate();
      } else if (event.type === "state") {
        if (event.state === "running" && !stepped) setPhase("Loading the model and preparing the photos… (step 1 comes after that)");
        else if (event.state === "running") setPhase("Learning your subject…");
        else if (event.state === "queued") setPhase("Queued — waiting for a worker…");
        else if (event.state === "failed") setPhase(`The fit failed: ${event.error || "unknown error"}`);
        else if (event.state === "canceled") setPhase("The fit was canceled.");
      } else if (event.type === "step") {
        stepped = true;
        setPhase(event.step >= event.total ? "Drawing its samples…" : "Learning your subject…");
        titleProgress(`${Math.floor((100 * event.step) / Math.max(1, event.total))}% ${name}`);
        $("#fit-step").textContent = `${event.step}/${event.total}`;
        $("#fit-bar").style.width = `${(100 * event.step) / Math.max(1, event.total)}%`;
        $("#fit-elapsed").textContent = formatSeconds(event.elapsed_s);
        $("#fit-eta").textContent = formatSeconds(event.eta_s);
        if (typeof event.loss === "number" && isFinite(event.loss)) {
          losses.push(event.loss);
          drawSparkline($("#fit-loss polyline"), losses);
          $("#fit-loss-label").textContent = `loss ${event.loss.toFixed(4)}`;
        }
      } else if (event.type === "preview") {
        const img = $("#fit-preview");
        img.src = event.data_url;
        img.hidden = false;
      }
    },
    onFinish(state) {
      const badge = $("#status-badge");
      badge.textContent = state === "succeeded" ? "ready" : state;
      badge.className = `badge ${state === "succeeded" ? "ready" : state}`;
      const cancel = $("#fit-cancel");
      if (cancel) cancel.hidden = true;
      const again = $("#fit-again-row");
      if (again && (state === "failed" || state === "canceled")) again.hidden = false;
      const word = state === "succeeded" ? "Ready" : state === "canceled" ? "Canceled" : "Fit failed";
      titleProgress(`${state === "succeeded" ? "✓" : "✗"} ${word}: ${name}`);
      notify(`${word}: ${name}`, state === "succeeded" ? "Your concept is ready to use." : "The fit ended without a concept.", window.location.href);
      if (state === "succeeded") {
        setPhase("Ready! Loading the generator…");
        // Keep the ✓ in the title over the reload until the person looks at the tab.
        try { if (document.hidden) sessionStorage.setItem(`fit-done:${conceptId}`, document.title); } catch { /* no storage */ }
        setTimeout(() => window.location.reload(), 600);
      }
    },
    async poll() {
      const concept = await api(`/api/concepts/${conceptId}`);
      const job = concept.job;
      if (job && job.state === "queued") setPhase(queuedText(job.queue_position, job.wait_s));
      if (job && job.state === "running" && stepped) setPhase("Learning your subject…");
      if (job && job.error) setPhase(`The fit failed: ${job.error}`);
      if (concept.status === "ready") return "succeeded";
      return job ? job.state : concept.status;
    },
  });
  if (root.dataset.jobState === "queued") estimate();
  const ask = $("#fit-notify");
  if (ask && canAskToNotify()) {
    ask.hidden = false;
    ask.addEventListener("click", async () => { await askToNotify(); ask.hidden = true; });
  }
  const cancel = $("#fit-cancel");
  if (cancel) {
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try {
        await api(`/api/jobs/${jobId}/cancel`, { method: "POST" });
        setPhase("Canceling…");
      } catch (error) {
        setPhase(error.message);
        cancel.disabled = false;
      }
    });
  }
}

function drawSparkline(polyline, values) {
  const recent = values.slice(-300);
  const min = Math.min(...recent);
  const max = Math.max(...recent);
  const span = max - min || 1;
  const points = recent.map((v, i) => {
    const x = recent.length === 1 ? 50 : (100 * i) / (recent.length - 1);
    const y = 95 - (90 * (v - min)) / span;
    return `${x.toFixed(2)},${y.toFixed(2)}`;
  });
  polyline.setAttribute("points", points.join(" "));
}

if (root.dataset.status === "fitting" && root.dataset.jobId) watchFit(root.dataset.jobId);
try {
  const done = sessionStorage.getItem(`fit-done:${conceptId}`);
  if (done) {
    sessionStorage.removeItem(`fit-done:${conceptId}`);
    document.title = done;
    document.addEventListener("visibilitychange", () => { if (!document.hidden) titleProgress(""); }, { once: true });
  }
} catch { /* no storage */ }

// A canceled or failed fit starts again on the same photos with the same settings.
const fitAgain = $("#fit-again");
if (fitAgain) {
  fitAgain.addEventListener("click", async () => {
    fitAgain.disabled = true;
    try {
      await api(`/api/concepts/${conceptId}/fit`, { method: "POST" });
      window.location.reload();
    } catch (error) {
      $("#fit-phase").textContent = error.message;
      fitAgain.disabled = false;
    }
  });
}

// An imported concept's samples are drawn by a worker: show them once they exist.
if ($("#samples-pending")) {
  const timer = setInterval(async () => {
    const concept = await api(`/api/concepts/${conceptId}`).catch(() => null);
    if (concept && concept.samples.length) { clearInterval(timer); window.location.reload(); }
  }, 3000);
}

// ---------------------------------------------------------------- lightbox

const lightbox = $("#lightbox");
let lightboxParams = null;

function openLightbox(image, generation) {
  $("#lightbox-img").src = image.url;
  $("#lightbox-download").href = `${image.url}?download=true`;
  $("#lightbox-download").setAttribute("download", `perfusion-${image.seed}.png`);
  $("#lightbox-caption").textContent = `${generation.prompt} · ${describe(generation.params)} · seed ${image.seed}`;
  lightboxParams = { ...generation.params, seed: image.seed, n: 1 };
  lightbox.showModal();
}

if (lightbox) {
  $("#lightbox-close").addEventListener("click", () => lightbox.close());
  lightbox.addEventListener("click", (e) => { if (e.target === lightbox) lightbox.close(); });
  $("#lightbox-again").addEventListener("click", () => {
    lightbox.close();
    if (lightboxParams) fillForm(lightboxParams);
  });
}

function describe(p) {
  return `strength ${Number(p.strength).toFixed(2)} · ${p.steps} steps · guidance ${p.guidance}`;
}

// ---------------------------------------------------------------- generate

const form = $("#gen-form");

function formValues() {
  const seed = $("#seed").value.trim();
  return {
    prompt: $("#prompt").value.trim(),
    negative_prompt: $("#negative").value.trim(),
    n: Number($("#n").value),
    seed: seed === "" ? null : Number(seed),
    steps: Number($("#steps").value),
    guidance: Number($("#guidance").value),
    strength: Number($("#strength").value),
    concept_id: conceptId,
  };
}

function fillForm(p) {
  $("#prompt").value = p.prompt;
  $("#negative").value = p.negative_prompt || "";
  $("#n").value = String(Math.min(4, Math.max(1, p.n || 1)));
  $("#seed").value = p.seed ?? "";
  $("#steps").value = p.steps;
  $("#guidance").value = p.guidance;
  $("#strength").value = p.strength;
  $("#strength").dispatchEvent(new Event("input"));
  $("#prompt").dispatchEvent(new Event("input"));
  form.scrollIntoView({ behavior: "smooth" });
}

// The server's bounds, rendered into the inputs' attributes: refuse before sending, and never
// cut a prompt short silently (the textarea has no maxlength; the counter says how far over).
const bound = (id, name) => Number($(id).getAttribute(name));

function clientProblems(v) {
  const maxPrompt = bound("#prompt", "data-max");
  const maxNegative = bound("#negative", "data-max");
  const [minSteps, maxSteps] = [bound("#steps", "min"), bound("#steps", "max")];
  const [minGuidance, maxGuidance] = [bound("#guidance", "min"), bound("#guidance", "max")];
  const maxSeed = bound("#seed", "max");
  if (!v.prompt) return "Write a prompt.";
  if (v.prompt.length > maxPrompt) return `The prompt has ${v.prompt.length} characters; at most ${maxPrompt} are accepted — shorten it by ${v.prompt.length - maxPrompt}.`;
  if (v.negative_prompt.length > maxNegative) return `The negative prompt is at most ${maxNegative} characters (it has ${v.negative_prompt.length}).`;
  if (v.seed !== null && !(Number.isInteger(v.seed) && v.seed >= 0 && v.seed <= maxSeed)) return `The seed is a whole number from 0 to ${maxSeed}.`;
  if (!(Number.isInteger(v.steps) && v.steps >= minSteps && v.steps <= maxSteps)) return `Steps: ${minSteps} to ${maxSteps}.`;
  if (!(v.guidance >= minGuidance && v.guidance <= maxGuidance)) return `Guidance: ${minGuidance} to ${maxGuidance}.`;
  return "";
}

function countPrompt() {
  const prompt = $("#prompt");
  const count = $("#prompt-count");
  if (!prompt || !count) return;
  const max = bound("#prompt", "data-max");
  const n = prompt.value.length;
  count.textContent = n > max ? `${n}/${max} characters — ${n - max} too many; it will not be sent like this.` : `${n}/${max} characters`;
  count.className = `hint ${n > max ? "bad" : ""}`;
}

/** ", behind a fit" when the estimate includes one (the server says so in `ahead`). */
function behindText(job) {
  return job && job.behind_fit ? ", behind a fit" : "";
}

/** A result block with one placeholder per image, filled as events arrive. */
function resultBlock(created, values, label) {
  const cards = [];
  for (let i = 0; i < values.n; i++) {
    const bar = el("div");
    const card = el("div", { class: "img-card", "data-testid": "result-image" },
      el("div", { class: "progress" }, bar), el("span", { class: "cap", text: `seed ${created.seed + i}` }));
    cards.push({ card, bar });
  }
  const status = el("p", { class: "small muted", "data-testid": "result-status",
    text: created.job && created.job.state === "queued" ? queuedText(created.job.queue_position, created.job.wait_s, behindText(created.job)) : "Queued…" });
  const block = el("div", { class: "result" }, label ? el("div", { class: "small", text: label }) : null, status,
    el("div", { class: "images" }, cards.map((c) => c.card)));
  const generation = { prompt: values.prompt, params: { ...values, seed: created.seed } };
  const setImage = (index, image) => {
    const slot = cards[index];
    if (!slot || slot.done) return;
    slot.done = true;
    const img = el("img", { src: image.url, alt: values.prompt });
    img.addEventListener("click", () => openLightbox(image, generation));
    slot.card.replaceChildren(img, el("span", { class: "cap", text: `seed ${image.seed ?? created.seed + index}` }));
  };
  follow(created.job.id, {
    onEvent(event) {
      if (event.type === "queue") {
        status.textContent = queuedText(event.position, null);
        api(`/api/generations/${created.id}`).then((gen) => {
          if (gen.job && gen.job.state === "queued") status.textContent = queuedText(gen.job.queue_position, gen.job.wait_s, behindText(gen.job));
        }).catch(() => {});
      }
      else if (event.type === "state" && event.state === "running") status.textContent = "Generating…";
      else if (event.type === "step") {
        const slot = cards[event.image_index ?? 0];
        if (slot) slot.bar.style.width = `${(100 * event.step) / Math.max(1, event.total)}%`;
        status.textContent = `Generating image ${(event.image_index ?? 0) + 1} of ${values.n}…`;
      } else if (event.type === "image") {
        // The worker stores the images when the job ends; until then the slot shows done.
        const slot = cards[event.index];
        if (slot) slot.bar.style.width = "100%";
        status.textContent = `Image ${event.index + 1} of ${values.n} done…`;
      } else if (event.type === "state" && event.state === "failed") {
        status.textContent = `Failed: ${event.error || "unknown error"}`;
      }
    },
    async onFinish(state) {
      const gen = await api(`/api/generations/${created.id}`).catch(() => null);
      if (gen) gen.images.forEach((image, i) => setImage(i, image));
      if (state === "succeeded") status.textContent = "Done.";
      else if (state === "canceled") status.textContent = "Canceled.";
      else if (gen && gen.job && gen.job.error) status.textContent = `Failed: ${gen.job.error}`;
      loadHistory();
    },
    async poll() {
      const gen = await api(`/api/generations/${created.id}`);
      gen.images.forEach((image, i) => setImage(i, image));
      if (gen.job && gen.job.state === "queued") status.textContent = queuedText(gen.job.queue_position, gen.job.wait_s, behindText(gen.job));
      return gen.job ? gen.job.state : "succeeded";
    },
  });
  return block;
}

async function submit(path, body, label) {
  const error = $("#gen-error");
  const problem = clientProblems(body);
  show(error, problem);
  if (problem) return;
  const buttons = [$("#gen-submit"), $("#sweep")];
  buttons.forEach((b) => { b.disabled = true; });
  try {
    const created = await api(path, { method: "POST", json: body });
    const results = $("#results");
    if (created.items) {
      const row = el("div", { class: "sweep" });
      const block = el("div", { class: "result" },
        el("div", { class: "small prompt-said", text: `“${body.prompt}” · strength sweep · seed ${created.items[0].seed}` }), row);
      created.items.forEach((item, i) => {
        row.append(resultBlock(item, { ...body, n: 1, strength: body.strengths[i] }, `strength ${body.strengths[i].toFixed(1)}`));
      });
      results.prepend(block);
    } else {
      const block = resultBlock(created, body, "");
      block.prepend(el("div", { class: "small prompt-said", text: `“${body.prompt}” · ${describe({ ...body, seed: created.seed })}` }));
      results.prepend(block);
      if (created.unknown.length) show(error, `Not recognised (generated without them): ${created.unknown.join(", ")}`);
    }
  } catch (e) {
    show(error, e.message);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

if (form) {
  const strength = $("#strength");
  const strengthWord = (v) => v <= 0.1 ? "Now: the superclass, hardly any of your subject."
    : v < 0.4 ? "Now: a light touch of your subject." : v < 0.75 ? "Now: clearly your subject, still shaped by the prompt."
      : "Now: unmistakably your subject.";
  const showStrength = () => {
    $("#strength-value").textContent = Number(strength.value).toFixed(2);
    $("#strength-word").textContent = strengthWord(Number(strength.value));
  };
  strength.addEventListener("input", showStrength);
  showStrength();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit("/api/generations", formValues());
  });
  $("#sweep").addEventListener("click", () => {
    const body = { ...formValues(), n: 1, strengths: [0.2, 0.4, 0.6, 0.8, 1.0] };
    submit("/api/generations/sweep", body);
  });

  // Which <tokens> in the prompt are concepts we may use?
  let timer = null;
  const prompt = $("#prompt");
  prompt.addEventListener("input", countPrompt);
  prompt.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const r = await api(`/api/concepts/resolve?prompt=${encodeURIComponent(prompt.value.slice(0, 500))}`).catch(() => null);
      if (!r) return;
      $("#tokens-found").replaceChildren(
        ...r.recognized.map((t) => el("span", { class: "chip", title: t.name, text: `✓ ${t.token}` })),
        ...r.unknown.map((t) => el("span", { class: "chip bad", text: `? ${t} unknown` })),
      );
    }, 250);
  });
  prompt.dispatchEvent(new Event("input"));
  const end = prompt.value.length;
  prompt.setSelectionRange(end, end);
  loadHistory();
}

// ---------------------------------------------------------------- history

async function loadHistory() {
  const history = $("#history");
  if (!history) return;
  const generations = await api(`/api/generations?concept_id=${conceptId}`).catch(() => null);
  if (!generations) return;
  if (!generations.length) {
    history.replaceChildren(el("p", { class: "muted small", text: "Nothing generated yet." }));
    return;
  }
  history.replaceChildren(...generations.map((g) => {
    const again = el("button", { type: "button", class: "link", text: "Run again with these settings" });
    again.addEventListener("click", () => fillForm(g.params));
    const images = g.images.map((image) => {
      const img = el("img", { src: image.url, alt: g.prompt });
      img.addEventListener("click", () => openLightbox(image, g));
      return el("div", { class: "img-card", "data-testid": "history-image" }, img,
        el("span", { class: "cap", text: `seed ${image.seed}` }));
    });
    const state = g.job && g.job.state !== "succeeded" ? ` · ${g.job.state}` : "";
    return el("div", { class: "history-item", "data-testid": "history-item" },
      el("div", { class: "prompt", text: g.prompt }),
      el("div", { class: "meta" },
        el("span", { text: describe(g.params) }),
        el("span", { text: `seed ${g.params.seed}` }),
        g.negative_prompt ? el("span", { text: `not: ${g.negative_prompt}` }) : null,
        el("span", { text: new Date(g.created_at).toLocaleString() + state })),
      el("div", { class: "actions" }, again),
      el("div", { class: "images" }, images));
  }));
}

// ---------------------------------------------------------------- owner settings

if (root.dataset.owner === "true") {
  const error = $("#manage-error");
  const visibility = $("#visibility");
  const share = $("#share");
  const setShareActive = (active, url) => {
    $("#share-state").textContent = active ? "A share link is active. Anyone with it can view and use this concept." : "No share link.";
    $("#share-revoke").hidden = !active;
    $("#share-create").textContent = active ? "New link (replaces the old one)" : "Create share link";
    $("#share-url-row").hidden = !url;
    $("#share-url").value = url || "";
  };

  $("#rename-save").addEventListener("click", async () => {
    try {
      const c = await api(`/api/concepts/${conceptId}`, { method: "PATCH", json: { name: $("#rename").value } });
      $("[data-testid=concept-name]").textContent = c.name;
      show(error, "");
    } catch (e) { show(error, e.message); }
  });
  visibility.addEventListener("change", () => {
    $("#visibility-hint").textContent = visibility.selectedOptions[0]?.dataset.why || "";
  });
  visibility.addEventListener("change", async () => {
    try {
      const c = await api(`/api/concepts/${conceptId}`, { method: "PATCH", json: { visibility: visibility.value } });
      share.hidden = c.visibility === "private";
      show(error, "");
    } catch (e) { show(error, e.message); }
  });
  $("#share-create").addEventListener("click", async () => {
    try {
      const r = await api(`/api/concepts/${conceptId}/share`, { method: "POST" });
      setShareActive(true, r.url);
      visibility.value = visibility.value === "private" ? "unlisted" : visibility.value;
      show(error, "");
    } catch (e) { show(error, e.message); }
  });
  $("#share-revoke").addEventListener("click", async () => {
    try {
      await api(`/api/concepts/${conceptId}/share`, { method: "DELETE" });
      setShareActive(false, "");
      show(error, "");
    } catch (e) { show(error, e.message); }
  });
  $("#share-copy").addEventListener("click", () => {
    $("#share-url").select();
    navigator.clipboard?.writeText($("#share-url").value).catch(() => {});
  });
  $("#delete").addEventListener("click", async () => {
    if (!window.confirm(`Delete ${token} with its photos, images and file? This cannot be undone.`)) return;
    try {
      await api(`/api/concepts/${conceptId}`, { method: "DELETE" });
      window.location.assign("/");
    } catch (e) { show(error, e.message); }
  });
}
