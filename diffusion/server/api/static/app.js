// The page of `python -m diffusion serve`: a WebUI-style front end over the /sdapi/v1 HTTP API.

import { $, api, base64Of, clearError, pngDataUrl, showError } from "./api.js";
import { clearResults, selectedResult, showPreview, showResults } from "./gallery.js";
import { fitCanvas, initImage, maskImage, setInitImage } from "./inpaint.js";
import { controlNetScripts, initControlNet } from "./controlnet.js";
import { initExtras } from "./extras.js";
import { initPngInfo, loadPngInfo } from "./pnginfo.js";
import { applyScript, initSections, sectionFields, sectionParameters, setRefinerModels, showScripts } from "./sections.js";
import { loadNetworks } from "./networks.js";
import { initVideo, loadVideoModels, showFirstFrame } from "./video.js";
import { newTaskId, number, pollProgress, whilePolling } from "./job.js";
import { referenceImages, setReferenceLimit } from "./references.js";
import { chooseStyles, chosenStyles, loadStyles } from "./styles.js";

const STORAGE_KEY = "avx-gpu-webui:settings";
const DEFAULTS_KEY = "avx-gpu-webui:defaults-for";  // the model whose defaults the saved settings started from
const SLIDERS = ["steps", "cfg_scale", "distilled_cfg_scale", "width", "height", "clip_skip", "denoising_strength", "mask_blur",
  "hr_denoising_strength", "hr_scale", "refiner_switch_at"];
let mode = "txt2img";  // the generation tab, kept while Extras or PNG Info is shown
let tab = "txt2img";  // the tab shown, restored on reload
let running = false;
let lastSeed = null;
let task = null;  // the running generation's id_task: progress polls ask about it alone
let previewId = 0;  // the id of the last live preview shown (the server sends only newer ones)

// ---- Settings: number boxes mirror their sliders; every [data-persist] field survives a reload.

function persistedFields() {
  return [...document.querySelectorAll("[data-persist]")];
}

function saveSettings() {
  const settings = { tab };
  for (const field of persistedFields()) settings[field.id] = field.type === "checkbox" ? field.checked : field.value;
  localStorage.setItem(STORAGE_KEY, JSON.stringify(settings));
}

function loadSettings() {
  try { return JSON.parse(localStorage.getItem(STORAGE_KEY)) ?? {}; } catch { return {}; }
}

function setField(id, value) {
  const field = $(id);
  if (value === undefined || value === null || !field) return;
  if (field.type === "checkbox") field.checked = Boolean(value);
  else if (field.tagName === "SELECT") selectOption(field, String(value));
  else field.value = value;
  const range = $(`${id}_range`);
  if (range) range.value = field.value;
}

/** Selects the option whose value or label matches (case-insensitive); false when none does. */
function selectOption(select, wanted) {
  const lower = wanted.toLowerCase();
  const option = [...select.options].find((o) => o.value.toLowerCase() === lower || o.text.toLowerCase() === lower);
  if (option) select.value = option.value;
  return Boolean(option);
}

function restoreSettings() {
  const settings = loadSettings();
  for (const field of persistedFields()) setField(field.id, settings[field.id]);
  showFirstFrame();  // the restored video model's
  // the Video tab only while the server lists a video model
  if (["txt2img", "img2img", "extras", "pnginfo"].includes(settings.tab)
    || (settings.tab === "video" && !$("tab_video").hidden)) switchTab(settings.tab);
}

for (const id of SLIDERS) {
  const number = $(id);
  const range = $(`${id}_range`);
  range.addEventListener("input", () => { number.value = range.value; saveSettings(); });
  number.addEventListener("input", () => { range.value = number.value; });
}
document.addEventListener("change", (event) => { if (event.target.matches?.("[data-persist]")) saveSettings(); });
document.addEventListener("input", (event) => { if (event.target.matches?.("textarea[data-persist]")) saveSettings(); });

// ---- Tabs

