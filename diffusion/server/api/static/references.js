// img2img's reference pictures: an edit model (FLUX.2, Qwen-Image-Edit Plus) reads several, the
// init image the first; the ones dropped here go out after it as init_images[1:], in the order shown.

import { $, readFile, showError } from "./api.js";

let pictures = [];  // data URLs, in the order they go out
let limit = 0;  // the pictures the loaded model reads, the init image among them (null: any number)
let adding = Promise.resolve();  // drops are read one after another, so they stay in drop order

const shown = () => limit === null || limit > 1;
const room = () => (limit === null ? Infinity : limit - 1);  // after the init image
const plural = (count, word) => `${count} ${word}${count === 1 ? "" : "s"}`;

/** Shows the zone for a model that reads `references` pictures, the init image the first (GET
 * /avx/defaults' `references`: 0 or 1, no zone; null, any number; missing, as 0). */
export function setReferenceLimit(references) {
  limit = references === undefined ? 0 : references;
  $("references_field").hidden = !shown();
  $("references_hint").textContent = limit === null
    ? "Any number, after the init image, in this order."
    : `Up to ${plural(room(), "picture")} after the init image, in this order.`;
}

/** The reference pictures to send after the init image (data URLs, in order); none while the
 * zone is hidden. Throws, saying how many to remove, where there are more than the model reads. */
export function referenceImages() {
  if (!shown()) return [];
  if (pictures.length > room()) {
    throw new Error(`This model reads ${limit} pictures, the init image the first: remove `
      + `${plural(pictures.length - room(), "reference picture")}.`);
  }
  return [...pictures];
}

function addFiles(files) {
  const images = [...files].filter((file) => file.type.startsWith("image/"));
  if (!images.length) {
    showError("Drop image files (PNG, JPEG or WebP).");
    return;
  }
  adding = adding.then(async () => {
    const free = Math.max(room() - pictures.length, 0);
    if (images.length > free) {
      showError(`This model reads at most ${limit} pictures, the init image the first: `
        + `${free ? `the first ${plural(free, "picture")} dropped were added` : "remove one to add another"}.`);
    }
    try {
      pictures.push(...await Promise.all(images.slice(0, free).map(readFile)));
    } catch (error) {
      showError(error);
    }
    render();
  });
}

function render() {
  $("references_list").replaceChildren(...pictures.map((src, index) => {
    const item = document.createElement("li");
    const image = document.createElement("img");
    image.src = src;
    image.alt = `Reference picture ${index + 1}`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "✕";
    remove.setAttribute("aria-label", `Remove reference picture ${index + 1}`);
    remove.addEventListener("click", () => {
      pictures.splice(index, 1);
      render();
    });
    item.append(image, remove);
    return item;
  }));
}

const zone = $("references_drop");
const input = $("references_file");
zone.addEventListener("click", () => input.click());
zone.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
});
input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragover"); });
zone.addEventListener("dragleave", () => zone.classList.remove("dragover"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("dragover");
  addFiles(event.dataTransfer.files);
});
