"""Text to conditioning: CLIP's, T5's and the LLMs' tokenizers, the WebUI's prompt syntax (emphasis,
BREAK, prompt editing, extra-network tags, AND), chunked weighted conditioning, and
textual-inversion embeddings.

| module | what |
|---|---|
| `tokenizer` | CLIP's byte-level BPE (the `tokenizers` library) |
| `t5_tokenizer` | T5's SentencePiece tokenizer from a `tokenizer.json` (FLUX, SD3) |
| `chatglm_tokenizer` | ChatGLM3's tokenizer (Kolors) from its SentencePiece model |
| `llm_tokenizer` | the LLM text encoders' tokenizers (Qwen3) and their chat prompts (Z-Image) |
| `prompts`, `prompt_editing` | the WebUI's prompt parser and its `[from:to:when]` schedules |
| `composable` | a positive prompt's `AND` parts and their guidance weights |
| `conditioning` | prompts of any length to text-encoder states, as the WebUI encodes them |
| `flow_emphasis` | emphasis on the flow families' T5 and CLIP states, as Forge weighs them |
| `emphasis_mode` | the WebUI's "Emphasis mode" (Original, No norm, Ignore, None) of a generation |
| `embeddings` | textual-inversion files found by name, as the WebUI finds them |
| `styles` | the WebUI's prompt styles (`styles.csv`) and how they join a prompt |
"""
