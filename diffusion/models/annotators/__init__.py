"""The networks of the ControlNet extension's model-based preprocessors, on gpustd: each a plain
class built from the annotator file's state dict (its checkpoint names as keys)."""
