"""The release, in one place: the package metadata, `fluxcord --version`, the start-up log,
`/about` and `/readyz` all read it from here."""

__version__ = "0.2.0"
