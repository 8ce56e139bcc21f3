"""Constants shared with the original Yi-VL release (VL/llava/model/constants.py)."""

IGNORE_INDEX = -100
"""Label value that the loss skips."""

IMAGE_TOKEN_INDEX = -200
"""Sentinel id that stands for one image's patch features in a token sequence."""

IMAGE_PLACEHOLDER = "<image_placeholder>"
"""The literal text that marks where an image goes in a prompt."""

STOP_STRING = "###"
"""Generation stops when the decoded answer contains this; it is stripped from the answer."""
