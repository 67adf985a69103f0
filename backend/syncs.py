"""Count what in a stretch of code would make the host wait for the GPU, on any device.

On CUDA, ``torch.cuda.set_sync_debug_mode`` reports synchronisations as they happen; on a CPU
nothing waits, so :class:`SyncGuard` counts the operations that would: reading a value into Python
(``.item()``, ``float()``, ``bool()``, ``.tolist()``, ``.numpy()``) and operations whose output shape
depends on the data (``nonzero``, boolean-mask indexing, ``unique``, ``masked_select``, error checks of
``torch.linalg``). A step that counts zero here has static shapes and never reads the device, so it
can be captured (CUDA graphs) and runs ahead of the GPU.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# ATen operators that read a device value on the host or size their output from the data.
SYNCING_OPS = frozenset({
    "aten._local_scalar_dense",  # .item(), float(), int(), bool()
    "aten.is_nonzero",
    "aten.equal",
    "aten.allclose",
    "aten.nonzero",
    "aten.masked_select",
    "aten.masked_scatter",
    "aten._unique",
    "aten._unique2",
    "aten.unique_dim",
    "aten.unique_consecutive",
    "aten.unique_dim_consecutive",
    "aten._linalg_check_errors",
    "aten.bincount",
    "aten.histc",
})
# Tensor methods that copy device data to the host (no ATen call on a CPU tensor).
SYNCING_METHODS = frozenset({"tolist", "numpy", "__array__"})


def _has_bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(torch.is_tensor(i) and i.dtype == torch.bool for i in (indices or ()))


def _crosses_devices(name: str, args, kwargs) -> bool:
    """A copy between the host and a GPU (a blocking one waits; a pinned non-blocking one need not, but
    counting it keeps steps free of per-step transfers)."""
    if name == "aten._to_copy":
        src, dst = args[0].device, kwargs.get("device")
    else:
        dst, src = args[0].device, args[1].device if torch.is_tensor(args[1]) else None
    if src is None or dst is None:
        return False
    return torch.device(src).type != torch.device(dst).type


class _Functions(TorchFunctionMode):
    def __init__(self, counts: Counter):
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNCING_METHODS:
            self.counts[f"Tensor.{name}"] += 1
        return func(*args, **(kwargs or {}))


class _Operators(TorchDispatchMode):
    def __init__(self, counts: Counter):
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in SYNCING_OPS:
            self.counts[name] += 1
        elif name in ("aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_") \
                and _has_bool_index(args):
            self.counts[f"{name} (boolean mask)"] += 1
        elif name in ("aten._to_copy", "aten.copy_") and _crosses_devices(name, args, kwargs or {}):
            self.counts[f"{name} (between host and device)"] += 1
        elif name == "aten.repeat_interleave" and (kwargs or {}).get("output_size") is None \
                and torch.is_tensor(args[1] if len(args) > 1 else args[0]):
            self.counts["aten.repeat_interleave (sized by the data)"] += 1
        return func(*args, **(kwargs or {}))


class SyncGuard:
    """``with SyncGuard() as guard: ...`` then ``guard.counts`` (operator -> times) and ``guard.total``."""

    def __init__(self):
        self.counts: Counter = Counter()
        self._modes = (_Functions(self.counts), _Operators(self.counts))

    def __enter__(self) -> SyncGuard:
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.counts.values())
