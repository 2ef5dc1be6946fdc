// The Video tab's Wan VACE controls, shown for a model GET /avx/video-models marks `vace`: a control
// video and its optional mask (white = regenerate), reference pictures and the control scale, sent
// as POST /avx/txt2vid's control_video, control_mask (base64 pictures, one a frame),
// reference_images and control_scale — diffusers' WanVACEPipeline(video=, mask=,
// reference_images=, conditioning_scale=). A video file is decoded here, frame by frame on a
// canvas at the chosen size, frame count and fps; a set of pictures goes out as it is, in name order.

import { $, base64Of, readFile, showError } from "./api.js";

const sources = { video: null, mask: null };  // each null, {file} (a video) or {name, pictures}
const NONE = {
  video: "None: the video follows the prompt (and the reference pictures).",
  mask: "None: every pixel of the control video is regenerated.",
};
let references = [];  // data URLs, in the order they go out
let adding = Promise.resolve();  // picks are read one after another, so the last one wins

/** Shows the controls (for a VACE model) or hides them (nothing of theirs goes out then). */
export function showVace(on) {
  $("video_vace").hidden = !on;
}

/** `target`'s next `event`, or an Error saying `what` could not be decoded. */
function next(target, event, what) {
  return new Promise((resolve, reject) => {
    target.addEventListener(event, resolve, { once: true });
    target.addEventListener("error", () => reject(new Error(`This browser cannot decode ${what}: `
      + "convert it to MP4 (H.264) or WebM, or pick its frames as pictures.")), { once: true });
  });
}

/** Seeks `video` to `time`; resolves once that frame can be drawn: after "seeked" and the frame
 * callback of its presentation (under load Chromium's canvas still drew the frame before, now and
 * then, when drawn at "seeked"), at most a second after "seeked" where no callback comes. */
async function seek(video, time, what) {
  const seeked = next(video, "seeked", what);
  const shown = new Promise((resolve) => video.requestVideoFrameCallback?.(resolve));
  video.currentTime = time;
  await seeked;
  if (video.requestVideoFrameCallback) await Promise.race([shown, new Promise((resolve) => setTimeout(resolve, 1000))]);
}

/** The first `frames` frames of a video file at `fps` (frame i: the picture shown at (i + ½) / fps
 * seconds), each drawn on a width x height canvas: base64 PNGs. */
async function decode(file, label, { frames, fps, width, height }) {
  const what = `the ${label} ${file.name}`;
  const video = Object.assign(document.createElement("video"), { muted: true, preload: "auto" });
  const url = URL.createObjectURL(file);
  const loaded = next(video, "loadeddata", what);
  video.src = url;
  try {
    await loaded;
    const needs = frames / fps;
    if (video.duration + 1e-3 < needs) {
      throw new Error(`${what[0].toUpperCase()}${what.slice(1)} is ${video.duration.toFixed(2)} s `
        + `long; ${frames} frames at ${fps} fps need ${needs.toFixed(2)} s: lower Frames, raise `
        + "Frames per second or pick a longer video.");
    }
    const canvas = Object.assign(document.createElement("canvas"), { width, height });
    const context = canvas.getContext("2d");
    const out = [];
    for (let i = 0; i < frames; i++) {
      await seek(video, (i + 0.5) / fps, what);
      context.drawImage(video, 0, 0, width, height);
      out.push(base64Of(canvas.toDataURL("image/png")));
    }
    return out;
  } finally {
    URL.revokeObjectURL(url);
  }
}

function pictures(source, label, size) {
  if (!source) return null;
  if (!source.file) return source.pictures.map(base64Of);
  $("video_progress_text").textContent = `Reading the ${label}…`;
  return decode(source.file, label, size);
}

/** The request's VACE fields for a video of `size` ({frames, fps, width, height}); the control
 * video is decoded here, which takes a moment for a long one. */
export async function vaceFields(size) {
  const body = { control_scale: Number($("video_control_scale").value || 1) };
  const video = await pictures(sources.video, "control video", size);
  const mask = await pictures(sources.mask, "mask video", size);
  if (video) body.control_video = video;
  if (mask) body.control_mask = mask;
  if (references.length) body.reference_images = references.map(base64Of);
  return body;
}

function setSource(kind, source) {
  sources[kind] = source;
  const info = !source ? NONE[kind] : source.file
    ? `${source.file.name}: decoded at the chosen size, frames and frames per second.`
    : `${source.name}: one a frame, in name order.`;
  $(`vace_${kind}_info`).textContent = info;
  $(`vace_${kind}_remove`).disabled = !source;
}

/** A picked video file, or picture files (one a frame, sorted by name). */
function pickSource(kind, files) {
  const [video, ...rest] = files;
  if (video?.type.startsWith("video/") && !rest.length) {
    setSource(kind, { file: video });
    return;
  }
  if (!files.length || !files.every((file) => file.type.startsWith("image/"))) {
    showError("Pick one video file, or picture files (PNG, JPEG or WebP), one a frame.");
    return;
  }
  const sorted = files.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  adding = adding.then(async () => {
    const read = await Promise.all(sorted.map(readFile));
    setSource(kind, { name: `${read.length} pictures`, pictures: read });
  }).catch(showError);
}

function addReferences(files) {
  const images = files.filter((file) => file.type.startsWith("image/"));
  if (!images.length) {
    showError("Drop image files (PNG, JPEG or WebP).");
    return;
  }
  adding = adding.then(async () => {
    references.push(...await Promise.all(images.map(readFile)));
    renderReferences();
  }).catch(showError);
}

function renderReferences() {
  $("vace_references_list").replaceChildren(...references.map((src, index) => {
    const item = document.createElement("li");
    const image = Object.assign(document.createElement("img"), { src, alt: `VACE reference picture ${index + 1}` });
    const remove = Object.assign(document.createElement("button"), { type: "button", textContent: "✕" });
    remove.setAttribute("aria-label", `Remove VACE reference picture ${index + 1}`);
    remove.addEventListener("click", () => {
      references.splice(index, 1);
      renderReferences();
    });
    item.append(image, remove);
    return item;
  }));
}

/** Makes `zone` open `input` on a click and take dropped files: onFiles(an array of them). */
function filesZone(zone, input, onFiles) {
  zone.addEventListener("click", () => input.click());
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
  input.addEventListener("change", () => { onFiles([...input.files]); input.value = ""; });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragover"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragover"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragover");
    onFiles([...event.dataTransfer.files]);
  });
}

/** Wires the VACE controls of the Video tab. */
export function initVace() {
  for (const kind of ["video", "mask"]) {
    filesZone($(`vace_${kind}_drop`), $(`vace_${kind}_file`), (files) => pickSource(kind, files));
    $(`vace_${kind}_remove`).addEventListener("click", () => setSource(kind, null));
    setSource(kind, null);
  }
  filesZone($("vace_references_drop"), $("vace_references_file"), addReferences);
}
