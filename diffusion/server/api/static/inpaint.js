// img2img input: the init image on a canvas, and an inpaint mask painted over it (white = repaint).

import { $, fileDropZone, readFile, showError } from "./api.js";

const initCanvas = $("init_canvas");
const maskCanvas = $("mask_canvas");
const mask = maskCanvas.getContext("2d");
let initDataUrl = null;
let painted = false;
let lastPoint = null;

/** Shows `dataUrl` as the init image and clears the mask. */
export function setInitImage(dataUrl) {
  const image = new Image();
  image.onload = () => {
    for (const canvas of [initCanvas, maskCanvas]) {
      canvas.width = image.naturalWidth;
      canvas.height = image.naturalHeight;
    }
    initCanvas.getContext("2d").drawImage(image, 0, 0);
    initDataUrl = dataUrl;
    clearMask();
    $("canvas_stack").hidden = false;
    $("drop_hint").hidden = true;
    $("dropzone").classList.add("has-image");
    fitCanvas();
  };
  image.onerror = () => showError("That file is not an image the browser can read.");
  image.src = dataUrl;
}

/** Scales the canvases on screen to fill the drop zone (small model images are drawn larger). */
export function fitCanvas() {
  const zone = $("dropzone");
  if (!initDataUrl || zone.clientWidth <= 16) return;
  const scale = Math.min((zone.clientWidth - 16) / initCanvas.width, 400 / initCanvas.height);
  initCanvas.style.width = `${Math.round(initCanvas.width * scale)}px`;
  initCanvas.style.height = `${Math.round(initCanvas.height * scale)}px`;
}

window.addEventListener("resize", fitCanvas);

export function removeInitImage() {
  initDataUrl = null;
  painted = false;
  $("canvas_stack").hidden = true;
  $("drop_hint").hidden = false;
  $("dropzone").classList.remove("has-image");
}

export const initImage = () => initDataUrl;

/** The mask as a PNG data URL (black background, white strokes), or null when nothing is painted. */
export function maskImage() {
  if (!initDataUrl || !painted) return null;
  const out = document.createElement("canvas");
  out.width = maskCanvas.width;
  out.height = maskCanvas.height;
  const context = out.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, out.width, out.height);
  context.drawImage(maskCanvas, 0, 0);
  return out.toDataURL("image/png");
}

function clearMask() {
  mask.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
  painted = false;
}

function invertMask() {
  const copy = document.createElement("canvas");
  copy.width = maskCanvas.width;
  copy.height = maskCanvas.height;
  copy.getContext("2d").drawImage(maskCanvas, 0, 0);
  mask.globalCompositeOperation = "source-over";
  mask.fillStyle = "#fff";
  mask.fillRect(0, 0, maskCanvas.width, maskCanvas.height);
  mask.globalCompositeOperation = "destination-out";
  mask.drawImage(copy, 0, 0);
  mask.globalCompositeOperation = "source-over";
  painted = true;
}

/** Pointer position in image pixels, and the brush radius scaled from screen to image pixels. */
function toCanvas(event) {
  const box = maskCanvas.getBoundingClientRect();
  const scale = maskCanvas.width / box.width;
  return { x: (event.clientX - box.left) * scale, y: (event.clientY - box.top) * scale, scale };
}

function stroke(from, to) {
  mask.strokeStyle = mask.fillStyle = "#fff";
  mask.lineCap = mask.lineJoin = "round";
  mask.lineWidth = Number($("brush_size").value) * to.scale;
  mask.beginPath();
  mask.moveTo(from.x, from.y);
  mask.lineTo(to.x + 0.01, to.y);
  mask.stroke();
  painted = true;
}

maskCanvas.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  event.stopPropagation();
  maskCanvas.setPointerCapture(event.pointerId);
  lastPoint = toCanvas(event);
  stroke(lastPoint, lastPoint);
});
maskCanvas.addEventListener("pointermove", (event) => {
  if (!lastPoint) return;
  const point = toCanvas(event);
  stroke(lastPoint, point);
  lastPoint = point;
});
for (const type of ["pointerup", "pointercancel"]) maskCanvas.addEventListener(type, () => { lastPoint = null; });
maskCanvas.addEventListener("click", (event) => event.stopPropagation());

$("mask_clear").addEventListener("click", clearMask);
$("mask_invert").addEventListener("click", () => { if (initDataUrl) invertMask(); });
$("init_remove").addEventListener("click", removeInitImage);
fileDropZone($("dropzone"), $("init_file"), async (file) => setInitImage(await readFile(file)),
  { clickable: () => !initDataUrl });
