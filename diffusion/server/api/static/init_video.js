// The Video tab's init video, shown for a Wan text-to-video model: a video to redraw as the prompt
// says, sent as POST /avx/txt2vid's init_video (base64 pictures, one a frame) with
// denoising_strength — diffusers' WanVideoToVideoPipeline(video=, strength=); for a Lucy Edit
// folder the video to edit (the whole schedule runs: no strength); and for a Cosmos Predict2.5 or
// Predict2 Video2World or a Helios model: a video to continue (its last frames begin the video
// made; no strength). A video file is decoded (frames.js) at the chosen size and fps, its first
// Frames frames for Wan, all of them for Cosmos and Helios; a set of pictures goes out as it is,
// in name order (the server takes the first Frames of them for Wan, the last ones for Cosmos).

import { $ } from "./api.js";
import { videoPicker } from "./frames.js";

let picker = null;  // frames.js' videoPicker

// the families of GET /avx/video-models that are not Wan's and take no init video
const OTHERS = ["kandinsky-5-video", "hunyuan-video-1.5", "ltx-2", "hunyuan-video",
  "skyreels-v2-df", "sana-video", "motif-video"];
// the families that continue an init video rather than redraw it
const CONTINUING = ["cosmos-predict2.5", "cosmos-predict2", "helios"];

/** Whether `model` (a GET /avx/video-models entry) continues an init video (Cosmos, Helios). */
function continues(model) {
  return CONTINUING.includes(model?.family);
}

/** Whether `model` takes its init video without a strength: Cosmos continues it, Lucy Edit
 * edits it over the whole schedule. */
function strengthless(model) {
  return continues(model) || model?.family === "lucy-edit";
}

/** Whether `model` takes an init video: Wan's text-to-video models (not VACE, Animate, an
 * image-to-video one or another family's), which redraw it, and Cosmos', which continue it. */
export function takesInitVideo(model) {
  return continues(model) || (Boolean(model) && !OTHERS.includes(model.family) && !model.vace
    && !model.animate && model.first_frame !== "required");
}

/** Shows the init video's picker where `model` takes an init video, with the strength where it
 * redraws it (hidden: nothing of theirs goes out). */
export function showInitVideo(model) {
  $("video_init").hidden = !takesInitVideo(model);
  $("video_denoising_field").hidden = strengthless(model);
}

/** The request's init video fields for `model` and a video of `size` ({frames, fps, width,
 * height}): none while no init video is picked; a video to continue whole and without a strength. */
export async function initVideoFields(model, size) {
  const frames = await picker.frames("init video", continues(model) ? { ...size, frames: null } : size);
  if (!frames) return {};
  if (strengthless(model)) return { init_video: frames };
  return { init_video: frames, denoising_strength: Number($("video_denoising_strength").value || 0.8) };
}

/** Wires the init video's picker. */
export function initInitVideo() {
  picker = videoPicker("init_video", {
    none: "None: the video is made from noise.",
    decoded: "decoded at the chosen size, frames and frames per second" });
}
