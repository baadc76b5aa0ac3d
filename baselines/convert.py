"""Convert state dicts between the baselines' authors' layouts and fusionkit's modules.

The baselines compute their authors' forward passes, but some parameters are laid out differently:

* MulT and MISA: fusionkit's attention has ``to_q (d, d)`` and ``to_kv (2d, d)`` where the authors' (fairseq's /
  ``nn.MultiheadAttention``'s) attention has one packed ``in_proj_weight (3d, d)`` (rows: q, k, v) and
  ``in_proj_bias (3d,)``; ``to_out`` is their ``out_proj``. MulT's per-layer ``layer_norms.0`` / ``layer_norms.1``
  are ``norm_target`` / ``norm_ffn``; MISA's layers are named by the ``add_module`` names of its ``Sequential``\\ s.
* LMF: ``fusion.factors.{0,1,2}`` are the authors' ``audio_factor``, ``video_factor``, ``text_factor``.
* TFN: ``output_range`` / ``output_shift`` are buffers here and frozen ``Parameter``\\ s there (same keys).
* MAG-BERT: the encoder is ``encoder.model`` (``bert`` there) and the gate ``encoder.injection`` (``bert.MAG``).

::

    authors = baselines.convert.to_authors_state_dict(model)        # authors' keys → tensors
    left = baselines.convert.load_authors_state_dict(model, authors)  # loads; returns the keys left unchanged

Keys with no counterpart are listed, never guessed: the "(B)" models' BERT text path has no counterpart in
the GloVe-based TFN, LMF and MulT checkpoints (``encoder.*`` stays as it is; pass ``skip`` prefixes for other
fusionkit keys whose authors' tensors have another shape, e.g. ``text_subnet.`` when the authors' text
sub-network read LSTM states); authors' tensors that fusionkit omits (MulT's ``version`` buffers, MISA's unused
``sp_discriminator``, the GloVe LSTMs) are dropped on import and reported by :func:`from_authors_state_dict`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

IN_PROJ_WEIGHT, IN_PROJ_BIAS = "in_proj_weight", "in_proj_bias"


class ConversionError(ValueError):
    """An authors' state dict does not fit the fusionkit module (missing, unexpected or misshapen tensors)."""


@dataclass
class Layout:
    """How one fusionkit model's state dict maps onto its authors' layout.

    names: fusionkit key → authors' key, for tensors stored alike.
    packed: fusionkit attention prefix (``…attn.``) → authors' attention prefix (``…self_attn.``), for the
        ``to_q`` + ``to_kv`` ↔ ``in_proj_*`` pairs.
    fusionkit_only: fusionkit keys with no authors' counterpart.
    authors_only: regular expressions of authors' keys fusionkit has no counterpart for (dropped on import).
    authors_extra: authors' tensors (buffers) to emit on export, key → tensor.
    """

    names: dict[str, str] = field(default_factory=dict)
    packed: dict[str, str] = field(default_factory=dict)
    fusionkit_only: list[str] = field(default_factory=list)
    authors_only: list[str] = field(default_factory=list)
    authors_extra: dict[str, torch.Tensor] = field(default_factory=dict)


def _attention_prefixes(keys) -> list[str]:
    return sorted({k[: -len("to_q.weight")] for k in keys if k.endswith("attn.to_q.weight")})


# -- per-model layouts -------------------------------------------------------------------------------------
_MULT_LAYER = {"norm_target": "layer_norms.0", "norm_ffn": "layer_norms.1", "ffn.fc1": "fc1", "ffn.fc2": "fc2",
               "attn.to_out": "self_attn.out_proj"}


