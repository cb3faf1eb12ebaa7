"""Transforms: the contract, the registry, the chain compiler and the built-ins."""

from bytefreezer.transforms.base import (
    Context,
    ObjectSource,
    Output,
    RecordTransform,
    Transform,
    TransformConfig,
)
from bytefreezer.transforms.chain import Chain, ChainResult, compile_chain, validate_chain
from bytefreezer.transforms.condition import Condition
from bytefreezer.transforms.registry import register_transform

__all__ = [
    "Chain",
    "ChainResult",
    "Condition",
    "Context",
    "ObjectSource",
    "Output",
    "RecordTransform",
    "Transform",
    "TransformConfig",
    "compile_chain",
    "register_transform",
    "validate_chain",
]
