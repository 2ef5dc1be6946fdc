// The Video tab's Wan VACE controls, shown for a model GET /avx/video-models marks `vace`: a control
// video and its optional mask (white = regenerate), reference pictures and the control scale, sent
// as POST /avx/txt2vid's control_video, control_mask (base64 pictures, one a frame),
// reference_images and control_scale — diffusers' WanVACEPipeline(video=, mask=,
// reference_images=, conditioning_scale=). A video file is decoded (frames.js) at the chosen
// size, frame count and fps; a set of pictures goes out as it is, in name order.

import { $, base64Of, readFile, showError } from "./api.js";
import { filesZone, videoPicker } from "./frames.js";

const DECODED = "decoded at the chosen size, frames and frames per second";
const pickers = {};  // "video", "mask": frames.js' videoPicker
let references = [];  // data URLs, in the order they go out
let adding = Promise.resolve();  // picks are read one after another, so the last one wins

/** Shows the controls (for a VACE model) or hides them (nothing of theirs goes out then). */
export function showVace(on) {
  $("video_vace").hidden = !on;
}

/** The request's VACE fields for a video of `size` ({frames, fps, width, height}); the control
 * video is decoded here, which takes a moment for a long one. */
export async function vaceFields(size) {
  const body = { control_scale: Number($("video_control_scale").value || 1) };
  const video = await pickers.video.frames("control video", size);
  const mask = await pickers.mask.frames("mask video", size);
  if (video) body.control_video = video;
  if (mask) body.control_mask = mask;
  if (references.length) body.reference_images = references.map(base64Of);
  return body;
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

/** Wires the VACE controls of the Video tab. */
export function initVace() {
  pickers.video = videoPicker("vace_video", {
    none: "None: the video follows the prompt (and the reference pictures).", decoded: DECODED });
  pickers.mask = videoPicker("vace_mask", {
    none: "None: every pixel of the control video is regenerated.", decoded: DECODED });
  filesZone($("vace_references_drop"), $("vace_references_file"), addReferences);
}
