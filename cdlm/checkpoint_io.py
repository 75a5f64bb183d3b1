"""Atomic checkpoints: written to a temporary file beside the target, flushed to disk, then
renamed over it, so an interrupted save never leaves a truncated checkpoint to resume from.
(Lightning's own writer stages through the system temp directory and then *copies* across
file systems, which is not atomic.)"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic on POSIX and Windows within one file system
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
