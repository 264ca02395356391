"""Defaults shared by the command line and the modules that apply them.

No imports: the command line parses its flags, binds its port and starts local workers before
NumPy and Pillow are loaded, so the workers' start-up overlaps the master's.
"""

DEFAULT_PORT = 5003
DEFAULT_DASHBOARD_PORT = 5006
HEARTBEAT_INTERVAL_S = 2.0
HEARTBEAT_TIMEOUT_S = 20.0
#: Pillow's own decompression-bomb threshold; ``--max-pixels`` raises it.
DEFAULT_MAX_PIXELS = 89_478_485
DEFAULT_JPEG_QUALITY = 95
DEFAULT_PNG_LEVEL = 6  # zlib level; Pillow's default
#: Batches: images up to this many pixels go to one worker whole (24 MP: a 6K photo; 8K goes in strips).
WHOLE_FILE_MAX_PIXELS = 24_000_000
#: The usual file extension of each output format.
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp", "GIF": ".gif"}
