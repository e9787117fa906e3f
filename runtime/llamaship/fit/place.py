"""Place a model's layers on GPUs by free VRAM, as llama.cpp offloads them.

llama.cpp offloads the *last* `n_gpu_layers` of `n_layer + 1` layers (the extra one is the
output layer) and hands them to the GPUs in order, in proportion to `tensor_split`. Each layer
takes its weights and its KV cache to its GPU; each GPU in use also needs a compute buffer.

The GPUs share the layers in proportion to their free memory, as llama.cpp splits them when
given no split; a GPU that would not keep its margin free hands layers, one at a time, to the
GPU with the most room left.
"""

from __future__ import annotations

from dataclasses import dataclass

from llamaship.fit.estimate import ModelShape
from llamaship_contract.fit import DevicePlan

MIB = 1 << 20


@dataclass(frozen=True)
class Gpu:
    """A GPU as the placement sees it: CUDA order, free memory in bytes."""

    index: int
    name: str
    uuid: str | None
    free_bytes: int


@dataclass(frozen=True)
class Placement:
    """Layers per GPU and what each device holds."""

    n_gpu_layers: int  # -1 when every layer, the output layer included, is offloaded
    layers_per_gpu: tuple[int, ...]
    devices: tuple[DevicePlan, ...]

    @property
    def tensor_split(self) -> tuple[float, ...] | None:
        """Shares per GPU for `Llama(tensor_split=...)`; None with one GPU."""
        if len(self.layers_per_gpu) < 2 or not any(self.layers_per_gpu):
            return None
        return tuple(float(count) for count in self.layers_per_gpu)

    @property
    def main_gpu(self) -> int:
        """The GPU that holds the most layers."""
        if not self.layers_per_gpu:
            return 0
        return max(range(len(self.layers_per_gpu)), key=lambda gpu: self.layers_per_gpu[gpu])


def _layer_costs(shape: ModelShape, n_ctx: int) -> list[tuple[int, int]]:
    """(weight, KV) bytes of each offloadable layer; the output layer last."""
    kv = shape.layer_kv_bytes(n_ctx)
    costs = [(weights, kv[il]) for il, weights in enumerate(shape.block_bytes)]
    costs.append((shape.gpu_output_bytes, 0))
    return costs


def _shares(n_layers: int, weights: list[int]) -> list[int]:
    """`n_layers` in proportion to `weights`: largest remainders, ties to the larger weight."""
    total = sum(weights)
    counts = [n_layers * weight // total for weight in weights]
    order = sorted(
        range(len(weights)),
        key=lambda gpu: (-(n_layers * weights[gpu] % total), -weights[gpu], gpu),
    )
    for gpu in order[: n_layers - sum(counts)]:
        counts[gpu] += 1
    return counts


def _loads(costs: list[tuple[int, int]], counts: list[int]) -> list[int]:
    """Bytes each GPU holds when the GPUs take `counts` consecutive layers of `costs`, in order."""
    loads, first = [], 0
    for count in counts:
        loads.append(sum(weights + kv for weights, kv in costs[first : first + count]))
        first += count
    return loads


def _split(
    costs: list[tuple[int, int]], free: list[int], capacities: list[int]
) -> list[int] | None:
    """Layers per GPU in proportion to `free`, each within its capacity; None if none fits."""
    if sum(weights + kv for weights, kv in costs) > sum(capacities):
        return None
    counts = _shares(len(costs), free)
    smallest = min(weights + kv for weights, kv in costs)
    for _ in range(len(costs) * len(capacities)):
        loads = _loads(costs, counts)
        over = [gpu for gpu, load in enumerate(loads) if load > capacities[gpu]]
        if not over:
            return counts
        room = [capacity - load for capacity, load in zip(capacities, loads, strict=True)]
        target = max(range(len(capacities)), key=lambda gpu: room[gpu])
        if room[target] < smallest:
            return None
        counts[over[0]] -= 1
        counts[target] += 1
    return None


def place(shape: ModelShape, n_ctx: int, gpus: list[Gpu], margin_bytes: int) -> Placement:
    """The most layers that fit the GPUs' free memory less `margin_bytes` each."""
    costs = _layer_costs(shape, n_ctx)
    compute = shape.compute_bytes(n_ctx)
    free = [max(gpu.free_bytes, 0) for gpu in gpus]
    capacities = [max(gpu.free_bytes - margin_bytes - compute, 0) for gpu in gpus]
    counts: list[int] = [0] * len(gpus)
    offloaded = 0
    for n_offloaded in range(len(costs), 0, -1) if any(capacities) else ():
        split = _split(costs[len(costs) - n_offloaded :], free, capacities)
        if split is not None:
            counts, offloaded = split, n_offloaded
            break
    first = len(costs) - offloaded
    devices: list[DevicePlan] = []
    layer = first
    for gpu, count in zip(gpus, counts, strict=True):
        chunk = costs[layer : layer + count]
        layer += count
        weights = sum(cost[0] for cost in chunk)
        kv = sum(cost[1] for cost in chunk)
        reserve = compute if count else 0
        devices.append(
            DevicePlan(
                index=gpu.index,
                name=gpu.name,
                uuid=gpu.uuid,
                layers=count,
                model_bytes=weights,
                kv_bytes=kv,
                compute_bytes=reserve,
                planned_bytes=weights + kv + reserve,
                free_bytes=gpu.free_bytes,
            )
        )
    host_blocks = range(min(first, shape.n_layer))
    host_weights = shape.input_bytes + sum(shape.block_bytes[il] for il in host_blocks)
    if offloaded == 0:  # the output layer stays on the host too
        host_weights += shape.output_bytes
    host_kv = sum(costs[il][1] for il in host_blocks)
    host_compute = 0 if offloaded else compute
    devices.append(
        DevicePlan(
            index=-1,
            name="Host",
            layers=first,
            model_bytes=host_weights,
            kv_bytes=host_kv,
            compute_bytes=host_compute,
            planned_bytes=host_weights + host_kv + host_compute,
        )
    )
    n_gpu_layers = -1 if offloaded == len(costs) else offloaded
    return Placement(
        n_gpu_layers=n_gpu_layers, layers_per_gpu=tuple(counts), devices=tuple(devices)
    )
