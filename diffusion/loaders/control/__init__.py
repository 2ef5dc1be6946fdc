"""Conditioning models beside a UNet: ControlNet, T2I-Adapter, IP-Adapter (with its image
encoder), Depth Anything, and the catalogue of a control-model folder (catalog). Builds on
formats/ and keymaps/."""
