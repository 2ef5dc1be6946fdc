// Extras: upscale one picture (POST /extra-single-image) with an upscaler from GET /upscalers.

import { $, api, base64Of, fileDropZone, pngDataUrl, readFile, showError } from "./api.js";

let imageDataUrl = null;

async function listUpscalers() {
  const select = $("extras_upscaler");
  const wanted = select.value || select.dataset.default;
  try {
    const upscalers = await api("upscalers");
    select.replaceChildren(...upscalers.map((item) => new Option(item.name, item.name)));
    if ([...select.options].some((option) => option.value === wanted)) select.value = wanted;
  } catch (error) {
    showError(error);
  }
}

async function upscale() {
  if (!imageDataUrl) return;
  const button = $("extras_run");
  button.disabled = true;
  $("extras_info").textContent = "Upscaling…";
  try {
    const response = await api("extra-single-image", {
      image: base64Of(imageDataUrl), upscaler_1: $("extras_upscaler").value,
      upscaling_resize: Number($("extras_scale").value), resize_mode: 0,
    });
    $("extras_result").src = pngDataUrl(response.image);
    $("extras_result").hidden = false;
    $("extras_info").textContent = response.html_info.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim();
  } catch (error) {
    $("extras_info").textContent = "";
    showError(error);
  } finally {
    button.disabled = false;
  }
}

/** Wires the Extras tab: the drop zone, the upscaler list and the Upscale button; resolves once
 * the list is in (the page restores the saved upscaler after). */
export function initExtras() {
  fileDropZone($("extras_drop"), $("extras_file"), async (file) => {
    imageDataUrl = await readFile(file);
    $("extras_image").src = imageDataUrl;
    $("extras_image").hidden = false;
    $("extras_hint").hidden = true;
    $("extras_run").disabled = false;
  });
  $("extras_run").addEventListener("click", upscale);
  return listUpscalers();
}
