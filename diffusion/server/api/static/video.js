// The Video tab: Wan's and Kandinsky 5's text-to-video and image-to-video (POST /avx/txt2vid,
// /avx/img2vid) on the server's queue, shown when GET /avx/video-models lists a video model.
// Progress and Interrupt go by the job's task id, as the image tabs' do; the MP4 plays in a
// <video> player. A Wan VACE model's control video, mask and reference pictures are vace.js's; a
// Wan 2.2 Animate model's character picture and videos animate.js's; a Wan text-to-video model's
// init video (video-to-video) and a Cosmos model's video to continue init_video.js's.

import { $, api, base64Of, clearError, fileDropZone, readFile, showError } from "./api.js";
import { newTaskId, number, pollProgress, whilePolling } from "./job.js";
import { animateFields, initAnimate, showAnimate } from "./animate.js";
import { initInitVideo, initVideoFields, showInitVideo, takesInitVideo } from "./init_video.js";
import { initVace, showVace, vaceFields } from "./vace.js";

// /avx/video-models' entries: {title, model_name, kind, first_frame, vace, animate, family, defaults, samplers}
let models = [];
// a single file's parts (request field -> its select), each "" for the base folder's own
const PARTS = { base: "video_base", model_2: "video_model_2", text_encoder: "video_text_encoder", vae: "video_vae", clip_vision: "video_clip_vision" };
let firstFrame = null;  // the dropped picture, a data URL
let task = null;  // the running video's id_task
const urls = [];  // object URLs of the shown video, revoked when the next one comes

/** The request's `cache`: "KIND:THRESHOLD", the kind alone (an empty threshold: the server's
 * default for it), or null (off). */
function stepCache() {
  const kind = $("video_cache").value;
  if (kind === "none") return null;
  const threshold = $("video_cache_threshold").value;
  return threshold === "" ? kind : `${kind}:${threshold}`;
}

function chosenModel() {
  return models.find((m) => m.title === $("video_model").value);
}

/** "required", "optional" or "none" (Wan 2.2 Animate takes its picture as the character's). */
function firstFrameTaken() {
  return chosenModel()?.animate ? "none" : chosenModel()?.first_frame ?? "none";
}

/** Fills a part's select with `names`, keeping the chosen one; `none` labels the empty choice. */
function fillPart(id, names, none) {
  const select = $(id);
  const wanted = select.value;
  select.replaceChildren(...(none ? [new Option(none, "")] : []), ...names.map((name) => new Option(name, name)));
  if (names.includes(wanted)) select.value = wanted;
}

/** The first-frame picker as the chosen model takes one: required (Wan 2.1 I2V, Kandinsky 5
 * image-to-video), optional (Wan 2.2 TI2V) or not at all (Wan 2.1 T2V, Wan 2.2 Animate:
 * hidden); the VACE controls for a VACE model, the Animate controls for an Animate model, the
 * init video for a Wan text-to-video or a Cosmos model. */
function showFirstFrame() {
  const takes = firstFrameTaken();
  showVace(Boolean(chosenModel()?.vace));
  showAnimate(Boolean(chosenModel()?.animate));
  showInitVideo(chosenModel());
  $("video_parts").hidden = chosenModel()?.kind !== "file";
  $("video_first_frame").hidden = takes === "none";
  $("video_hint").textContent = takes === "required"
    ? "First frame (this model needs one): drop an image — or click to upload"
    : "First frame (optional): drop an image — or click to upload";
}

/** A model the user picks brings its family's frames, size, fps and CFG (Wan's, Kandinsky 5
 * Video's or a HunyuanVideo 1.5 folder's), and a sampler it runs. */
function useModelDefaults() {
  const model = chosenModel();
  if (!model?.defaults) return;
  const fields = { frames: "video_frames", fps: "video_fps", width: "video_width", height: "video_height", cfg_scale: "video_cfg_scale" };
  for (const [field, id] of Object.entries(fields)) $(id).value = model.defaults[field];
  if (!model.samplers.includes($("video_sampler").value)) $("video_sampler").value = model.samplers[0];
}

function setFirstFrame(dataUrl) {
  firstFrame = dataUrl;
  $("video_image").src = dataUrl ?? "";
  $("video_image").hidden = !dataUrl;
  $("video_hint").hidden = Boolean(dataUrl);
  $("video_image_remove").disabled = !dataUrl;
}

