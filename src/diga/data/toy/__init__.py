"""The embedded toy benchmark: a procedurally generated synthetic→real-like street-scene domain pair."""

from diga.data.toy.generator import DomainStyle, ToySpec, ensure_toy_dataset, render_scene

__all__ = ["DomainStyle", "ToySpec", "ensure_toy_dataset", "render_scene"]