def _mult_layout(model) -> Layout:
    layout = Layout(authors_only=[r"^trans_\w+\.version$", r"^trans_\w+\.embed_positions\._float_tensor$",
                                  r"^trans_[lav]_mem\."])
    sd = model.state_dict()
    blocks = {f"trans.{name}.": f"trans_{name}." for name in model.trans} | {
        f"mem.{name}.": f"trans_{name}_mem." for name in model.mem}
    for key in sd:
        if key.startswith("encoder."):
            layout.fusionkit_only.append(key)
            continue
        match = re.match(r"^proj\.([lav])\.conv\.weight$", key)
        if match:
            layout.names[key] = f"proj_{match.group(1)}.weight"
            continue
        for fk, au in blocks.items():
            if not key.startswith(fk):
                continue
            rest = key[len(fk):]
            layer = re.match(r"^layers\.(\d+)\.(.+)$", rest)
            if rest.startswith("layer_norm."):
                layout.names[key] = au + rest
            elif layer and not layer.group(2).startswith(("attn.to_q.", "attn.to_kv.")):
                module, _, leaf = layer.group(2).rpartition(".")
                layout.names[key] = f"{au}layers.{layer.group(1)}.{_MULT_LAYER[module]}.{leaf}"
            elif not layer:
                raise ConversionError(f"MulT key {key!r} has no known authors' counterpart")
            break
        else:
            if re.match(r"^(proj1|proj2|out_layer)\.", key):
                layout.names[key] = key
            elif not re.match(r"^trans\.|^mem\.", key):
                raise ConversionError(f"MulT key {key!r} has no known authors' counterpart")
    for prefix in _attention_prefixes(sd):
        block = next(fk for fk in blocks if prefix.startswith(fk))
        layer = re.match(r"^layers\.(\d+)\.attn\.$", prefix[len(block):])
        layout.packed[prefix] = f"{blocks[block]}layers.{layer.group(1)}.self_attn."
    for fk, au in blocks.items():
        layout.authors_extra[au + "version"] = torch.tensor([2.0])
        layout.authors_extra[au + "embed_positions._float_tensor"] = torch.zeros(1)
    # the authors always build proj_l/a/v and skip them when a modality already has the model width
    for m, projection in model.proj.items():
        if projection.conv is None:
            layout.authors_extra[f"proj_{m}.weight"] = torch.eye(projection.d_in).unsqueeze(-1)
            layout.authors_only.append(rf"^proj_{m}\.weight$")
    return layout


_MISA_SEQUENCE = {"visual_encoder": "v", "acoustic_encoder": "a"}
_MISA_PRIVATE_INDEX = {"t": 1, "v": 1, "a": 3}  # the authors' add_module names: private_t_1, private_v_1, private_a_3


def _misa_layout(model) -> Layout:
    layout = Layout(authors_only=[r"^sp_discriminator\.", r"^tlayer_norm\.", r"^trnn[12]\.", r"^embed\.",
                                  r"^bertmodel\.pooler\."])
    sd = model.state_dict()
    for key in sd:
        parts = key.split(".")
        au = None
        if key.startswith("encoder.model."):
            au = "bertmodel." + key[len("encoder.model."):]
        elif parts[0] in _MISA_SEQUENCE:
            m = _MISA_SEQUENCE[parts[0]]
            au = f"{m}layer_norm.{parts[2]}" if parts[1] == "layer_norm" else f"{m}{parts[1]}.{'.'.join(parts[2:])}"
        elif parts[:2] == ["shared_private", "project"]:
            m, index, leaf = parts[2], parts[3], parts[4]
            au = f"project_{m}.project_{m}.{leaf}" if index == "0" else f"project_{m}.project_{m}_layer_norm.{leaf}"
        elif parts[:2] == ["shared_private", "private"]:
            m, leaf = parts[2], parts[4]
            au = f"private_{m}.private_{m}_{_MISA_PRIVATE_INDEX[m]}.{leaf}"
        elif parts[:2] == ["shared_private", "shared"]:
            au = f"shared.shared_1.{parts[3]}"
        elif parts[:2] == ["shared_private", "recon"]:
            au = f"recon_{parts[2]}.recon_{parts[2]}_1.{parts[3]}"
        elif parts[:2] == ["fusion", "transformer"]:
            module = ".".join(parts[2:-1])
            table = {"attn.to_out": "self_attn.out_proj", "norm1": "norm1", "norm2": "norm2", "ffn.fc1": "linear1",
                     "ffn.fc2": "linear2"}
            if module in table:
                au = f"transformer_encoder.layers.0.{table[module]}.{parts[-1]}"
            elif module in ("attn.to_q", "attn.to_kv"):
                continue
        elif parts[:2] == ["fusion", "fusion"]:
            au = f"fusion.fusion_layer_{1 if parts[2] == '0' else 3}.{parts[3]}"
        elif parts[:2] == ["discriminator", "net"]:
            au = f"discriminator.discriminator_layer_{1 if parts[2] == '0' else 2}.{parts[3]}"
        if au is None:
            raise ConversionError(f"MISA key {key!r} has no known authors' counterpart")
        layout.names[key] = au
    layout.packed["fusion.transformer.attn."] = "transformer_encoder.layers.0.self_attn."
    return layout


