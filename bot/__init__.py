"""Fluxcord: a Discord bot for FLUX.2 image generation and editing."""