function switchTab(shown) {
  tab = shown;
  if (tab === "txt2img" || tab === "img2img") mode = tab;
  for (const button of document.querySelectorAll("[role=tab]")) button.setAttribute("aria-selected", String(button.dataset.tab === tab));
  $("panel_generate").hidden = tab === "pnginfo" || tab === "extras" || tab === "video";
  $("panel_video").hidden = tab !== "video";
  $("panel_pnginfo").hidden = tab !== "pnginfo";
  $("panel_extras").hidden = tab !== "extras";
  $("panel_generate").setAttribute("aria-labelledby", `tab_${mode}`);
  $("img2img_inputs").hidden = mode !== "img2img";
  showScripts(mode);
  fitCanvas();
  const settings = loadSettings();
  localStorage.setItem(STORAGE_KEY, JSON.stringify({ ...settings, tab }));
}

for (const button of document.querySelectorAll("[role=tab]")) button.addEventListener("click", () => switchTab(button.dataset.tab));

// ---- Lists from the API: models, samplers, schedulers

function fillSelect(select, items) {
  select.replaceChildren(...items.map(({ value, label }) => new Option(label, value)));
}

async function loadModels() {
  const [models, options] = await Promise.all([api("sd-models"), api("options")]);
  const select = $("model");
  fillSelect(select, models.map((m) => ({ value: m.title, label: m.title })));
  setRefinerModels(models.map((m) => m.title));
  const current = options?.sd_model_checkpoint;
  if (current && !selectOption(select, current)) {
    const match = models.find((m) => current.startsWith(m.model_name) || m.title.startsWith(current));
    if (match) select.value = match.title;
  }
  select.dataset.current = select.value;
  if (options?.CLIP_stop_at_last_layers && !loadSettings().clip_skip) setField("clip_skip", options.CLIP_stop_at_last_layers);
}

async function loadSamplers() {
  const [samplers, schedulers] = await Promise.all([api("samplers"), api("schedulers")]);
  fillSamplers(samplers);
  fillSelect($("scheduler"), schedulers.map((s) => ({ value: s.name, label: s.label ?? s.name })));
}

/** Fills the sampler dropdown with what /sdapi/v1/samplers lists: the loaded model's family's
 * ("diffusers", its folder's own scheduler, among them where it runs only some; all of the
 * WebUI's otherwise), keeping the choice where the family runs it. */
function fillSamplers(samplers) {
  const select = $("sampler");
  const chosen = select.value;
  fillSelect(select, samplers.map((s) => ({ value: s.name, label: s.name })));
  if (chosen) selectOption(select, chosen);
}

// ---- The loaded model's recommended steps, sampler and CFG scale (its defaults.json, GET /avx/defaults)

/** Sets steps, sampler, schedule type and CFG scale to what the loaded model recommends (an old
 * combined sampler name like "DPM++ 2M Karras" arrives as the pair), and to the page's own
 * defaults (the WebUI's: the HTML's value / data-default) where it recommends nothing. With
 * keepSaved, settings saved while this same model was loaded stay as the user left them. */
async function applyModelDefaults({ keepSaved = false } = {}) {
  // the sampler list too: another family may run other samplers (Sana Sprint only its own)
  const [defaults, samplers] = await Promise.all([api("/avx/defaults"), api("samplers")]);
  fillSamplers(samplers);
  // FLUX.1 dev embeds its guidance: Forge's "Distilled CFG Scale", beside CFG (1 for FLUX)
  $("distilled_cfg_field").hidden = !defaults.distilled_cfg;
  setReferenceLimit(defaults.references);  // an edit model's reference pictures
  if (keepSaved && defaults.model === localStorage.getItem(DEFAULTS_KEY)) return;
  setField("steps", defaults.steps ?? $("steps").defaultValue);
  setField("cfg_scale", defaults.cfg_scale ?? $("cfg_scale").defaultValue);
  setField("sampler", defaults.sampler ?? $("sampler").dataset.default);
  setField("scheduler", defaults.scheduler ?? $("scheduler").dataset.default);
  saveSettings();
  localStorage.setItem(DEFAULTS_KEY, defaults.model ?? "");
}

async function changeModel() {
  const select = $("model");
  const title = select.value;
  setModelBusy(true);
  try {
    await api("options", { sd_model_checkpoint: title });
    select.dataset.current = title;
    await applyModelDefaults();
  } catch (error) {
    select.value = select.dataset.current ?? "";
    showError(error);
  } finally {
    setModelBusy(false);
  }
}

function setModelBusy(busy) {
  $("params").setAttribute("aria-busy", String(busy));
  $("model").disabled = busy;
  $("refresh_models").disabled = busy;
  $("model_busy").hidden = !busy;
  $("generate").disabled = busy;
}

