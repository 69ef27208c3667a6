"""Poisoning toolkit (work in progress): backdoor triggers of the BiBadDiff paper."""

from alignscope.poison.triggers import (
    TRIGGERS,
    apply_trigger,
    badnets1,
    badnets2,
    wanet,
    wanet_grid,
)

__all__ = ["TRIGGERS", "apply_trigger", "badnets1", "badnets2", "wanet", "wanet_grid"]
