"""Fetch sources: Copernicus Marine, local files and the built-in North Sea twin.

Each writes the raw layout of :mod:`seacast.raw`; :func:`seacast.fetch.fetch` drives them.
"""
