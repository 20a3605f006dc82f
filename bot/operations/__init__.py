"""Running the bot, for its operator: the web server (webhooks, health, metrics), the
start-up checks, `fluxcord doctor`, the event loop's lag and the configuration reference."""
