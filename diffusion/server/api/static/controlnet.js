// The ControlNet panel: one unit as the extension's API takes it (alwayson_scripts.controlnet),
// its models and preprocessors from /controlnet/model_list and /controlnet/module_list (each
// module's sliders: its resolution, then threshold_a and threshold_b, named as the extension
// names them), and a preview of the detected map from /controlnet/detect beside the image: the
// extension's "Allow Preview" (the map's column, and detection as the unit changes) and its
// preprocessor button (Preview), at Pixel Perfect's resolution where that is checked.

import { $, api, base64Of, fileDropZone, pngDataUrl, readFile, showError } from "./api.js";

let imageDataUrl = null;
let moduleDetail = {};
const SLIDERS = ["processor_res", "threshold_a", "threshold_b"];

function fill(select, names) {
  const wanted = select.value || localStorageValue(select.id) || select.dataset.default;
  select.replaceChildren(...names.map((name) => new Option(name, name)));
  if (names.includes(wanted)) select.value = wanted;
}

function localStorageValue(id) {
  try { return JSON.parse(localStorage.getItem("avx-gpu-webui:settings"))?.[id]; } catch { return undefined; }
}

async function loadLists() {
  try {
    const [models, modules] = await Promise.all([api("/controlnet/model_list"), api("/controlnet/module_list")]);
    fill($("cn_model"), models.model_list);
    fill($("cn_module"), modules.module_list);
    moduleDetail = modules.module_detail || {};
    showSliders();
  } catch (error) {
    showError(error);
  }
}

/** The module's sliders, at their defaults: the resolution (hidden under Pixel Perfect, which
 * picks it) and the thresholds the module takes, labelled with its names for them. */
function showSliders() {
  const sliders = [...(moduleDetail[$("cn_module").value]?.sliders || [])];
  const given = { processor_res: sliders[0]?.name === "Resolution" ? sliders.shift() : null,
                  threshold_a: sliders[0] || null, threshold_b: sliders[1] || null };
  for (const key of SLIDERS) {
    const slider = given[key];
    $(`cn_${key}_field`).dataset.used = slider ? "1" : "";
    if (!slider) continue;
    $(`cn_${key}_label`).textContent = slider.name;
    for (const id of [`cn_${key}`, `cn_${key}_range`]) {
      Object.assign($(id), { min: slider.min, max: slider.max, step: slider.step ?? 1 });
      $(id).value = slider.value;
    }
  }
  hideUnused();
}

function hideUnused() {
  for (const key of SLIDERS) {
    const used = $(`cn_${key}_field`).dataset.used === "1";
    $(`cn_${key}_field`).hidden = !used || (key === "processor_res" && $("cn_pixel_perfect").checked);
  }
}

function settings() {
  const out = { module: $("cn_module").value };
  for (const key of SLIDERS) {  // -1: the module's default (pixel perfect picks the resolution)
    out[key] = $(`cn_${key}_field`).hidden ? -1 : Number($(`cn_${key}`).value);
  }
  return out;
}

/** numpy's round: halves to the even neighbour. */
function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 ? r - 1 : r;
}

/** The processor resolution Pixel Perfect gives the image for the size in Width and Height and
 * the resize mode (the extension's pixel_perfect_resolution), or null while a size box is empty
 * (the model's native size, which the page does not know): then the module's default. */
async function pixelPerfectResolution() {
  const [width, height] = [Number($("width").value), Number($("height").value)];
  if (!width || !height) return null;
  const image = $("cn_image");
  await image.decode();
  const [rawW, rawH] = [image.naturalWidth, image.naturalHeight];
  const k0 = height / rawH, k1 = width / rawW;
  const k = $("cn_resize_mode").value === "Resize and Fill" ? Math.min(k0, k1) : Math.max(k0, k1);
  return roundHalfEven(k * Math.min(rawW, rawH));
}

/** Unchecking "Allow Preview" (which hides the map's column: style.css) forgets the map. */
function forgetHiddenMap() {
  if (!$("cn_allow_preview").checked) {
    $("cn_preview").hidden = true;
    $("cn_preview").removeAttribute("src");
    $("cn_preview_hint").hidden = false;
  }
}

