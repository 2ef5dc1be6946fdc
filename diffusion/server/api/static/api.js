// The WebUI HTTP API (/sdapi/v1/...), our /avx/... additions and the error banner: every failed call ends up readable on screen.

const $ = (id) => document.getElementById(id);

/** A readable message from an error body: FastAPI's {detail}, the WebUI's {error, errors}, or text. */
function errorMessage(status, body) {
  if (body && typeof body === "object") {
    const detail = body.detail ?? body.errors ?? body.message ?? body.error;
    if (Array.isArray(detail)) {  // pydantic validation errors: [{loc, msg}]
      return detail.map((d) => (d.loc ? `${d.loc.filter((p) => p !== "body").join(".")}: ` : "") + (d.msg ?? JSON.stringify(d))).join("\n");
    }
    if (detail !== undefined) return typeof detail === "string" ? detail : JSON.stringify(detail);
    return JSON.stringify(body);
  }
  return body || `HTTP ${status}`;
}

/** Calls an API endpoint ("txt2img": /sdapi/v1/txt2img; "/avx/...": as given); JSON in, JSON out.
 * Throws Error with a readable message on failure. */
export async function api(path, body = undefined, { method } = {}) {
  const init = { method: method ?? (body === undefined ? "GET" : "POST"), headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path.startsWith("/") ? path : `/sdapi/v1/${path}`, init);
  } catch (error) {
    throw new Error(`Cannot reach the server (${path}): ${error.message}`);
  }
  const text = await response.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
  if (!response.ok) {
    throw new Error(`${path}: ${response.status} ${response.statusText} — ${errorMessage(response.status, data)}`);
  }
  return data;
}

export function showError(error) {
  const message = error instanceof Error ? error.message : String(error);
  console.error(error);
  $("error_text").textContent = message;
  $("error").hidden = false;
}

export function clearError() {
  $("error").hidden = true;
  $("error_text").textContent = "";
}

$("error_close").addEventListener("click", clearError);

/** Base64 payload of a data URL (the API wants bare base64, it also accepts data URLs). */
export const base64Of = (dataUrl) => dataUrl.slice(dataUrl.indexOf(",") + 1);
export const pngDataUrl = (base64) => (base64.startsWith("data:") ? base64 : `data:image/png;base64,${base64}`);

/** Reads a File as a data URL. */
export function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** Makes `zone` accept a dropped or picked image file; calls onFile(file). */
export function fileDropZone(zone, input, onFile, { clickable = () => true } = {}) {
  zone.addEventListener("click", () => { if (clickable()) input.click(); });
  zone.addEventListener("keydown", (event) => {
    if ((event.key === "Enter" || event.key === " ") && clickable()) { event.preventDefault(); input.click(); }
  });
  input.addEventListener("change", () => { if (input.files[0]) onFile(input.files[0]); input.value = ""; });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragover"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragover"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragover");
    const file = [...event.dataTransfer.files].find((f) => f.type.startsWith("image/"));
    if (file) onFile(file);
    else showError("Drop an image file (PNG, JPEG or WebP).");
  });
}

export { $ };
