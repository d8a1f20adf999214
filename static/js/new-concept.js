// New concept: photos (drop or pick, thumbnails, remove), name → token suggestion with a
// uniqueness check, superclass suggestions, advanced settings (steps, seed, optional masks);
// submit → the concept page.
import { api, show, el, $ } from "./api.js";
import { toyWorldLook } from "./toyworld-check.js";
import { askToNotify } from "./waiting.js";

const TYPES = new Set(["image/png", "image/jpeg", "image/webp"]);
const form = $("#concept-form");
// The server's limits, rendered into the form, so the page refuses what the server would.
const MIN_PHOTOS = Number(form.dataset.minPhotos);
const MAX_PHOTOS = Number(form.dataset.maxPhotos);
const MAX_BYTES = Number(form.dataset.maxFileBytes);
const MAX_TOTAL_BYTES = Number(form.dataset.maxTotalBytes);
const MIN_SIDE = Number(form.dataset.minSide);
const TOY_WORLD = form.dataset.toyWorld === "true";
const MB = 1024 * 1024;

const photos = []; // {file, url, ok: null (loading) | true | false, why}
const dropzone = $("#dropzone");
const input = $("#photos");
const formError = $("#form-error");

function addFiles(files) {
  const problems = [];
  for (const file of files) {
    if (!TYPES.has(file.type)) problems.push(`${file.name}: not a PNG, JPEG or WebP image.`);
    else if (file.size > MAX_BYTES) problems.push(`${file.name}: larger than ${MAX_BYTES / MB} MB.`);
    else {
      // Every photo is kept and shown, so the count is what will be sent; too many block
      // the submit (the server refuses more than MAX_PHOTOS) instead of being dropped.
      const photo = { file, url: URL.createObjectURL(file), ok: null, why: "" };
      photos.push(photo);
      const probe = new Image();
      probe.onload = () => {
        photo.ok = Math.min(probe.naturalWidth, probe.naturalHeight) >= MIN_SIDE;
        if (!photo.ok) photo.why = `smaller than ${MIN_SIDE} px`;
        if (photo.ok && TOY_WORLD) photo.look = toyWorldLook(probe);
        renderThumbs();
      };
      probe.onerror = () => { photo.ok = false; photo.why = "not a readable image"; renderThumbs(); };
      probe.src = photo.url;
    }
  }
  show(formError, [...new Set(problems)].join(" "));
  renderThumbs();
}

/** The toy world draws one object on a plain background: say so when photos are not that. */
function renderDomainWarning() {
  const odd = photos.filter((p) => p.look && !p.look.ok);
  const warning = $("#domain-warning");
  if (!odd.length) { show(warning, ""); return; }
  const which = odd.map((p) => `${p.file.name} (${p.look.why})`).join(", ");
  const subject = odd.length === photos.length ? (odd.length === 1 ? "This photo does" : "These photos do")
    : `${odd.length} of these photos ${odd.length === 1 ? "does" : "do"}`;
  show(warning, `${subject} not look like the toy world's pictures — one object on a plain background: ${which}. `
    + "The bundled model will likely draw coloured blobs from them. You can still try.");
}

/** What stops the photos being sent as they are ("" when they can be). */
function photoProblem() {
  const good = photos.filter((p) => p.ok !== false).length;
  const broken = photos.filter((p) => p.ok === false);
  const total = photos.reduce((sum, p) => sum + p.file.size, 0);
  const tooMany = (n) => `${n} photos: at most ${MAX_PHOTOS} are accepted — remove ${n - MAX_PHOTOS}.`;
  if (broken.length) {  // and, if the rest are too many too, that as well: both at once
    const remove = `Remove ${broken.map((p) => `${p.file.name} (${p.why})`).join(", ")}.`;
    return good > MAX_PHOTOS ? `${remove} Then ${tooMany(good)}` : remove;
  }
  if (photos.length > MAX_PHOTOS) return tooMany(photos.length);
  if (total > MAX_TOTAL_BYTES) return `The photos add up to ${(total / MB).toFixed(0)} MB; at most ${MAX_TOTAL_BYTES / MB} MB in all.`;
  if (good < MIN_PHOTOS) return `Add at least ${MIN_PHOTOS} photos (4 work well).`;
  return "";
}