/** A preview as the unit changes, where previews are allowed. */
function autoPreview() {
  if (imageDataUrl && $("cn_allow_preview").checked) preview();
}

/** The map the server's preprocessor makes of the image, shown beside it. */
async function preview() {
  if (!imageDataUrl) return;
  if (!$("cn_allow_preview").checked) {  // as the extension's preprocessor button turns it on
    $("cn_allow_preview").checked = true;
    $("cn_allow_preview").dispatchEvent(new Event("change", { bubbles: true }));  // saved; previews
    return;
  }
  $("cn_detect").disabled = true;
  try {
    const unit = settings();
    if ($("cn_pixel_perfect").checked) unit.processor_res = (await pixelPerfectResolution()) ?? -1;
    const response = await api("/controlnet/detect", {
      controlnet_module: unit.module, controlnet_input_images: [base64Of(imageDataUrl)],
      controlnet_processor_res: unit.processor_res, controlnet_threshold_a: unit.threshold_a,
      controlnet_threshold_b: unit.threshold_b,
    });
    $("cn_preview").src = pngDataUrl(response.images[0]);
    $("cn_preview").hidden = false;
    $("cn_preview_hint").hidden = true;
  } catch (error) {
    showError(error);
  } finally {
    $("cn_detect").disabled = false;
  }
}

/** The body's alwayson_scripts for the enabled unit, or null when ControlNet is off. */
export function controlNetScripts() {
  if (!$("cn_enabled").checked) return null;
  if (!imageDataUrl) throw new Error("ControlNet is enabled but has no image: drop one on its image area or click it to upload.");
  if (!$("cn_model").value) throw new Error("ControlNet is enabled but the server has no ControlNet model (serve --controlnet-dir DIR).");
  return {
    controlnet: {
      args: [{
        enabled: true, image: base64Of(imageDataUrl), model: $("cn_model").value,
        weight: Number($("cn_weight").value), guidance_start: Number($("cn_start").value),
        guidance_end: Number($("cn_end").value), control_mode: $("cn_control_mode").value,
        resize_mode: $("cn_resize_mode").value, pixel_perfect: $("cn_pixel_perfect").checked,
        ...settings(),
      }],
    },
  };
}

/** Wires the panel: the image drop zone, the lists, the sliders and the preview button. */
export function initControlNet() {
  fileDropZone($("cn_drop"), $("cn_file"), async (file) => {
    imageDataUrl = await readFile(file);
    $("cn_image").src = imageDataUrl;
    $("cn_image").hidden = false;
    $("cn_hint").hidden = true;
    $("cn_detect").disabled = false;
    $("cn_enabled").checked = true;  // as the extension's upload does
    autoPreview();
  });
  for (const id of ["cn_weight", "cn_start", "cn_end", ...SLIDERS.map((key) => `cn_${key}`)]) {
    const number = $(id);
    const range = $(`${id}_range`);
    range.addEventListener("input", () => { number.value = range.value; });
    number.addEventListener("input", () => { range.value = number.value; });
    // the page saves [data-persist] boxes on their change: a moved slider changes its box
    if (number.matches("[data-persist]")) range.addEventListener("change", () => number.dispatchEvent(new Event("change", { bubbles: true })));
  }
  $("cn_module").addEventListener("change", () => { showSliders(); autoPreview(); });
  $("cn_pixel_perfect").addEventListener("change", () => { hideUnused(); autoPreview(); });
  for (const key of SLIDERS) {
    for (const id of [`cn_${key}`, `cn_${key}_range`]) $(id).addEventListener("change", autoPreview);
  }
  for (const id of ["width", "height", "cn_resize_mode"]) {  // Pixel Perfect's resolution follows them
    $(id).addEventListener("change", () => { if ($("cn_pixel_perfect").checked) autoPreview(); });
  }
  $("cn_allow_preview").addEventListener("change", () => { forgetHiddenMap(); autoPreview(); });
  $("cn_detect").addEventListener("click", preview);
  $("cn_refresh").addEventListener("click", loadLists);
  return loadLists();
}
