"""The schema: numbered SQL migrations, one folder per database engine (sqlite/, postgres/).

Shipped as package data and read by bot.storage.migrations through importlib.resources.
"""
