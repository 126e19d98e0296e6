"""How much of a prompt's droppable parts fit the token budget.

Two droppable sequences, in the order the format's `truncate` names them: `first` loses its
oldest pieces before `second` loses any; with `cut` the newest piece of `second` may lose its
oldest tokens last (a single huge dialogue turn).
"""
from __future__ import annotations

SEPARATOR_TOKENS = 2  # each piece costs its tokens plus a separator or two


def fill_newest(room: int, tokens: list[int]) -> tuple[int, int]:
    """How many of the newest pieces fit in `room`, and the room they use."""
    kept, used = 0, 0
    for n in reversed(tokens):
        if used + n + SEPARATOR_TOKENS > room:
            break
        kept, used = kept + 1, used + n + SEPARATOR_TOKENS
    return kept, used


def plan_fit(room: int, first: list[int], second: list[int], cut: bool = True,
             ) -> tuple[int, int, int]:
    """(first pieces kept, second pieces kept, tokens to cut) estimated from piece sizes."""
    second_cost = sum(second) + SEPARATOR_TOKENS * len(second)
    if second_cost <= room:
        return fill_newest(room - second_cost, first)[0], len(second), 0
    keep_second, _ = fill_newest(room, second)
    if keep_second or not second:
        return 0, keep_second, 0
    if not cut:
        return 0, 0, 0
    # Not even the newest piece fits whole: keep it, cut to its most recent text.
    return 0, 1, max(0, second[-1] + SEPARATOR_TOKENS - room)


def step_down(keep: list[int], over: int, cut: bool, newest: int = 0) -> bool:
    """One step further after an exact check found the prompt `over` tokens too long.

    `keep` = [first kept, second kept, cut tokens], changed in place; `newest`: the tokens of
    second's newest piece. False when nothing is left to take away (a turn already cut to
    nothing cannot be cut further).
    """
    if keep[0]:
        keep[0] -= 1
    elif keep[1] > 1 or (keep[1] == 1 and not cut):
        keep[1] -= 1
    elif keep[1] == 1 and keep[2] < newest:
        keep[2] += over
    else:
        return False
    return True
