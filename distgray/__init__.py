"""distgray: convert very large colour images to grayscale across many worker processes and machines."""

__version__ = "0.1.0"