/** The request; a VACE or Animate model's videos are decoded into frames here (a moment for a long one). */
async function requestBody() {
  const body = {
    model: $("video_model").value,
    prompt: $("video_prompt").value,
    negative_prompt: $("video_negative_prompt").value,
    frames: number("video_frames"),
    fps: number("video_fps"),
    width: number("video_width"),
    height: number("video_height"),
    steps: number("video_steps"),
    cfg_scale: number("video_cfg_scale"),
    seed: Math.trunc(number("video_seed")),
    sampler: $("video_sampler").value,
    cache: stepCache(),
    format: "mp4",
    also_webp: $("video_also_webp").checked,
  };
  if (!body.model) throw new Error("No video model: put a Wan, Kandinsky 5 Video or HunyuanVideo 1.5 folder in the models directory and refresh.");
  if (chosenModel()?.kind === "file") {
    for (const [field, id] of Object.entries(PARTS)) if ($(id).value) body[field] = $(id).value;
  }
  const takes = firstFrameTaken();
  if (takes === "required" && !firstFrame) throw new Error(`${body.model} makes videos from a first frame: drop one on the image area or click it to upload.`);
  if (takes !== "none" && firstFrame) body.image = base64Of(firstFrame);
  if (chosenModel()?.family === "hunyuan-video-1.5" && takes === "required") {
    delete body.width;  // the picture's aspect bucket is the video's size
    delete body.height;
  }
  if (chosenModel()?.vace) {
    Object.assign(body, await vaceFields({ frames: body.frames, fps: body.fps, width: body.width, height: body.height }));
  }
  if (takesInitVideo(chosenModel())) {
    Object.assign(body, await initVideoFields(chosenModel(), { frames: body.frames, fps: body.fps, width: body.width, height: body.height }));
  }
  if (chosenModel()?.animate) {  // the pose video's length is the video's
    delete body.frames;
    Object.assign(body, await animateFields({ fps: body.fps, width: body.width, height: body.height }));
  }
  return body;
}

function setRunning(on) {
  $("video_generate").hidden = on;
  $("video_running").hidden = !on;
  $("video_progress_wrap").hidden = !on;
  $("video_interrupt").disabled = false;
  $("video_progress").value = 0;
  $("video_progress_text").textContent = on ? "Waiting…" : "";
}

function objectUrl(base64, type) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const url = URL.createObjectURL(new Blob([bytes], { type }));
  urls.push(url);
  return url;
}

function showVideo(answer) {
  for (const url of urls.splice(0)) URL.revokeObjectURL(url);
  const mp4 = objectUrl(answer.video, "video/mp4");
  const player = $("video_player");
  player.src = mp4;
  player.hidden = false;
  $("video_empty").hidden = true;
  const name = `video-${answer.seed}`;
  Object.assign($("video_download"), { href: mp4, download: `${name}.mp4` });
  $("video_download").setAttribute("aria-disabled", "false");
  const webp = answer.webp ? objectUrl(answer.webp, "image/webp") : null;
  $("video_webp").hidden = $("video_webp_download").hidden = !webp;
  if (webp) {
    $("video_webp").src = webp;
    Object.assign($("video_webp_download"), { href: webp, download: `${name}.webp` });
  }
  $("video_info").textContent = `Seed: ${answer.seed}, ${answer.frames} frames at ${answer.fps} fps, `
    + `${answer.width}x${answer.height}`
    + `${answer.denoising_strength != null ? `, denoising strength ${answer.denoising_strength}` : ""}`
    + `${answer.interrupted ? " (interrupted: decoded from where it stopped)" : ""}`;
}

async function generate() {
  if (task) return;
  clearError();
  const id = task = newTaskId();  // set before the control video's decoding: one run at a time
  setRunning(true);
  const ids = { bar: "video_progress", text: "video_progress_text", interrupt: "video_interrupt" };
  try {
    const body = await requestBody();
    body.force_task_id = id;
    showVideo(await whilePolling(() => api(body.image ? "/avx/img2vid" : "/avx/txt2vid", body),
      () => pollProgress(id, ids, { current: () => id === task })));
  } catch (error) {
    showError(error);
  } finally {
    task = null;
    setRunning(false);
  }
}

/** Lists the video models and Wan's samplers; shows the Video tab when there is a model (the page
 * calls it again after the refresh button's rescan). */
export async function loadVideoModels() {
  const answer = await api("/avx/video-models");
  models = answer.models;
  const select = $("video_model");
  const wanted = select.value;
  select.replaceChildren(...models.map((m) => new Option(m.title, m.title)));
  if (models.some((m) => m.title === wanted)) select.value = wanted;
  const sampler = $("video_sampler");
  const chosen = sampler.value || sampler.dataset.default;
  sampler.replaceChildren(...answer.samplers.map((name) => new Option(name, name)));
  if (answer.samplers.includes(chosen)) sampler.value = chosen;
  fillPart("video_base", answer.bases ?? [], null);
  const files = answer.files ?? {};
  for (const field of ["model_2", "text_encoder", "vae", "clip_vision"]) fillPart(PARTS[field], files[field] ?? [], "(the base folder's)");
  $("tab_video").hidden = !models.length;
  showFirstFrame();
}

/** Wires the Video tab; resolves once the model list is in (the page restores saved fields after). */
export function initVideo() {
  fileDropZone($("video_drop"), $("video_file"), async (file) => setFirstFrame(await readFile(file)));
  initVace();
  initAnimate();
  initInitVideo();
  $("video_image_remove").addEventListener("click", () => setFirstFrame(null));
  $("video_model").addEventListener("change", () => {
    useModelDefaults();
    showFirstFrame();
  });
  $("video_generate").addEventListener("click", generate);
  $("video_interrupt").addEventListener("click", () => {
    $("video_interrupt").disabled = true;
    $("video_progress_text").textContent = "Interrupting…";
    if (task) api("interrupt", { id_task: task }).catch(showError);
  });
  $("panel_video").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $("video_generate").click();
    }
  });
  return loadVideoModels();
}

/** After the saved settings are restored: the first-frame picker follows the restored model. */
export { showFirstFrame };