def _tfn_lmf_layout(model, factors: bool) -> Layout:
    layout = Layout(authors_only=[r"^text_subnet\.rnn\."])
    for key in model.state_dict():
        if key.startswith("encoder."):
            layout.fusionkit_only.append(key)
        elif factors and key.startswith("fusion.factors."):
            layout.names[key] = ("audio_factor", "video_factor", "text_factor")[int(key.rsplit(".", 1)[1])]
        elif factors and key.startswith("fusion."):
            layout.names[key] = key[len("fusion."):]
        else:
            layout.names[key] = key
    return layout


def _mag_layout(model) -> Layout:
    layout = Layout(authors_only=[] if model.pooler is not None else [r"^bert\.pooler\."])
    for key in model.state_dict():
        if key.startswith("encoder.model."):
            au = "bert." + key[len("encoder.model."):]
        elif key.startswith("encoder.injection."):
            au = "bert.MAG." + key[len("encoder.injection."):]
        elif key.startswith("pooler."):
            au = "bert." + key
        elif key.startswith("classifier."):
            au = key
        else:
            raise ConversionError(f"MAG-BERT key {key!r} has no known authors' counterpart")
        layout.names[key] = au
    return layout


def layout_of(model: nn.Module) -> Layout:
    """The :class:`Layout` of a fusionkit baseline (``tfn``, ``lmf``, ``mult``, ``misa``, ``mag``/``mag_mmsa``)."""
    from baselines.lmf import LMF
    from baselines.mag_bert import MAGBert
    from baselines.misa import MISA
    from baselines.mult import MulT
    from baselines.tfn import TFN

    if isinstance(model, MulT):
        return _mult_layout(model)
    if isinstance(model, MISA):
        return _misa_layout(model)
    if isinstance(model, LMF):
        return _tfn_lmf_layout(model, factors=True)
    if isinstance(model, TFN):
        return _tfn_lmf_layout(model, factors=False)
    if isinstance(model, MAGBert):
        return _mag_layout(model)
    raise ConversionError(
        f"no authors' layout is known for {type(model).__name__}; converters exist for TFN, LMF, MulT, MISA and "
        f"MAG-BERT (MHMF-BERT's authors published no code and ICCN's published notebooks save no state dict; their "
        f"state dicts are fusionkit's own)"
    )


