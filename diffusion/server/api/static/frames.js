// The Video tab's picked videos (VACE's control video and mask, Wan Animate's pose, face,
// background and mask videos): a video file, decoded here frame by frame on a canvas, or a set
// of pictures, one a frame, sent as they are in name order. Each request field is a list of
// base64 pictures (the server's side: vace_inputs / animate_inputs read them as frames).

import { $, base64Of, readFile, showError } from "./api.js";

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
 * seconds; `frames` null: as many as the video holds), each drawn on a width x height canvas (null:
 * the video's own size): base64 PNGs. `short`: what to do where the video is too short. */
async function decode(file, label, { frames, fps, width, height, short = "lower Frames, raise Frames per second or pick a longer video" }) {
  const what = `the ${label} ${file.name}`;
  const video = Object.assign(document.createElement("video"), { muted: true, preload: "auto" });
  const url = URL.createObjectURL(file);
  const loaded = next(video, "loadeddata", what);
  video.src = url;
  try {
    await loaded;
    const count = frames ?? Math.floor(video.duration * fps + 1e-3);
    const needs = count / fps;
    if (video.duration + 1e-3 < needs) {
      throw new Error(`${what[0].toUpperCase()}${what.slice(1)} is ${video.duration.toFixed(2)} s `
        + `long; ${count} frames at ${fps} fps need ${needs.toFixed(2)} s: ${short}.`);
    }
    const canvas = Object.assign(document.createElement("canvas"), {
      width: width ?? video.videoWidth, height: height ?? video.videoHeight });
    const context = canvas.getContext("2d");
    const out = [];
    for (let i = 0; i < count; i++) {
      await seek(video, (i + 0.5) / fps, what);
      context.drawImage(video, 0, 0, canvas.width, canvas.height);
      out.push(base64Of(canvas.toDataURL("image/png")));
    }
    return out;
  } finally {
    URL.revokeObjectURL(url);
  }
}

/** Makes `zone` open `input` on a click and take dropped files: onFiles(an array of them). */
export function filesZone(zone, input, onFiles) {
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

/** A video picker wired to the elements `${id}_drop`, `_file`, `_info` and `_remove` (`none`: the
 * info line while nothing is picked; `decoded`: how a video file is read, for its info line). Its
 * `frames(label, size)`: null (nothing picked), the pictures as base64 or a promise of the
 * video's decoded frames at `size` ({frames, fps, width, height, short?}, as decode takes them). */
export function videoPicker(id, { none, decoded }) {
  let source = null;  // null, {file} (a video) or {name, pictures}
  let adding = Promise.resolve();  // picks are read one after another, so the last one wins
  const set = (picked) => {
    source = picked;
    $(`${id}_info`).textContent = !picked ? none : picked.file
      ? `${picked.file.name}: ${decoded}.`
      : `${picked.name}: one a frame, in name order.`;
    $(`${id}_remove`).disabled = !picked;
  };
  const pick = (files) => {
    const [video, ...rest] = files;
    if (video?.type.startsWith("video/") && !rest.length) {
      set({ file: video });
      return;
    }
    if (!files.length || !files.every((file) => file.type.startsWith("image/"))) {
      showError("Pick one video file, or picture files (PNG, JPEG or WebP), one a frame.");
      return;
    }
    const sorted = files.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
    adding = adding.then(async () => {
      const read = await Promise.all(sorted.map(readFile));
      set({ name: `${read.length} pictures`, pictures: read });
    }).catch(showError);
  };
  filesZone($(`${id}_drop`), $(`${id}_file`), pick);
  $(`${id}_remove`).addEventListener("click", () => set(null));
  set(null);
  return {
    frames(label, size) {
      if (!source) return null;
      if (!source.file) return source.pictures.map(base64Of);
      $("video_progress_text").textContent = `Reading the ${label}…`;
      return decode(source.file, label, size);
    },
  };
}
