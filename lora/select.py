"""Finding modules by name: the matching rules shared by LoRA targets, trained heads and adapter files.

A module is named by its dotted path from the model root, as `model.named_modules()` gives it, e.g.
`distilbert.transformer.layer.0.attention.q_lin`. A pattern selects a module when

- it equals the path exactly:                      "encoder.layers.0.attention.q_lin"
- it equals a suffix made of WHOLE path components: "q_lin", "attention.q_lin"
- it is a regex prefixed "re:" that fully matches: "re:.*layers\\.[0-2]\\.attention\\.(q|v)_lin"

What is unusual: a plain string suffix is never enough. peft selects `modules_to_save` with
`key.endswith(name)`, so "classifier" also catches `pre_classifier` (peft issue #3755); here "classifier" only
matches a path whose last component is `classifier`.

The insides of a LoRA layer (`q_lin.base_layer`, `q_lin.lora_A`, ...) are never candidates: patterns speak of the
model's own modules, so they select the same modules before and after injection.

A pattern that matches nothing is an error naming the closest module names (difflib), never a silent no-op.
Tested in tests/test_lora.py (suffix rules, regex, error messages).
"""

import difflib
import re
from collections.abc import Iterable, Iterator

from torch import nn

from .layer import LoRALinear

REGEX_PREFIX = "re:"


def model_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(path, module) for every module of `model`, root included as "", without the insides of LoRA layers."""
    inside_lora: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in inside_lora):
            continue
        if isinstance(module, LoRALinear):
            inside_lora.append(name + ".")
        yield name, module


def matches(path: str, pattern: str) -> bool:
    """Does `pattern` select the module at `path`? (rules in the module docstring)"""
    if pattern.startswith(REGEX_PREFIX):
        return re.fullmatch(pattern[len(REGEX_PREFIX):], path) is not None
    return path == pattern or path.endswith("." + pattern)


def check_patterns(patterns: Iterable[str], what: str) -> tuple[str, ...]:
    """Normalise a str or a sequence of str to a tuple, rejecting empty strings and bad regexes."""
    patterns = (patterns,) if isinstance(patterns, str) else tuple(patterns)
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern.strip("."):
            raise ValueError(f"{what} must be module names or 're:' regexes; got {pattern!r}")
        if pattern.startswith(REGEX_PREFIX):
            try:
                re.compile(pattern[len(REGEX_PREFIX):])
            except re.error as err:
                raise ValueError(f"{what} {pattern!r} is not a valid regex: {err}") from None
    return patterns


def close_names(pattern: str, paths: Iterable[str], n: int = 6) -> list[str]:
    """Module paths and last components that look like `pattern` (for error messages)."""
    paths = [p for p in paths if p]
    candidates = sorted(set(paths) | {p.rsplit(".", 1)[-1] for p in paths})
    return difflib.get_close_matches(pattern.removeprefix(REGEX_PREFIX), candidates, n=n, cutoff=0.5)


def select(model: nn.Module, patterns: Iterable[str], what: str) -> list[str]:
    """Paths (in model order) of the modules that the patterns select; each pattern must select one at least.

    `what` names the patterns in error messages ("target", "trainable module").
    """
    patterns = check_patterns(patterns, what)
    paths = [name for name, _ in model_modules(model) if name]
    chosen = [path for path in paths if any(matches(path, pattern) for pattern in patterns)]
    for pattern in patterns:
        if not any(matches(path, pattern) for path in chosen):
            hint = close_names(pattern, paths)
            raise ValueError(f"{what} {pattern!r} matches no module of {type(model).__name__}"
                             + (f"; close names: {', '.join(hint)}" if hint else ""))
    return chosen


def outermost(paths: Iterable[str]) -> list[str]:
    """Drop every path that lies inside another path of the list (keep `classifier`, drop `classifier.0`)."""
    paths = list(dict.fromkeys(paths))
    return [p for p in paths if not any(p.startswith(q + ".") for q in paths if q != p)]


def is_inside(path: str, ancestor: str) -> bool:
    """True when `path` is `ancestor` itself or one of its descendants (whole components)."""
    return ancestor == "" or path == ancestor or path.startswith(ancestor + ".")
