"""Baking: plan a bake, run its shard tasks, commit the new cache version."""
