"""Committed caches: layout, manifest, fingerprints, verification, and reading them back."""