$("model").addEventListener("change", changeModel);
// The WebUI's refresh button: rescan the models folder, then list again.
$("refresh_models").addEventListener("click", async () => {
  try {
    await api("refresh-checkpoints", {});
    await Promise.all([loadModels(), loadNetworks(), loadVideoModels()]);
  } catch (error) {
    showError(error);
  }
});

// ---- Generation

function requestBody() {
  const body = {
    prompt: $("prompt").value,
    negative_prompt: $("negative_prompt").value,
    sampler_name: $("sampler").value,
    scheduler: $("scheduler").value,
    steps: number("steps"),
    cfg_scale: number("cfg_scale"),
    ...($("distilled_cfg_field").hidden ? {} : { distilled_cfg_scale: number("distilled_cfg_scale") }),
    seed: Math.trunc(number("seed")),
    batch_size: number("batch_size"),
    n_iter: number("n_iter"),
    override_settings: { CLIP_stop_at_last_layers: number("clip_skip") },
    send_images: true,
    save_images: false,
  };
  // An empty size box means "the model's native size" (the server's default for a missing field).
  for (const id of ["width", "height"]) if ($(id).value !== "") body[id] = number(id);
  const styles = chosenStyles();
  if (styles.length) body.styles = styles;
  Object.assign(body, sectionFields(mode));
  const scripts = controlNetScripts();
  if (scripts) body.alwayson_scripts = scripts;
  if (mode !== "img2img") return body;
  const init = initImage();
  if (!init) throw new Error("img2img needs an init image: drop one on the image area or click it to upload.");
  body.init_images = [init, ...referenceImages()].map(base64Of);
  body.denoising_strength = number("denoising_strength");
  const mask = maskImage();
  if (mask) {
    body.mask = base64Of(mask);
    body.mask_blur = number("mask_blur");
    body.inpainting_mask_invert = $("inpainting_mask_invert").checked ? 1 : 0;
    // "Masked content": the page's default "original", as the WebUI's page (its API's: fill)
    body.inpainting_fill = Number($("inpainting_fill").value);
    // "Only masked": the part around the mask drawn at the size and pasted back (the API's
    // default; the WebUI's page starts at "Whole picture", as this one)
    body.inpaint_full_res = $("inpaint_area").value === "masked";
    body.inpaint_full_res_padding = number("inpaint_full_res_padding");
  }
  return body;
}

function setRunning(on) {
  running = on;
  $("generate").hidden = on;
  $("running_actions").hidden = !on;
  $("progress_wrap").hidden = !on;
  $("interrupt").disabled = $("skip").disabled = false;
  if (!on) {
    $("progress").value = 0;
    $("progress_text").textContent = "";
    showPreview(null);
  }
}

/** One poll of this page's run (job.js), and its live preview. */
async function pollRun(id) {
  const progress = await pollProgress(id, { bar: "progress", text: "progress_text", interrupt: "interrupt" },
    { current: () => running && id === task, eta: true, preview: previewId });
  if (progress?.live_preview) {
    previewId = progress.id_live_preview;
    showPreview(pngDataUrl(progress.live_preview));
  }
}

async function generate() {
  if (running) return;
  clearError();
  let body;
  try {
    body = requestBody();
  } catch (error) {
    showError(error);
    return;
  }
  task = body.force_task_id = newTaskId();
  previewId = 0;
  setRunning(true);
  $("progress_text").textContent = "Waiting…";
  try {
    showGenerated(await whilePolling(() => api(mode, body), () => pollRun(body.force_task_id)));
  } catch (error) {
    showError(error);
  } finally {
    task = null;
    setRunning(false);
  }
}

function showGenerated(response) {
  let info = {};
  try { info = typeof response.info === "string" ? JSON.parse(response.info) : response.info ?? {}; } catch { /* keep {} */ }
  const images = response.images ?? [];
  const infotexts = info.infotexts ?? [];
  const seeds = info.all_seeds ?? [];
  // With more images than infotexts the first is a grid of the others (the WebUI's layout).
  const offset = Math.max(images.length - infotexts.length, 0);
  showResults(images.map((image, index) => {
    const own = Math.max(index - offset, 0);
    return { src: pngDataUrl(image), infotext: infotexts[own] ?? infotexts[0] ?? "", seed: seeds[own] ?? info.seed ?? null };
  }));
  lastSeed = info.seed ?? seeds[0] ?? null;
  if (!images.length) showError("The server returned no images (interrupted before the first one finished?).");
}

