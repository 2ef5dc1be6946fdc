// The extra-networks browser: checkpoint, LoRA and textual-inversion cards from the API's lists
// (/sd-models, /loras, /embeddings). A LoRA card adds <lora:NAME:1> to the prompt, an embedding
// card its name (a second click takes either out again, as the WebUI's cards do); a checkpoint
// card switches the model as the checkpoint dropdown does.

import { $, api, showError } from "./api.js";

const SEPARATOR = " ";  // the WebUI's extra_networks_add_text_separator

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Adds `text` to the prompt, or takes it out where the prompt has it already. */
export function togglePromptText(text) {
  const prompt = $("prompt");
  const value = prompt.value;
  if (value.includes(text)) {
    prompt.value = value.replace(new RegExp(`(^|\\s*)${escapeRegExp(text)}`), "").trim();
  } else {
    prompt.value = value.trim() ? `${value.trimEnd()}${SEPARATOR}${text}` : text;
  }
  prompt.dispatchEvent(new Event("input", { bubbles: true }));  // saved like typed text
}

function card(title, subtitle, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "card";
  button.setAttribute("role", "listitem");
  button.dataset.name = title.toLowerCase();
  button.textContent = title;
  if (subtitle) {
    const sub = document.createElement("span");
    sub.className = "card-sub";
    sub.textContent = subtitle;
    button.append(sub);
  }
  button.addEventListener("click", onClick);
  return button;
}

function showCards(box, cards, empty) {
  if (cards.length) {
    box.replaceChildren(...cards);
    return;
  }
  const note = document.createElement("span");
  note.className = "cards-empty";
  note.textContent = empty;
  box.replaceChildren(note);
}

function switchModel(title) {
  const select = $("model");
  if (select.value === title || select.disabled) return;
  select.value = title;
  select.dispatchEvent(new Event("change"));
}

/** Lists the three kinds of card again (the Refresh button, and once at the start). */
export async function loadNetworks() {
  const [models, loras, embeddings] = await Promise.all([api("sd-models"), api("loras"), api("embeddings")]);
  showCards($("cards_checkpoints"), models.map((m) => {
    const item = card(m.model_name, m.hash ?? "", () => switchModel(m.title));
    item.dataset.title = m.title;
    return item;
  }), "No checkpoints.");
  markLoaded();
  showCards($("cards_loras"), loras.map((l) => card(l.name, l.alias && l.alias !== l.name ? l.alias : "",
    () => togglePromptText(`<lora:${l.name}:1>`))), "No LoRAs (serve --lora-dir DIR).");
  showCards($("cards_embeddings"), Object.entries(embeddings.loaded ?? {}).map(([name, e]) => card(name,
    e.vectors ? `${e.vectors} vector${e.vectors === 1 ? "" : "s"}` : "", () => togglePromptText(name))),
  "No embeddings (serve --embeddings-dir DIR).");
  filterCards();
}

function filterCards() {
  const wanted = $("networks_filter").value.trim().toLowerCase();
  for (const item of document.querySelectorAll("#networks_panel .card")) item.hidden = !item.dataset.name.includes(wanted);
}

/** The loaded model's card is shown pressed. */
function markLoaded() {
  for (const item of $("cards_checkpoints").querySelectorAll(".card")) {
    item.setAttribute("aria-pressed", String(item.dataset.title === $("model").value));
  }
}

$("networks_filter").addEventListener("input", filterCards);
$("model").addEventListener("change", markLoaded);
$("networks_refresh").addEventListener("click", () => loadNetworks().catch(showError));
