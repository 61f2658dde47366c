// Upload a photo (file picker or drag-and-drop) → POST /api/predict → bars + Grad-CAM overlay.
"use strict";

const $ = (id) => document.getElementById(id);
const main = document.querySelector("main");
const maxBytes = Number(main.dataset.maxBytes);

function showError(message) {
  $("result").hidden = true;  // never leave the last photo's result under a new error
  $("error").textContent = message;
  $("error").hidden = false;
  $("status").textContent = "";
}

function render(data) {
  $("photo").src = data.image;
  // A photo unlike the training images gets a warning, never a diagnosis-like answer: the
  // API sends it no class, no referral and no heatmap.
  const ood = data.out_of_distribution || {};
  const flagged = !!ood.flagged;
  $("heatmap").hidden = flagged;
  if (!flagged) $("heatmap").src = data.heatmap;
  $("ood").hidden = !flagged;
  $("ood-score").textContent = ood.score == null ? "n/a" : ood.score.toFixed(2);
  document.querySelector(".predicted").hidden = flagged;
  $("bars").hidden = flagged;
  $("predicted").textContent = flagged ? "" : data.predicted;
  const refer = data.refer;
  $("refer").hidden = !refer || flagged;
  if (refer && !flagged) {
    $("refer").textContent = (refer.above_threshold ? "Refer: above" : "Below") +
      " the referral threshold (score " + refer.score.toFixed(3) + ", threshold " +
      refer.threshold.toFixed(3) + ").";
  }
  $("decision").hidden = !data.decision || flagged;
  $("decision").textContent = data.decision ? "The threshold " + data.decision + "." : "";
  const given = Object.entries(data.clinical_given || {});
  const clinical = $("clinical-used");
  clinical.hidden = !(data.clinical_inputs || []).length || flagged;
  clinical.textContent = given.length
    ? "Clinical data used: " + given.map(([k, v]) => `${k} ${v}`).join(", ") + "."
    : "Answered without clinical data (this model can use: "
      + (data.clinical_inputs || []).join(", ") + ").";
  $("model-name").textContent = data.model + (data.tta ? " (test-time augmentation)" : "");
  const bars = $("bars");
  bars.replaceChildren();
  // Most probable first; textContent only, so a class name can never inject markup.
  const entries = Object.entries(data.probabilities || {}).sort((a, b) => b[1] - a[1]);
  for (const [name, p] of entries) {
    const li = document.createElement("li");
    li.className = "bar" + (name === data.predicted ? " top" : "");
    li.dataset.class = name;
    li.dataset.probability = p;
    const label = document.createElement("div");
    label.className = "label";
    const n = document.createElement("span");
    n.textContent = name;
    const v = document.createElement("span");
    v.textContent = (100 * p).toFixed(1) + " %";
    label.append(n, v);
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = (100 * p).toFixed(1) + "%";
    track.append(fill);
    li.append(label, track);
    bars.append(li);
  }
  $("result").hidden = false;
  $("status").textContent = "";
}

let lastFile = null;  // picked or dropped: re-run on a new model choice

async function upload(file) {
  $("error").hidden = true;
  if (!file) return;
  lastFile = file;
  // Checked here too: Werkzeug answers 413, but may close the connection before the browser
  // has sent the whole body, and fetch then sees only a network error.
  if (file.size > maxBytes) {
    showError(`The file is larger than the ${main.dataset.maxMb} MB limit.`);
    return;
  }
  const form = new FormData();
  form.append("image", file);
  form.append("heatmap", "1");
  const backbone = $("backbone");
  if (backbone && backbone.value) form.append("backbone", backbone.value);
  for (const field of ["age", "sex", "site"]) {
    if ($(field).value) form.append(field, $(field).value);
  }
  $("status").textContent = `Classifying ${file.name} …`;
  let response;
  try {
    response = await fetch("/api/predict", { method: "POST", body: form });
  } catch (err) {
    showError("The server could not be reached: " + err.message);
    return;
  }
  let data;
  try {
    data = await response.json();
  } catch (err) {
    showError(`The server answered ${response.status} without a readable message.`);
    return;
  }
  if (!response.ok) {
    showError(data.error || `Request failed (${response.status}).`);
    return;
  }
  render(data);
}

$("file").addEventListener("change", (e) => upload(e.target.files[0]));

const drop = $("drop");
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.remove("over"); });
}
drop.addEventListener("drop", (e) => upload(e.dataTransfer.files[0]));

const opacity = $("opacity");
function applyOpacity() {
  $("heatmap").style.opacity = opacity.value / 100;
  $("opacity-value").textContent = opacity.value + "%";
}
opacity.addEventListener("input", applyOpacity);
applyOpacity();

// A new model choice re-runs the last photo, so models can be compared on one image.
$("backbone")?.addEventListener("change", () => upload(lastFile));