function renderThumbs() {
  $("#thumbs").replaceChildren(
    ...photos.map((photo, index) => {
      const remove = el("button", { type: "button", text: "×", "aria-label": `Remove ${photo.file.name}` });
      remove.addEventListener("click", () => {
        URL.revokeObjectURL(photo.url);
        photos.splice(index, 1);
        renderThumbs();
      });
      const broken = photo.ok === false;
      return el("div", { class: `thumb${broken ? " broken" : ""}`, title: broken ? `${photo.file.name}: ${photo.why}` : photo.file.name },
        broken ? el("span", { class: "thumb-why", text: photo.why }) : el("img", { src: photo.url, alt: photo.file.name }), remove);
    }),
  );
  renderDomainWarning();
  const n = photos.filter((p) => p.ok !== false).length;
  const problem = photoProblem();
  const hint = $("#photo-hint");
  if (photos.length === 0) { hint.textContent = "No photos yet."; hint.className = "hint"; return; }
  if (problem && !problem.startsWith("Add")) { hint.textContent = problem; hint.className = "hint bad"; return; }
  hint.textContent = n < MIN_PHOTOS
    ? `${n} photo${n === 1 ? "" : "s"} — add at least ${MIN_PHOTOS - n} more.`
    : `${n} photos${n === 4 ? " — a good number." : "."}`;
  hint.className = `hint ${n >= MIN_PHOTOS ? "ok" : ""}`;
}

dropzone.addEventListener("click", () => input.click());
dropzone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
input.addEventListener("change", () => { addFiles([...input.files]); input.value = ""; });
for (const type of ["dragenter", "dragover"]) {
  dropzone.addEventListener(type, (e) => { e.preventDefault(); dropzone.classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  dropzone.addEventListener(type, (e) => { e.preventDefault(); dropzone.classList.remove("over"); });
}
dropzone.addEventListener("drop", (e) => addFiles([...e.dataTransfer.files]));

// Token: suggested from the name until edited by hand; checked for form and uniqueness.
const nameInput = $("#name");
const tokenInput = $("#token");
let tokenEdited = false;
let tokenOk = false;
let checkTimer = null;

const slug = (name) => name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 36).replace(/-+$/, "");

function scheduleCheck() {
  clearTimeout(checkTimer);
  tokenOk = false;
  checkTimer = setTimeout(checkToken, 250);
}

async function checkToken() {
  const token = tokenInput.value.trim();
  const hint = $("#token-hint");
  if (!token) { hint.textContent = "Write it in prompts, e.g. “a <rex> on the moon”."; hint.className = "hint"; return; }
  const result = await api(`/api/concepts/check-token?token=${encodeURIComponent(token)}`).catch(() => null);
  if (!result || tokenInput.value.trim() !== token) return;
  tokenOk = result.valid && result.available;
  hint.textContent = result.message;
  hint.className = `hint ${tokenOk ? "ok" : "bad"}`;
}

nameInput.addEventListener("input", () => {
  if (tokenEdited) return;
  const s = slug(nameInput.value);
  tokenInput.value = s ? `<${s}>` : "";
  scheduleCheck();
});
tokenInput.addEventListener("input", () => { tokenEdited = tokenInput.value.trim() !== ""; scheduleCheck(); });

for (const button of document.querySelectorAll("[data-superclass]")) {
  button.addEventListener("click", () => { $("#superclass").value = button.dataset.superclass; });
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const problems = [];
  if (photos.some((p) => p.ok === null)) problems.push("Still reading the photos; try again in a moment.");
  else if (photoProblem()) problems.push(photoProblem());
  if (!nameInput.value.trim()) problems.push("Give the concept a name.");
  if (!/^<[a-z0-9][a-z0-9_-]{0,36}>$/.test(tokenInput.value.trim())) problems.push("The token looks like <name>: lowercase letters, digits, - or _.");
  if (!$("#superclass").value.trim()) problems.push("Say what it is (superclass), e.g. dog.");
  const masks = [...$("#masks").files];
  if (masks.length && masks.length !== photos.length) problems.push(`Give one mask per photo, or none: ${photos.length} photos, ${masks.length} masks.`);
  if (problems.length) { show(formError, problems.join(" ")); return; }
  const form = new FormData();
  form.append("name", nameInput.value.trim());
  form.append("token", tokenInput.value.trim());
  form.append("superclass", $("#superclass").value.trim().toLowerCase());
  if ($("#steps").value) form.append("steps", $("#steps").value);
  if ($("#seed").value) form.append("seed", $("#seed").value);
  for (const photo of photos) form.append("images", photo.file, photo.file.name);
  for (const mask of masks) form.append("masks", mask, mask.name); // matched to photos by name
  askToNotify(); // from this click: a notification can say when the fit is done
  const button = $("#submit");
  button.disabled = true;
  button.textContent = "Uploading…";
  show(formError, "");
  try {
    const created = await api("/api/concepts", { method: "POST", form });
    window.location.assign(`/concepts/${created.id}`);
  } catch (error) {
    show(formError, error.message);
    button.disabled = false;
    button.textContent = "Teach the model";
  }
});

