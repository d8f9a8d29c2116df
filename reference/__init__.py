"""The readable GPT-2 the golden files are generated from (see model.py and layers.py).

Exposes the contract every verifiable implementation provides (../shared/DESIGN.md, harness/spec/contract.py):
init, forward, backward, adamw_step, lr_at, get_batch, generate (sampling.py)."""
from .model import backward, forward, init, param_shapes
from .sampling import generate
from .training import adamw_step, get_batch, lr_at

__all__ = ["init", "forward", "backward", "adamw_step", "lr_at", "get_batch", "generate", "param_shapes"]
