"""Built-in transforms, registered through the `bytefreezer.transforms` entry points."""
