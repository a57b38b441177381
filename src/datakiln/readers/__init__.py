"""Readers: listing raw inputs and decoding one input, turning each bad one into a rejection.

Internal to the bake (the public entry point is ``datakiln.bake``); the modules are named
here so that what each one offers is found in one place. ``sources`` holds the container
formats of records bakes (tables, tar, zip) and :func:`~datakiln.register_source`.
"""

# Modules, not names: importing them here would load Pillow and soundfile for every reader.
__all__ = ["audio", "encoding", "image", "listing", "rejections", "sources", "text"]
