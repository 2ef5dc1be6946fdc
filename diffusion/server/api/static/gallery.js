// Results: the selected image (click: full size), thumbnails, infotext, download, lightbox.

import { $ } from "./api.js";

/** @type {{src: string, infotext: string, seed: number|null}[]} */
let results = [];
let selected = -1;

export const selectedResult = () => results[selected] ?? null;

/** Replaces the gallery with new results: images as data URLs, with their infotexts and seeds. */
export function showResults(items) {
  results = items;
  render();
  select(items.length ? 0 : -1);
}

export function clearResults() {
  showResults([]);
}

function render() {
  const gallery = $("gallery");
  gallery.replaceChildren(...results.map((item, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.setAttribute("role", "listitem");
    button.setAttribute("aria-label", `Image ${index + 1} of ${results.length}`);
    const img = document.createElement("img");
    img.src = item.src;
    img.alt = `Result ${index + 1}`;
    button.append(img);
    button.addEventListener("click", () => select(index));
    return button;
  }));
}

function select(index) {
  selected = index;
  const item = selectedResult();
  [...$("gallery").children].forEach((button, i) => button.setAttribute("aria-current", String(i === index)));
  const image = $("selected_image");
  image.hidden = !item || !$("preview").hidden;
  $("viewer_empty").hidden = Boolean(item) || !$("preview").hidden;
  if (item) image.src = item.src;
  $("infotext").textContent = item ? item.infotext : "";
  const download = $("download");
  if (item) {
    download.href = item.src;
    download.download = `${String(index + 1).padStart(5, "0")}-${item.seed ?? "image"}.png`;
    download.setAttribute("aria-disabled", "false");
  } else {
    download.removeAttribute("href");
    download.setAttribute("aria-disabled", "true");
  }
  for (const id of ["send_to_img2img", "send_to_pnginfo", "clear_gallery"]) $(id).disabled = !item;
}

/** While a job runs the live preview takes the viewer; null hides it again. */
export function showPreview(src) {
  const preview = $("preview");
  if (src) {
    preview.src = src;
    preview.hidden = false;
    $("selected_image").hidden = true;
    $("viewer_empty").hidden = true;
  } else {
    preview.hidden = true;
    preview.removeAttribute("src");
    select(selected);
  }
}

function openLightbox() {
  const item = selectedResult();
  if (!item) return;
  $("lightbox_image").src = item.src;
  $("lightbox_download").href = item.src;
  $("lightbox_download").download = $("download").download;
  $("lightbox").hidden = false;
  $("lightbox_close").focus();
}

function closeLightbox() {
  $("lightbox").hidden = true;
  if (!$("selected_image").hidden) $("selected_image").focus();  // back where the keyboard was
}

$("selected_image").addEventListener("click", openLightbox);
$("selected_image").addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") { event.preventDefault(); openLightbox(); }
});
$("lightbox").addEventListener("click", (event) => { if (event.target === $("lightbox")) closeLightbox(); });
$("lightbox_image").addEventListener("click", closeLightbox);
$("lightbox_close").addEventListener("click", closeLightbox);
$("clear_gallery").addEventListener("click", clearResults);
document.addEventListener("keydown", (event) => {
  if ($("lightbox").hidden) return;
  if (event.key === "Escape") closeLightbox();
  const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
  if (step && results.length > 1) {
    select((selected + step + results.length) % results.length);
    openLightbox();
  }
});
