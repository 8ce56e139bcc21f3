"""Configuration that checks itself: typed schemas of the keys users edit, the shared vocabulary of the
four tools (old spellings included) and the command-line pre-check of the Hydra entry points.

Nothing here imports torch, Lightning or transformers: the checks run before the heavy imports, so a bad
value costs well under a second.
"""
