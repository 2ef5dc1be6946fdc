// A run of this page as the WebUI's page makes one: a task id of its own sent with the request, and
// the job's progress (/internal/progress by that id) polled and shown while the request runs. The
// image tabs (app.js) and the Video tab (video.js) both run theirs so.

import { $, api } from "./api.js";

/** A number box's value. An empty box (or text the browser cannot read as a number) would go out
 * as 0 (CFG scale 0, seed 0): an Error naming the box instead. */
export function number(id) {
  const field = $(id);
  if (field.value === "") throw new Error(`${field.labels[0]?.textContent ?? id} is empty: enter a number.`);
  return Number(field.value);
}

/** A task id as the WebUI's page makes one ("task(...)"), from crypto.getRandomValues: randomUUID
 * needs a secure context, and the page is often served over plain http on a LAN. */
export function newTaskId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return `task(${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")})`;
}

export function formatEta(seconds) {
  if (!Number.isFinite(seconds) || seconds <= 0) return "";
  const whole = Math.ceil(seconds);  // rounded before the split: 119.5 s is 2m 00s, not 1m 60s
  if (whole < 60) return `ETA ${whole}s`;
  return `ETA ${Math.floor(whole / 60)}m ${String(whole % 60).padStart(2, "0")}s`;
}

/** The answer of `request()` (the generation call), with `poll()` run every half second while it
 * is on its way, one poll at a time. */
export async function whilePolling(request, poll) {
  let polling = false;
  const timer = setInterval(async () => {
    if (polling) return;
    polling = true;
    await poll();
    polling = false;
  }, 500);
  try {
    return await request();
  } finally {
    clearInterval(timer);
  }
}

/** One poll of this page's own job `id` (another tab's job, running or queued beside it, is not
 * shown here), shown on the progress bar `ids.bar` and its line `ids.text`: its place in the queue
 * or "Waiting…" before it starts, then the percentage, the batch, the step (and the ETA with
 * `eta`); "Interrupting…" once the Interrupt button `ids.interrupt` is disabled, until the run
 * ends. `current()`: whether the run that asked is still the one running. `preview`: the id of
 * the last live preview shown (the server sends only newer ones), null for none. Returns the
 * answer while the job runs (for its live preview), else null. */
export async function pollProgress(id, ids, { current, eta = false, preview = null }) {
  let progress;
  try {
    progress = await api("/internal/progress", { id_task: id, id_live_preview: preview ?? -1, live_preview: preview !== null });
  } catch {
    return null;  // one missed poll is harmless; the generation request reports real failures
  }
  if (!current()) return null;
  // once Interrupt is clicked, say so until the run ends (the last step's numbers would read as running on)
  const interrupting = $(ids.interrupt).disabled;
  // finished, its answer still on the way: the last numbers stay
  if (progress.completed) return null;
  if (!progress.active) {  // not started yet: its place in the queue ("In queue: 2/3"), or waiting
    if (!interrupting) $(ids.text).textContent = progress.queued ? progress.textinfo : "Waiting…";
    return null;
  }
  const fraction = Math.min(Math.max(progress.progress ?? 0, 0), 1);
  const state = progress.state ?? {};
  $(ids.bar).value = fraction;
  const parts = [`${Math.round(fraction * 100)}%`];
  if (state.job_count > 1) parts.push(`batch ${state.job_no + 1}/${state.job_count}`);
  if (state.sampling_steps) parts.push(`step ${state.sampling_step}/${state.sampling_steps}`);
  const left = eta ? formatEta(progress.eta) : "";
  if (left) parts.push(left);
  $(ids.text).textContent = interrupting ? "Interrupting…" : parts.join(" · ");
  return progress;
}
