"""Discord adapters: parse interactions, call the core, render results."""