$("generate").addEventListener("click", generate);
// The WebUI's shortcut: Ctrl+Enter in any field of txt2img / img2img generates (a click: not while
// the button is disabled, as while a model loads).
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !$("panel_generate").hidden) {
    event.preventDefault();
    $("generate").click();
  }
});
/** Interrupt or skip this page's run by its id_task: the server stops its job, not another tab's
 * (never a body without one, which stops every running job). */
function stopRun(what) {
  if (task) api(what, { id_task: task }).catch(showError);
}
$("interrupt").addEventListener("click", () => {
  $("interrupt").disabled = $("skip").disabled = true;
  $("progress_text").textContent = "Interrupting…";
  stopRun("interrupt");
});
$("skip").addEventListener("click", () => stopRun("skip"));

// ---- Seed, size and "send to" buttons

$("random_seed").addEventListener("click", () => { setField("seed", -1); saveSettings(); });
$("reuse_seed").addEventListener("click", () => {
  const seed = selectedResult()?.seed ?? lastSeed;
  if (seed === null || seed === undefined) return;
  setField("seed", seed);
  saveSettings();
});
$("swap_size").addEventListener("click", () => {
  const [width, height] = [$("width").value, $("height").value];
  setField("width", height);
  setField("height", width);
  saveSettings();
});

$("send_to_img2img").addEventListener("click", () => {
  const item = selectedResult();
  if (!item) return;
  setInitImage(item.src);
  switchTab("img2img");
});
$("send_to_pnginfo").addEventListener("click", () => {
  const item = selectedResult();
  if (!item) return;
  switchTab("pnginfo");
  loadPngInfo(item.src);
});

/** Fills the form from parsed infotext parameters (PNG Info's "Send to ..."); img2img also gets
 * the inpaint controls, as the WebUI's img2img / inpaint paste fields: an infotext without them
 * resets them to the values the server's parser (as the WebUI's) gives the fields left out;
 * Mask blur, which it gives none, stays as it is. */
function applyParameters(target, params, imageDataUrl) {
  const fields = {
    prompt: params.Prompt, negative_prompt: params["Negative prompt"] ?? "", steps: params.Steps,
    sampler: params.Sampler, scheduler: params["Schedule type"], cfg_scale: params["CFG scale"],
    distilled_cfg_scale: params["Distilled CFG Scale"], seed: params.Seed, width: params["Size-1"], height: params["Size-2"], clip_skip: params["Clip skip"],
    denoising_strength: params["Denoising strength"],
  };
  if (target === "img2img") {
    Object.assign(fields, {
      mask_blur: params["Mask blur"], inpainting_mask_invert: params["Mask mode"] === "Inpaint not masked",
      // by their labels: "latent noise" -> 2, "Only masked" -> masked
      inpainting_fill: params["Masked content"], inpaint_area: params["Inpaint area"],
      inpaint_full_res_padding: params["Masked area padding"],
    });
  }
  Object.assign(fields, sectionParameters(params));
  for (const [id, value] of Object.entries(fields)) setField(id, value);
  // the styles the server found in the prompts, which it took out of them (the WebUI's paste)
  if (Array.isArray(params["Styles array"])) chooseStyles(params["Styles array"]);
  saveSettings();
  if (target === "img2img" && imageDataUrl) setInitImage(imageDataUrl);
  switchTab(target);
  applyScript(params);  // after the tab: its scripts
  $("prompt").focus();
}

initPngInfo(applyParameters);

// ---- Start

async function start() {
  const results = await Promise.allSettled([loadModels(), loadSamplers(), initControlNet(), initExtras(),
    initSections(), loadNetworks(), initVideo(), loadStyles()]);
  restoreSettings();
  // after the lists (the sampler must be one of them) and the saved settings (which it may replace)
  results.push(...await Promise.allSettled([applyModelDefaults({ keepSaved: true })]));
  $("params").setAttribute("aria-busy", "false");  // tests and screen readers: the form is settled
  const failed = results.filter((r) => r.status === "rejected");
  if (failed.length) showError(failed.map((r) => r.reason.message).join("\n"));
}

clearResults();
start();
