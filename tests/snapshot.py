"""Byte-for-byte snapshots of a directory tree, to show a failed command changed nothing."""

import os


def snapshot(root: str) -> dict[str, bytes]:
  """{relative path: contents} of every file under `root` (empty if it does not exist)."""
  out = {}
  for directory, _, files in os.walk(root):
    for name in files:
      path = os.path.join(directory, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, root)] = f.read()
  return out
