"""Built-in trigger types; each is a plugin registered through the `wfsched` entry points."""
