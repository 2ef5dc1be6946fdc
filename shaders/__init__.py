"""WGSL sources, one file per kernel family, grouped by area (package data)."""
