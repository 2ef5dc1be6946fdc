"""Maintainers' tools (not runtime code): the shapes data set and the bundled model's trainer."""
