"""stabkit: how deep networks lose spatial information, measured layer by layer."""
__version__ = "0.1.0"
