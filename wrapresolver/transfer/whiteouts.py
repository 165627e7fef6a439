"""The whiteout rules of the OCI image spec (image-spec/layer.md "Whiteouts"), applied safely.

`.wh.<name>` deletes `<name>` from lower layers, `.wh..wh..opq` empties its directory of
lower-layer content; neither touches what the same layer wrote. A whiteout of the sub_path
or one of its ancestors empties the whole view. Removal goes through `WorkspacePaths`, so a
whiteout can no more reach through a symlink out of the workspace than a write can.
"""

from __future__ import annotations

import os

from wrapresolver.core.limits import shown
from wrapresolver.errors import UnsafeArchiveError
from wrapresolver.transfer.layers import OPAQUE, WHITEOUT_PREFIX
from wrapresolver.transfer.workspacepaths import WorkspacePaths


class Whiteouts(WorkspacePaths):
    """The whiteout entries of a layer, for `apply.Extractor`."""

    def _whiteout(self, parent: str, base: str, name: str) -> None:
        """The entry `name` (`parent`/`base`, cleaned) is a whiteout: remove what it names."""
        self._settle()  # a whiteout removes or lists what is there
        if base == OPAQUE:
            if self._covers_view(parent):
                self._clear_view()
                return
            local = self._local(parent)
            if local is None:
                return
            directory = self._real_dir(local, name)
            for child in os.listdir(directory):
                child_local = f"{local}/{child}" if local else child
                if child_local not in self._written:
                    self._remove(os.path.join(directory, child))
            return
        victim_name = base[len(WHITEOUT_PREFIX):]
        if victim_name in ("", ".", ".."):
            raise UnsafeArchiveError(f"layer whiteout {shown(name)} names no valid entry; refusing it")
        victim = f"{parent}/{victim_name}" if parent else victim_name
        if self._covers_view(victim):
            self._clear_view()
            return
        local = self._local(victim)
        if local is None or local in self._written:
            return
        real_parent = self._parent_dir(local, name)
        self._remove(os.path.join(real_parent, victim_name))

    def _clear_view(self) -> None:
        """An ancestor of sub_path was deleted: everything from lower layers goes."""
        keep = {path.split("/", 1)[0] for path in self._written}
        for child in os.listdir(self._root):
            if child not in keep:
                self._remove(os.path.join(self._root, child))
