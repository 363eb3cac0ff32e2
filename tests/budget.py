"""How hard the property tests search: the normal budget, or the mutation run's.

Mutation testing (scripts/mutation.sh) reruns the tests that reach a mutated function
once per mutant, a thousand times and more; at the normal budget that does not fit
CI. With ``BERTH_HYPOTHESIS_PROFILE=mutation`` every property test searches a tenth
as far, derandomized and without shrinking, so a mutant's verdict is the same on
every run. Unset, the suite keeps its own settings.
"""

from __future__ import annotations

import os

from hypothesis import Phase, settings

PROFILE_VARIABLE = "BERTH_HYPOTHESIS_PROFILE"
MUTATION = "mutation"

# No shrinking: a mutant is killed by the first failing example; shrinking it (many
# seconds per killed mutant) only makes a nicer report, which nobody reads here.
settings.register_profile(MUTATION, max_examples=10, derandomize=True, database=None,
                          deadline=None, phases=(Phase.explicit, Phase.generate))

_profile = os.environ.get(PROFILE_VARIABLE)
if _profile is not None:
    if _profile != MUTATION:
        raise RuntimeError(f"{PROFILE_VARIABLE}={_profile!r} is not a known profile "
                           f"(known: {MUTATION!r})")
    settings.load_profile(_profile)


def examples(normal: int) -> int:
    """The ``max_examples`` for a test whose normal budget is ``normal``."""
    if _profile == MUTATION:
        return max(10, normal // 10)
    return normal