// Import: read the token and training record from the file's safetensors header (8-byte
// length, JSON), prefill a free token (a concept downloaded from here is taken by itself).
const importFile = $("#import-file");
const importToken = $("#import-token");

async function readConceptHeader(file) {
  const head = new DataView(await file.slice(0, 8).arrayBuffer());
  if (head.byteLength < 8) throw new Error("This is not a concept file.");
  const length = Number(head.getBigUint64(0, true));
  if (length < 2 || length > 64 * 1024) throw new Error("This is not a concept file.");
  const header = JSON.parse(await file.slice(8, 8 + length).text());
  return header.__metadata__ || {};
}

function describeTraining(meta) {
  let training = {};
  try { training = JSON.parse(meta.training || "{}"); } catch { /* no record */ }
  const parts = [`${meta.token || "?"} · ${meta.superclass || "?"}`];
  if (training.steps) parts.push(`trained ${training.steps} steps${training.n_images ? ` on ${training.n_images} photos` : ""}`);
  if (training.resolution) parts.push(`${training.resolution} px`);
  if (typeof training.final_loss === "number") parts.push(`final loss ${training.final_loss.toFixed(4)}`);
  // The last two parts, as the concept page says it ("toyworld/model", not a server's path).
  if (meta.base_model_id) parts.push(`base ${meta.base_model_id.replace(/\/+$/, "").split("/").slice(-2).join("/")}`);
  return parts.join(" · ");
}

async function checkImportToken() {
  const token = importToken.value.trim();
  const hint = $("#import-token-hint");
  if (!token) return;
  const r = await api(`/api/concepts/check-token?token=${encodeURIComponent(token)}`).catch(() => null);
  if (!r || importToken.value.trim() !== token) return;
  hint.textContent = r.message;
  hint.className = `hint ${r.valid && r.available ? "ok" : "bad"}`;
}

importFile.addEventListener("change", async () => {
  const file = importFile.files[0];
  $("#import-file-name").textContent = file ? file.name : "No file chosen";
  const facts = $("#import-facts");
  show($("#import-error"), "");
  if (!file) { show(facts, ""); return; }
  try {
    const meta = await readConceptHeader(file);
    show(facts, describeTraining(meta));
    if (meta.token) {
      const free = await api(`/api/concepts/free-token?token=${encodeURIComponent(meta.token)}`).catch(() => null);
      importToken.value = free && free.valid ? free.token : meta.token;
      if (free && free.token !== meta.token) {
        $("#import-token-hint").textContent = `${meta.token} is taken here, so it will be ${free.token} (change it if you like).`;
        $("#import-token-hint").className = "hint ok";
      } else checkImportToken();
    }
  } catch {
    show(facts, "");
    show($("#import-error"), `${file.name}: not a concept file (.safetensors from Perfusion Studio).`);
  }
});
importToken.addEventListener("input", () => { clearTimeout(importToken.timer); importToken.timer = setTimeout(checkImportToken, 250); });

$("#import-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = importFile.files[0];
  if (!file) { show($("#import-error"), "Choose a concept file first."); return; }
  const form = new FormData();
  form.append("file", file, file.name);
  if (importToken.value.trim()) form.append("token", importToken.value.trim());
  if ($("#import-name").value.trim()) form.append("name", $("#import-name").value.trim());
  show($("#import-error"), "");
  try {
    const concept = await api("/api/concepts/import", { method: "POST", form });
    window.location.assign(concept.page_url);
  } catch (error) {
    show($("#import-error"), error.message);
  }
});

renderThumbs();

// Sample photo sets (toy world only): fetch the four photos and fill the form as a person would.
for (const button of document.querySelectorAll("button.sample-set")) {
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const files = await Promise.all(button.dataset.photos.split(" ").map(async (url) => {
        const response = await fetch(url);
        if (!response.ok) throw new Error(`${url}: ${response.status}`);
        return new File([await response.blob()], url.split("/").pop(), { type: "image/png" });
      }));
      photos.splice(0, photos.length);
      addFiles(files);
      nameInput.value = button.dataset.name;
      // Tried before? <candy> is then taken: a free variant (<candy-2>), as an import takes.
      const free = await api(`/api/concepts/free-token?token=${encodeURIComponent(button.dataset.token)}`).catch(() => null);
      tokenInput.value = free && free.valid ? free.token : button.dataset.token;
      tokenEdited = true;
      $("#superclass").value = button.dataset.superclass;
      scheduleCheck();
    } catch (error) {
      show(formError, `The sample photos could not be loaded (${error.message}).`);
    } finally {
      button.disabled = false;
    }
  });
}
