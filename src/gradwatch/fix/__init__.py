"""Remedies the diagnosis prescribes: adaptive gradient clipping and critical initialisation."""

from __future__ import annotations

from gradwatch.fix.clip import AutoClip, ZClip, agc_
from gradwatch.fix.init import CriticalInit, critical_init_

__all__ = ["AutoClip", "CriticalInit", "ZClip", "agc_", "critical_init_"]
