// The settings sections under the seed: Restore faces, Hires. fix (txt2img), Refiner and the Script dropdown
// with the chosen script's fields (from /sdapi/v1/scripts and /sdapi/v1/script-info); each
// goes into the request body as the WebUI's page sends it and comes back from an infotext.

import { $, api } from "./api.js";

// the WebUI's latent upscale modes, listed before the upscalers of GET /upscalers
const LATENT_UPSCALERS = ["Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
  "Latent (nearest)", "Latent (nearest-exact)"];
const ALWAYSON = ["controlnet"];  // listed by /scripts, chosen by no dropdown

let scripts = { txt2img: [], img2img: [] };  // names, as /scripts lists them (lower case)
let scriptInfo = [];  // /script-info's entries
let shownMode = "txt2img";
let shownArgs = [];  // the chosen script's arguments: {label, value, field}
let upscalers = [];  // GET /upscalers' names: SD upscale's "Upscaler" choices

function fill(select, values) {
  const wanted = select.value || select.dataset.default;
  select.replaceChildren(...values.map((value) => new Option(value, value)));
  if (values.includes(wanted)) select.value = wanted;
}

/** Fills the refiner's checkpoint list (sd-models' titles); called with the model list. */
export function setRefinerModels(titles) {
  fill($("refiner_checkpoint"), titles);
}

async function loadUpscalers() {
  upscalers = (await api("upscalers")).map((u) => u.name);
  fill($("hr_upscaler"), [...LATENT_UPSCALERS, ...upscalers.filter((n) => n !== "None")]);
}

async function loadScripts() {
  [scripts, scriptInfo] = await Promise.all([api("scripts"), api("script-info")]);
  showScripts(shownMode, { force: true });
}

/** The sections a generation tab has: hires fix is txt2img's; each tab its own scripts (the
 * script's fields stay as they are while the tab does). */
export function showScripts(mode, { force = false } = {}) {
  $("hires_panel").hidden = mode !== "txt2img";
  if (mode === shownMode && !force) return;
  shownMode = mode;
  const select = $("script");
  const chosen = select.value;
  const names = (scripts[mode] ?? []).filter((name) => !ALWAYSON.includes(name));
  select.replaceChildren(new Option("None", ""), ...names.map((name) => new Option(titleCase(name), name)));
  select.value = names.includes(chosen) ? chosen : "";
  renderScriptArgs();
}

// the WebUI's titles of the names /scripts lists in lower case (any other: capitalised)
const TITLES = { "x/y/z plot": "X/Y/Z plot", "sd upscale": "SD upscale" };
const titleCase = (name) => TITLES[name] ?? name.charAt(0).toUpperCase() + name.slice(1);

/** One control per argument of the chosen script, in script_args' order: a dropdown where it
 * has choices (an upscaler: the server's), a checkbox for a flag, a number or a text box (a
 * list as "a, b, c"); empty lists (the X/Y/Z plot's value dropdowns) and notes (null) keep
 * their default and get no control. */
function renderScriptArgs() {
  const name = $("script").value;
  const info = scriptInfo.find((s) => s.name === name && s.is_img2img === (shownMode === "img2img"));
  const box = $("script_args");
  shownArgs = (info?.args ?? []).map((arg, index) => ({ ...arg, field: argField(arg, index) }));
  box.replaceChildren(...shownArgs.filter((arg) => arg.field).map((arg) => {
    const row = document.createElement("div");
    row.className = arg.field.type === "checkbox" ? "check-row" : "field";
    const label = document.createElement("label");
    label.htmlFor = arg.field.id;
    label.textContent = arg.label;
    row.append(...(arg.field.type === "checkbox" ? [arg.field, label] : [label, arg.field]));
    return row;
  }));
  box.hidden = !shownArgs.length;
}

function argField(arg, index) {
  const value = arg.value;
  let field;
  if (value === null || (Array.isArray(value) && !value.length)) return null;
  const choices = arg.choices ?? (arg.label === "Upscaler" && upscalers.length ? upscalers : null);
  if (choices) {
    field = document.createElement("select");
    field.append(...choices.map((choice) => new Option(choice, choice)));
    field.value = typeof value === "number" ? choices[value] ?? choices[0] : String(value);
  } else if (typeof value === "boolean") {
    field = document.createElement("input");
    field.type = "checkbox";
    field.checked = value;
  } else if (typeof value === "number") {
    field = document.createElement("input");
    field.type = "number";
    field.value = value;
  } else {
    field = document.createElement(/inputs|prompts|values/i.test(arg.label) ? "textarea" : "input");
    if (field.tagName === "TEXTAREA") field.rows = 2;
    field.value = Array.isArray(value) ? value.join(", ") : value;
    field.dataset.list = String(Array.isArray(value));
  }
  field.id = `script_arg_${index}`;
  return field;
}

