"""The measured choice's rule: which variant the next start runs, given a measurement.

A GPU variant is faster when it generates (tg) at least `GENERATION_MARGIN` times as fast as
the CPU build and evaluates prompts (pp) at least as fast: generation is what a user waits for,
and a GPU that loses on prompts loses on every long conversation. Within the margin the CPU
build wins: it is the build that always works. `LLAMASHIP_VARIANT_CHOICE` overrides the rule:
`gpu` runs the GPU variant the compatibility rule chose, unmeasured; `cpu` runs the CPU build.
"""

from __future__ import annotations

from dataclasses import dataclass

from llamaship.config.values import VariantChoice
from llamaship_contract.measure import MeasuredVariant, VariantMeasurement, VariantSpeed

CHOICE_KEY = "LLAMASHIP_VARIANT_CHOICE"
GENERATION_MARGIN = 1.05


@dataclass(frozen=True)
class Verdict:
    """The variant to run, why (None: the compatibility rule's reason stands), and whether
    to measure the GPU variant once the server is up."""

    variant: MeasuredVariant
    reason: str | None
    measure: bool = False


def _speeds(gpu: VariantSpeed, cpu: VariantSpeed) -> str:
    return (
        f"generation {gpu.tokens_per_second:.1f} against {cpu.tokens_per_second:.1f} tokens/s, "
        f"prompt {gpu.prompt_tokens_per_second:.1f} against "
        f"{cpu.prompt_tokens_per_second:.1f} tokens/s on the CPU build"
    )


def judge_speeds(gpu: VariantSpeed, cpu: VariantSpeed) -> tuple[bool, str]:
    """Whether the GPU run was faster than the CPU run, and one line saying so with numbers."""
    faster = (
        gpu.tokens_per_second >= cpu.tokens_per_second * GENERATION_MARGIN
        and gpu.prompt_tokens_per_second >= cpu.prompt_tokens_per_second
    )
    if faster:
        return True, f"{gpu.variant} measured faster: {_speeds(gpu, cpu)}"
    return False, (
        f"{gpu.variant} measured no faster than the CPU build ({_speeds(gpu, cpu)}); "
        f"running on the CPU build (set {CHOICE_KEY}=gpu to use {gpu.variant} anyway)"
    )


def choose(
    rule_variant: MeasuredVariant,
    choice: VariantChoice,
    *,
    has_model: bool,
    measurement: VariantMeasurement | None,
) -> Verdict:
    """What to run when the compatibility rule chose `rule_variant`.

    `measurement` is the cached one for the configured model, this variant and this driver.
    Unmeasured, the rule's variant runs and is measured once the server is up; without a model
    there is nothing to measure and the rule's choice stands."""
    if rule_variant == "cpu":
        return Verdict("cpu", None)
    if choice == "cpu":
        return Verdict("cpu", f"{CHOICE_KEY}=cpu: running on the CPU build, not {rule_variant}")
    if choice == "gpu":
        return Verdict(rule_variant, f"{CHOICE_KEY}=gpu: running {rule_variant}, unmeasured")
    if not has_model:
        return Verdict(rule_variant, None)
    if measurement is None:
        return Verdict(rule_variant, None, measure=True)
    return Verdict(rule_variant if measurement.faster else "cpu", measurement.reason)
