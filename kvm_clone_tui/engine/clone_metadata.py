"""The clone's own ``kvmclone:clone`` metadata, written into its persistent definition."""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from kvm_clone_tui.engine.domain_rewrite import KVMCLONE_NS, read_clone_metadata
from kvm_clone_tui.engine.host_port import Host


async def replace_clone_metadata(dst: Host, uuid: str, attributes: dict[str, str]) -> None:
    """Write the clone's ``kvmclone:clone`` metadata (persistent definition only)."""
    await set_clone_metadata(dst, uuid, attributes, replace=True)


async def set_clone_metadata(
    dst: Host,
    uuid: str,
    updates: dict[str, str],
    remove: tuple[str, ...] = (),
    *,
    replace: bool = False,
) -> None:
    """Merge ``updates`` into the clone's ``kvmclone:clone`` metadata (persistent definition),
    dropping the ``remove`` keys; ``replace``: write ``updates`` alone."""

    def edit(inactive_xml: str) -> str:
        meta = {} if replace else read_clone_metadata(inactive_xml)
        meta.update(updates)
        for key in remove:
            meta.pop(key, None)
        return "<clone " + " ".join(f"{k}={quoteattr(v)}" for k, v in meta.items()) + "/>"

    await dst.edit_metadata(uuid, "kvmclone", KVMCLONE_NS, edit)
