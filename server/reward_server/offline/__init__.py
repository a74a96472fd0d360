"""Commands that write a model repository (import, export, tiny models); never run while serving."""
