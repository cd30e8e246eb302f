"""Command-line keys that were renamed: an old spelling keeps working, with one line saying the new one.

Hydra refuses an override of a key the composed config does not have, before diga runs; so renamed keys are
rewritten in `sys.argv` before Hydra sees them (`diga.train` calls this first).
"""

from __future__ import annotations

import re

from diga.models.factory import DEPRECATED_FLAT_OPTIONS

_FLAT_MODEL_OPTION = re.compile(r"^\+{0,2}model\.(?P<key>\w+)=(?P<value>.*)$", re.DOTALL)


def rewrite_deprecated(args: list[str]) -> tuple[list[str], list[str]]:
    """(the arguments with renamed keys in their new spelling, one notice per rewritten argument).

    `model.embed_dim=768` → `++model.head.embed_dim=768`: model options are nested under the side that takes them
    (`model.backbone.…` / `model.head.…`) since every conf/model/*.yaml spells them that way.
    """
    out, notices = [], []
    for arg in args:
        m = _FLAT_MODEL_OPTION.match(arg)
        if m and m["key"] in DEPRECATED_FLAT_OPTIONS:
            new = f"model.{DEPRECATED_FLAT_OPTIONS[m['key']]}.{m['key']}"
            out.append(f"++{new}={m['value']}")
            notices.append(f"diga: model.{m['key']} is deprecated: use {new}={m['value']}")
        else:
            out.append(arg)
    return out, notices
