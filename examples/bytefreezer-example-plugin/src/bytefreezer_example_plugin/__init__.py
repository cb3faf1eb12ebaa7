"""An example bytefreezer transform plugin."""
