// The prompt styles of the server's styles.csv (/sdapi/v1/prompt-styles): a multi-select beside
// the prompt whose chosen names go out as the request's `styles`, which the server applies to
// the prompt and negative prompt as the WebUI does.

import { $, api } from "./api.js";

/** Fills the Styles list; the field stays hidden while the server has no styles. */
export async function loadStyles() {
  const styles = await api("prompt-styles");
  const select = $("styles");
  select.replaceChildren(...styles.map((style) => {
    const option = new Option(style.name, style.name);
    option.title = [style.prompt, style.negative_prompt && `Negative: ${style.negative_prompt}`]
      .filter(Boolean).join("\n");
    return option;
  }));
  $("styles_field").hidden = styles.length === 0;
}

/** The chosen styles' names, in the list's order. */
export function chosenStyles() {
  return [...$("styles").selectedOptions].map((option) => option.value);
}

/** Chooses exactly the styles `names` names (PNG Info's "Styles array"); unknown names are left out. */
export function chooseStyles(names) {
  for (const option of $("styles").options) option.selected = names.includes(option.value);
}