$("script").addEventListener("change", renderScriptArgs);

export async function initSections() {
  const results = await Promise.allSettled([loadUpscalers(), loadScripts()]);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) throw failed.reason;
}

const numberOf = (id) => {
  const field = $(id);
  if (field.value === "") throw new Error(`${field.labels[0]?.textContent ?? id} is empty: enter a number.`);
  return Number(field.value);
};

/** The request fields of the sections for a `mode` ("txt2img" / "img2img") request. */
export function sectionFields(mode) {
  const body = {};
  if ($("restore_faces").checked) body.restore_faces = true;
  if ($("tiling").checked) body.tiling = true;
  if (mode === "txt2img" && $("enable_hr").checked) {
    Object.assign(body, {
      enable_hr: true, hr_upscaler: $("hr_upscaler").value, hr_scale: numberOf("hr_scale"),
      hr_second_pass_steps: Math.trunc(numberOf("hr_second_pass_steps")),
      hr_resize_x: Math.trunc(numberOf("hr_resize_x")), hr_resize_y: Math.trunc(numberOf("hr_resize_y")),
      denoising_strength: numberOf("hr_denoising_strength"),
    });
  }
  if ($("refiner_enabled").checked && $("refiner_checkpoint").value) {
    body.refiner_checkpoint = $("refiner_checkpoint").value;
    body.refiner_switch_at = numberOf("refiner_switch_at");
  }
  if ($("script").value) {
    body.script_name = $("script").value;
    body.script_args = shownArgs.map((arg) => {
      const field = arg.field;
      if (!field) return arg.value;
      if (field.type === "checkbox") return field.checked;
      if (field.type === "number") return Number(field.value);
      if (field.dataset.list === "true") return field.value.split(",").map((v) => v.trim()).filter(Boolean);
      return field.value;
    });
  }
  return body;
}

/** The section fields' values of parsed infotext parameters ({field id: value}): hires fix on
 * where the infotext has its upscaler, the refiner where it names one; off where it has none. */
export function sectionParameters(params) {
  // the WebUI writes the upscaler with every hires fix; older pictures only the scale or size
  const hires = params["Hires upscaler"] !== undefined || params["Hires upscale"] !== undefined
    || Number(params["Hires resize-1"] ?? 0) > 0;
  const fields = { enable_hr: hires, refiner_enabled: Boolean(params.Refiner),
    restore_faces: Boolean(params["Face restoration"]), tiling: params.Tiling === "True" };
  if (hires) {
    Object.assign(fields, {
      hr_upscaler: params["Hires upscaler"] ?? "Latent", hr_second_pass_steps: params["Hires steps"] ?? 0,
      hr_denoising_strength: params["Denoising strength"], hr_scale: params["Hires upscale"] ?? 2,
      hr_resize_x: params["Hires resize-1"] ?? 0, hr_resize_y: params["Hires resize-2"] ?? 0,
    });
  }
  if (params.Refiner) {
    const select = $("refiner_checkpoint");
    const wanted = String(params.Refiner).toLowerCase();
    // a title ("name [hash]"), or the name alone
    const option = [...select.options].find((o) => o.value.toLowerCase() === wanted)
      ?? [...select.options].find((o) => o.value.toLowerCase().split(" [")[0] === wanted.split(" [")[0]);
    if (option) fields.refiner_checkpoint = option.value;
    fields.refiner_switch_at = params["Refiner switch at"];
  }
  return fields;
}

/** Chooses the infotext's script ("Script: X/Y/Z plot") and fills its fields from the keys
 * that name them ("X Type", "X Values"); no script where it names none. */
export function applyScript(params) {
  const name = String(params.Script ?? "").toLowerCase();
  const select = $("script");
  select.value = [...select.options].some((o) => o.value === name) ? name : "";
  renderScriptArgs();
  const keys = Object.keys(params);
  for (const arg of shownArgs) {
    const key = arg.field && keys.find((k) => k.toLowerCase() === arg.label.toLowerCase());
    if (!key) continue;
    if (arg.field.type === "checkbox") arg.field.checked = params[key] === true || params[key] === "True";
    else arg.field.value = params[key];
  }
}
