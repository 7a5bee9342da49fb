"""LightningModules: wiring of backbone, head and loss, no maths of their own."""

from stablerep_pl.methods.base import BaseMethod
from stablerep_pl.methods.stablerep import StableRep
from stablerep_pl.methods.stablerep_plus import StableRepPlus
from stablerep_pl.methods.stablerep_queue import StableRepQueue

__all__ = ["BaseMethod", "StableRep", "StableRepPlus", "StableRepQueue"]
