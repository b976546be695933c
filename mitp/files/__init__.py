"""Files that survive a kill: atomic writes, which outputs a command may replace, whether a path stays
inside a folder, resumable downloads and hashing, progress bars. Torch-free; imports only mitp.errors."""
