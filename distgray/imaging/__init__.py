"""Pure pixels and codecs: the luma kernel, loading and saving (atomic), PNG and JPEG strips, streamed
decoders. NumPy and Pillow only; no sockets, threads or wire messages.
"""
