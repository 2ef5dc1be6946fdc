// PNG Info: read the generation parameters stored in a PNG (POST /png-info), and the infotext format.

import { $, api, base64Of, fileDropZone, readFile, showError } from "./api.js";

let parameters = null;
let imageDataUrl = null;

/**
 * Parses an infotext ("prompt\nNegative prompt: ...\nSteps: 20, Sampler: Euler a, Size: 512x512, ...")
 * into {Prompt, "Negative prompt", Steps, Sampler, ..., "Size-1", "Size-2"} like the WebUI's parser,
 * as the text says them. The table shows these; the server's `parameters` (used by "Send to",
 * and this where it is empty) add the WebUI parser's values for the fields the text leaves out
 * ("RNG: GPU", "Mask mode: Inpaint masked", ...), which the picture does not say.
 */
export function parseInfotext(text) {
  const lines = text.trim().split("\n");
  const result = {};
  const settings = /^\s*(Steps|Sampler|Seed|Size|CFG scale)\s*:/.test(lines.at(-1) ?? "") ? lines.pop() : "";
  const negativeAt = lines.findIndex((line) => line.startsWith("Negative prompt:"));
  const promptLines = negativeAt >= 0 ? lines.slice(0, negativeAt) : lines;
  result.Prompt = promptLines.join("\n");
  if (negativeAt >= 0) result["Negative prompt"] = lines.slice(negativeAt).join("\n").replace(/^Negative prompt:\s?/, "");
  // key: value pairs; values may be "quoted, with commas".
  for (const match of settings.matchAll(/\s*([\w ./-]+):\s*("(?:\\.|[^"])*"|[^,]*)(?:,|$)/g)) {
    let value = match[2].trim();
    if (value.startsWith('"')) { try { value = JSON.parse(value); } catch { /* keep quotes */ } }
    result[match[1].trim()] = value;
  }
  if (result.Size && /^\d+x\d+$/.test(result.Size)) [result["Size-1"], result["Size-2"]] = result.Size.split("x");
  return result;
}

function renderParameters(info) {
  $("pnginfo_text").textContent = info || "This image carries no generation parameters.";
  const said = info ? parseInfotext(info) : {};
  const rows = Object.entries(said).filter(([key]) => !["Prompt", "Negative prompt", "Size-1", "Size-2"].includes(key));
  $("pnginfo_table").replaceChildren(...rows.map(([key, value]) => {
    const row = document.createElement("tr");
    const th = document.createElement("th");
    const td = document.createElement("td");
    th.textContent = key;
    td.textContent = typeof value === "string" ? value : JSON.stringify(value);
    row.append(th, td);
    return row;
  }));
  $("pnginfo_to_txt2img").disabled = $("pnginfo_to_img2img").disabled = !info;
}

/** Shows `dataUrl` in the PNG Info tab and reads its parameters through the API. */
export async function loadPngInfo(dataUrl) {
  imageDataUrl = dataUrl;
  $("pnginfo_image").src = dataUrl;
  $("pnginfo_image").hidden = false;
  $("pnginfo_hint").hidden = true;
  $("pnginfo_text").textContent = "Reading…";
  $("pnginfo_table").replaceChildren();
  try {
    const response = await api("png-info", { image: base64Of(dataUrl) });
    const info = response.info ?? "";
    parameters = response.parameters && Object.keys(response.parameters).length
      ? response.parameters : (info ? parseInfotext(info) : {});
    renderParameters(info);
  } catch (error) {
    parameters = null;
    renderParameters("");
    $("pnginfo_text").textContent = "";  // not read: the error banner says why, not "no parameters"
    showError(error);
  }
}

/** Wires the tab; `send(target, parameters, imageDataUrl)` moves the parameters to a generation tab. */
export function initPngInfo(send) {
  fileDropZone($("pnginfo_drop"), $("pnginfo_file"), async (file) => loadPngInfo(await readFile(file)));
  $("pnginfo_to_txt2img").addEventListener("click", () => parameters && send("txt2img", parameters, null));
  $("pnginfo_to_img2img").addEventListener("click", () => parameters && send("img2img", parameters, imageDataUrl));
}
