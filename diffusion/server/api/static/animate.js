// The Video tab's Wan 2.2 Animate controls, shown for a model GET /avx/video-models marks
// `animate`: the character picture, the pose video (its length is the video's) and the face
// video; to replace a person in a video ("Replace"), that video and its mask (white where the
// person is); the segment length and overlap. Sent as POST /avx/txt2vid's animate_image (a base64
// picture), pose_video, face_video, background_video, mask_video (base64 pictures, one a frame),
// segment_frames and segment_overlap — diffusers' WanAnimatePipeline(image=, pose_video=,
// face_video=, background_video=, mask_video=, mode=, segment_frame_length=, prev_segment_
// conditioning_frames=). A video file is decoded (frames.js): the pose video whole at the chosen
// fps and size, the others to its frame count, the face video at its own size: the server fits
// the crops to the model's face size with Pillow's Lanczos, which a canvas's downscale is not,
// so shrinking them here would change the faces the model reads (Wan Animate's preprocessing
// writes 512 x 512 crops, already the model's size). Frames and the first frame, which Animate
// refuses, hide meanwhile.

import { $, base64Of, fileDropZone, readFile } from "./api.js";
import { videoPicker } from "./frames.js";

const pickers = {};  // "pose", "face", "background", "mask": frames.js' videoPicker
let character = null;  // the character picture, a data URL

/** Shows the controls (for an Animate model) or hides them, and Wan's options Animate refuses
 * the other way round (nothing of either goes out while hidden). */
export function showAnimate(on) {
  $("video_animate").hidden = !on;
  $("video_frames").closest(".field").hidden = on;
  $("animate_replace").hidden = $("video_animate_mode").value !== "replace";
}

function setCharacter(dataUrl) {
  character = dataUrl;
  $("animate_image").src = dataUrl ?? "";
  $("animate_image").hidden = !dataUrl;
  $("animate_hint").hidden = Boolean(dataUrl);
  $("animate_image_remove").disabled = !dataUrl;
}

/** `picker`'s frames, or an Error naming what to pick. */
async function needed(picker, label, size) {
  const frames = await pickers[picker].frames(label, size);
  if (!frames) throw new Error(`Wan 2.2 Animate needs a ${label}: drop a video, or its frames as pictures, on its area.`);
  return frames;
}

/** The request's Animate fields for a video at `size` ({fps, width, height}); the videos are
 * decoded here, which takes a moment for a long one. */
export async function animateFields({ fps, width, height }) {
  if (!character) throw new Error("Wan 2.2 Animate moves a character picture: drop one on its area or click it to upload.");
  const pose = await needed("pose", "pose video", { frames: null, fps, width, height });
  const frames = pose.length;
  const short = "pick one as long as the pose video, or a shorter pose video";
  const body = {
    animate_image: base64Of(character),
    pose_video: pose,
    face_video: await needed("face", "face video", { frames, fps, width: null, height: null, short }),
    segment_overlap: Number($("video_segment_overlap").value),
  };
  if ($("video_animate_mode").value === "replace") {
    body.background_video = await needed("background", "background video", { frames, fps, width, height, short });
    body.mask_video = await needed("mask", "mask video", { frames, fps, width, height, short });
  }
  if ($("video_segment_frames").value !== "") body.segment_frames = Number($("video_segment_frames").value);
  return body;
}

/** Wires the Animate controls of the Video tab. */
export function initAnimate() {
  const decoded = "decoded at the chosen frames per second";
  const sized = `${decoded} and size`;
  pickers.pose = videoPicker("animate_pose", { none: "None picked: the pose video is needed (its length is the video's).", decoded: sized });
  pickers.face = videoPicker("animate_face", { none: "None picked: the face video is needed, one face crop a pose frame.", decoded: `${decoded}, at its own size` });
  pickers.background = videoPicker("animate_background", { none: "None picked: Replace needs the video whose person is replaced.", decoded: sized });
  pickers.mask = videoPicker("animate_mask", { none: "None picked: Replace needs the person's mask, white where the person is.", decoded: sized });
  fileDropZone($("animate_drop"), $("animate_file"), async (file) => setCharacter(await readFile(file)));
  $("animate_image_remove").addEventListener("click", () => setCharacter(null));
  $("video_animate_mode").addEventListener("change", () => {
    $("animate_replace").hidden = $("video_animate_mode").value !== "replace";
  });
}
