"""Reading the official InST ``embeddings.pt`` files, safely.

The official file is a pickle of ``{"string_to_token": {"*": tensor(265)}, "attention": <Attentions module>}``:
the whole module pickled by class reference. It is read with torch's weights-only unpickler, with inert
stand-ins for exactly the five classes such a file references (see ``OFFICIAL_CLASSES``); anything else is
refused, and nothing in the file is ever executed. The weights are then taken from the stand-ins' state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipelines.core.checkpoints import inert_module_state_dict, load_checkpoint
from pipelines.core.errors import MethodUnavailableError
from pipelines.inst.mapper import StyleMapper

OFFICIAL_CLASSES = (
    "ldm.modules.embedding_manager.Attentions",
    "ldm.modules.attention.CrossAttention",
    "torch.nn.modules.linear.Linear",
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.dropout.Dropout",
)


@dataclass
class OfficialEmbeddings:
    mapper: StyleMapper
    placeholder: str
    placeholder_id: int
    saved_in_training_mode: bool  # official files are saved mid-training (dropout would be active if used so)


def load_official_embeddings(path: str | os.PathLike[str]) -> OfficialEmbeddings:
    """The mapper of an official InST ``embeddings.pt`` (its width is read from the weights)."""
    data = load_checkpoint(path, what="InST embeddings file", stand_ins=OFFICIAL_CLASSES)
    if "attention" not in data or "string_to_token" not in data:
        raise MethodUnavailableError(
            f"{os.fspath(path)} is not an InST embeddings file (it has {sorted(data)[:5]}, "
            "expected 'string_to_token' and 'attention')."
        )
    state = inert_module_state_dict(data["attention"])
    if "net.1.weight" not in state or "attn2.to_v.weight" not in state:
        raise MethodUnavailableError(f"{os.fspath(path)} holds no InST mapper weights.")
    dim = state["net.1.weight"].shape[0]
    inner = state["attn2.to_v.weight"].shape[0]
    heads = int(getattr(data["attention"].state.get("_modules", {}).get("attn2"), "state", {}).get("heads", 8))
    mapper = StyleMapper(dim=dim, heads=heads, head_dim=inner // heads)
    try:
        mapper.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise MethodUnavailableError(f"{os.fspath(path)} has unexpected mapper weights: {exc}") from None
    (placeholder, token), *_ = data["string_to_token"].items()
    return OfficialEmbeddings(
        mapper=mapper.eval(),
        placeholder=placeholder,
        placeholder_id=int(token),
        saved_in_training_mode=bool(data["attention"].state.get("training", False)),
    )