# -- conversion --------------------------------------------------------------------------------------------
def to_authors_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s tensors under its authors' keys (packed attention projections, their names, their buffers).

    ``encoder.*`` of the models whose authors used GloVe (TFN, LMF, MulT) has no counterpart and is left out.
    """
    layout = layout_of(model)
    sd = model.state_dict()
    out = {au: sd[fk].detach().clone() for fk, au in layout.names.items()}
    for fk, au in layout.packed.items():
        out[au + IN_PROJ_WEIGHT] = torch.cat([sd[fk + "to_q.weight"], sd[fk + "to_kv.weight"]]).detach().clone()
        if fk + "to_q.bias" in sd:
            out[au + IN_PROJ_BIAS] = torch.cat([sd[fk + "to_q.bias"], sd[fk + "to_kv.bias"]]).detach().clone()
    for key, value in layout.authors_extra.items():
        out.setdefault(key, value.clone())
    return out


@dataclass
class Imported:
    """Result of :func:`from_authors_state_dict`: the fusionkit-keyed tensors, the authors' keys dropped (no
    counterpart) and the fusionkit keys not covered (left as they are when loaded)."""

    state_dict: dict[str, torch.Tensor]
    dropped: list[str]
    not_covered: list[str]


def from_authors_state_dict(model: nn.Module, authors: dict[str, torch.Tensor], *,
                            skip: Sequence[str] = ()) -> Imported:
    """Map an authors'-layout state dict onto ``model``'s keys, checking every shape first.

    ``skip``: fusionkit key prefixes to leave out (their authors' tensors are dropped). Raises
    :class:`ConversionError` naming every missing, unexpected or misshapen tensor before anything is returned.
    """
    layout = layout_of(model)
    own = model.state_dict()
    skip = tuple(skip)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing, misshapen = [], []

    def take(fk: str, au: str, value: torch.Tensor | None = None) -> None:
        if value is None:
            if au not in authors:
                missing.append(au)
                return
            used.add(au)
            value = authors[au]
        if tuple(value.shape) != tuple(own[fk].shape):
            misshapen.append(f"{au} {tuple(value.shape)} → {fk} {tuple(own[fk].shape)}")
            return
        out[fk] = value.detach().clone().to(own[fk].dtype)

    for fk, au in layout.names.items():
        if fk.startswith(skip):
            used.add(au)
            continue
        take(fk, au)
    for fk, au in layout.packed.items():
        dim = own[fk + "to_q.weight"].shape[0]
        for kind, suffix in ((IN_PROJ_WEIGHT, "weight"), (IN_PROJ_BIAS, "bias")):
            if fk + f"to_q.{suffix}" not in own:
                continue
            if fk.startswith(skip):
                used.add(au + kind)
                continue
            if au + kind not in authors:
                missing.append(au + kind)
                continue
            used.add(au + kind)
            packed = authors[au + kind]
            if packed.shape[0] != 3 * dim:
                misshapen.append(f"{au + kind} {tuple(packed.shape)}: expected {3 * dim} packed rows (q, k, v)")
                continue
            take(fk + f"to_q.{suffix}", au + kind, packed[:dim])
            take(fk + f"to_kv.{suffix}", au + kind, packed[dim:])
    dropped = [k for k in authors if k not in used and any(re.search(p, k) for p in layout.authors_only)]
    unexpected = [k for k in authors if k not in used and k not in dropped]
    problems = []
    if missing:
        problems.append(f"missing authors' tensors: {', '.join(sorted(missing))}")
    if unexpected:
        problems.append(f"unexpected authors' tensors (no counterpart in {type(model).__name__}): "
                        f"{', '.join(sorted(unexpected))}")
    if misshapen:
        problems.append(f"shape mismatches: {'; '.join(misshapen)} (pass skip=(prefix, …) to leave such parts "
                        f"as they are)")
    if problems:
        raise ConversionError(f"cannot load the authors' state dict into {type(model).__name__}: " + " | ".join(problems))
    not_covered = sorted(k for k in own if k not in out)
    return Imported(state_dict=out, dropped=sorted(dropped), not_covered=not_covered)


def load_authors_state_dict(model: nn.Module, authors: dict[str, torch.Tensor], *,
                            skip: Sequence[str] = ()) -> list[str]:
    """Load an authors'-layout state dict into ``model``; returns the fusionkit keys left unchanged
    (``encoder.*`` for the GloVe-based authors' models, and ``skip``)."""
    imported = from_authors_state_dict(model, authors, skip=skip)
    model.load_state_dict(imported.state_dict, strict=False)
    return imported.not_covered
