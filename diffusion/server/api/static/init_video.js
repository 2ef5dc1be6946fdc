// The Video tab's init video (Wan video-to-video), shown for a Wan text-to-video model (and Lucy
// Edit's, which edits it, without a strength): a video to redraw as the prompt says, sent as POST
// /avx/txt2vid's init_video (base64 pictures, one a frame) with denoising_strength — diffusers'
// WanVideoToVideoPipeline(video=, strength=). A video file
// is decoded (frames.js) at the chosen size, frame count and fps; a set of pictures goes out as it
// is, in name order (the server takes the first Frames of them).

import { $ } from "./api.js";
import { videoPicker } from "./frames.js";

let picker = null;  // frames.js' videoPicker
// Lucy Edit's folder: the video is edited over the whole schedule, so no strength goes out
let edits = false;

// the families of GET /avx/video-models that are not Wan's (they take no init video)
const OTHERS = ["kandinsky-5-video", "hunyuan-video-1.5", "ltx-2", "hunyuan-video",
  "skyreels-v2-df"];

/** Whether `model` (a GET /avx/video-models entry) redraws an init video: Wan's text-to-video
 * models (not VACE, Animate, an image-to-video one or another family's). */
export function takesInitVideo(model) {
  return Boolean(model) && !OTHERS.includes(model.family) && !model.vace && !model.animate
    && model.first_frame !== "required";
}

/** Shows the init video's picker and strength (hidden: nothing of theirs goes out; `model` a
 * Lucy Edit folder: the strength hidden, the video the one to edit). */
export function showInitVideo(on, model) {
  $("video_init").hidden = !on;
  edits = model?.family === "lucy-edit";
  $("video_denoising_strength").closest(".field").hidden = edits;
}

/** The request's video-to-video fields for a video of `size` ({frames, fps, width, height}):
 * none while no init video is picked. */
export async function initVideoFields(size) {
  const frames = await picker.frames("init video", size);
  if (!frames) return {};
  if (edits) return { init_video: frames };
  return { init_video: frames, denoising_strength: Number($("video_denoising_strength").value || 0.8) };
}

/** Wires the init video's picker. */
export function initInitVideo() {
  picker = videoPicker("init_video", {
    none: "None: the video is made from noise.",
    decoded: "decoded at the chosen size, frames and frames per second" });
}
