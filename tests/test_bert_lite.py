"""fusionkit.load without transformers' model code: LiteBertModel and LiteTokenizer against transformers."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fusionkit
import fusionkit.encoders.bert_lite as bert_lite
from fusionkit.build import build_model
from fusionkit.encoders import BertEncoder, load_tokenizer, resolve_text_model
from fusionkit.encoders.bert_lite import LiteBertConfig, LiteBertModel, LiteTokenizer, lite_tokenizer, unsupported
from fusionkit.testing import tiny_bert_config
from fusionkit.training import checkpoint as ckpt
from fusionkit.training.build import model_description

ROOT = Path(__file__).resolve().parents[1]


def _pair(**overrides):
    """transformers' BertModel (random weights, eval mode) and a LiteBertModel holding the same state dict."""
    from transformers import AutoModel

    config = tiny_bert_config()
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    reference = AutoModel.from_config(config, add_pooling_layer=False).eval()
    lite = LiteBertModel(LiteBertConfig(config.to_dict())).eval()
    expected = {k: v.shape for k, v in reference.state_dict().items()}
    assert {k: v.shape for k, v in lite.state_dict().items()} == expected
    lite.load_state_dict(reference.state_dict(), strict=True)
    return reference, lite


def _inputs(lengths: list[int], seq_len: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 30522, (len(lengths), seq_len), generator=g)
    types = torch.randint(0, 2, (len(lengths), seq_len), generator=g)
    mask = torch.arange(seq_len)[None, :] < torch.tensor(lengths)[:, None]
    return ids, mask.long(), types


def _max_differences(reference, lite, ids, mask, types) -> list[float]:
    with torch.no_grad():
        want = reference(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True,
                         return_dict=True).hidden_states
        got = lite(input_ids=ids, attention_mask=mask, token_type_ids=types).hidden_states
    assert len(got) == len(want) == reference.config.num_hidden_layers + 1
    real = mask.bool()  # padded rows are computed by both but meaningless; compare them too where defined
    return [float((g - w)[real].abs().max()) for g, w in zip(got, want)]


@pytest.mark.parametrize("act", ["gelu", "relu", "gelu_pytorch_tanh"])
def test_every_hidden_state_equals_bert_model(act):
    reference, lite = _pair(hidden_act=act)
    for lengths in ([9, 3, 6, 2], [9, 9]):  # padded, and none padded (no mask at all)
        ids, mask, types = _inputs(lengths, 9)
        assert max(_max_differences(reference, lite, ids, mask, types)) <= 1e-5
    # without token type ids (all zeros)
    with torch.no_grad():
        want = reference(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        got = lite(input_ids=ids, attention_mask=mask).hidden_states
    assert max(float((g - w).abs().max()) for g, w in zip(got, want)) <= 1e-5


@settings(max_examples=15, deadline=None)
@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_hidden_states_equal_for_any_padding(lengths, seed):
    reference, lite = _PAIR
    ids, mask, types = _inputs(lengths, max(lengths), seed)
    assert max(_max_differences(reference, lite, ids, mask, types)) <= 1e-5


_PAIR = _pair()


def test_injection_hook_sees_and_replaces_the_same_hidden_states():
    class Shift(nn.Module):
        def forward(self, hidden, *, shift):
            return hidden + shift

    ids, mask, types = _inputs([7, 4], 7)
    shift = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(1))
    for layer in (0, 2, 4):
        outs = []
        for model in _pair():  # fresh models: each encoder registers its hook on them
            encoder = BertEncoder(model=model, mode="frozen", injection=Shift(), injection_layer=layer)
            outs.append(encoder(ids, mask.bool(), types, injection_inputs={"shift": shift}).hidden_states)
        assert max(float((g - w).abs().max()) for g, w in zip(*outs)) <= 1e-5


@pytest.mark.parametrize("change, reason", [
    ({"hidden_act": "gelu_new"}, "hidden_act 'gelu_new'"),
    ({"is_decoder": True}, "decoder"),
    ({"model_type": "roberta"}, "model_type 'roberta'"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"dtype": "bfloat16"}, "dtype 'bfloat16'"),
    ({"torch_dtype": "float16"}, "dtype 'float16'"),
    ({"chunk_size_feed_forward": 4}, "chunked feed-forward"),
])
def test_unsupported_configurations_are_named(change, reason):
    config = {**tiny_bert_config().to_dict(), **change}
    assert reason in unsupported(config)
    with pytest.raises(ValueError, match="LiteBertModel does not reproduce"):
        LiteBertModel(LiteBertConfig(config))
    assert unsupported(tiny_bert_config().to_dict()) is None


# -- tokenizer -------------------------------------------------------------------------------------------------
SENTENCES = [
    "the movie was really great", "Café naïve résumé façade Ångström São Paulo", "SO BORING!!! wasn't it?",
    "un-be-lievable... (truly) $100 @home #1 50% a&b", "supercalifragilisticexpialidocious qwzxv blorptastic",
    "中文 字符 日本語 한국어", "emoji 😀🎬 ☺ ✓", "[CLS] [SEP] [MASK] [cls] [PAD] [UNK]", "tab\there ctrl\x07char",
    "x" * 120, "Ünïcödé ÀÉÎÕÜ ß œ æ ø", "dr. smith's 3.14 e-mail: a@b.c", "don’t “quoted” ‘single’ — dash",
    " ".join(["word"] * 150), "ﬁ ligature ½ fraction ① circled",
]


def _encode(tokenizer, utterances):
    enc = tokenizer([u.split() for u in utterances], is_split_into_words=True, add_special_tokens=False)
    return [(list(enc["input_ids"][i]), list(enc.word_ids(i))) for i in range(len(utterances))]


def _tokenizer_dir(tmp_path: Path, keep_json: bool, **settings) -> Path:
    src = Path(resolve_text_model(None))
    out = tmp_path / f"tok_{keep_json}_{'_'.join(f'{k}{v}' for k, v in settings.items())}"
    out.mkdir()
    names = ["config.json", "vocab.txt", "special_tokens_map.json"] + (["tokenizer.json"] if keep_json else [])
    for name in names:
        shutil.copy(src / name, out / name)
    config = json.loads((src / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**config, **settings}))
    return out


@pytest.mark.parametrize("keep_json, settings", [
    (True, {}), (False, {}), (True, {"do_lower_case": False}), (False, {"strip_accents": True}),
    (True, {"tokenize_chinese_chars": False, "strip_accents": False}),
])
def test_lite_tokenizer_gives_transformers_ids(tmp_path, keep_json, settings):
    from transformers import AutoTokenizer

    path = _tokenizer_dir(tmp_path, keep_json, **settings)
    lite, why = lite_tokenizer(path)
    assert why is None and isinstance(lite, LiteTokenizer)
    reference = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    assert _encode(lite, SENTENCES) == _encode(reference, SENTENCES)
    assert (lite.cls_token_id, lite.sep_token_id, lite.pad_token_id) == \
        (reference.cls_token_id, reference.sep_token_id, reference.pad_token_id)
    assert len(_encode(lite, [SENTENCES[-2]])[0][0]) > 128  # tokenizer.json's truncation to 128 is not applied


def test_tokenizer_saved_by_transformers_takes_the_light_path(tmp_path):
    from transformers import AutoTokenizer

    saved = tmp_path / "saved"
    load_tokenizer(None).save_pretrained(saved)
    shutil.copy(Path(resolve_text_model(None)) / "config.json", saved / "config.json")
    lite, why = lite_tokenizer(saved)
    assert why is None
    assert _encode(lite, SENTENCES) == _encode(AutoTokenizer.from_pretrained(str(saved)), SENTENCES)


def test_added_tokens_beyond_the_special_ones_go_to_transformers(tmp_path):
    decoder = {"0": {"content": "[PAD]", "special": True}, "30522": {"content": "[NEW]", "special": True}}
    path = _tokenizer_dir(tmp_path, True, added_tokens_decoder=decoder)
    assert lite_tokenizer(path)[0] is None and "[NEW]" in lite_tokenizer(path)[1]
    path = _tokenizer_dir(tmp_path, False, added_tokens_decoder={"0": {"content": "[PAD]", "special": True}})
    assert lite_tokenizer(path)[1] is None


_BUNDLED = (lite_tokenizer(resolve_text_model(None))[0], load_tokenizer(None))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=14),
                min_size=1, max_size=6))
def test_lite_tokenizer_matches_on_any_words(words):
    lite, reference = _BUNDLED
    as_lists = [words]
    want = reference(as_lists, is_split_into_words=True, add_special_tokens=False)
    got = lite(as_lists, is_split_into_words=True, add_special_tokens=False)
    assert (list(got["input_ids"][0]), list(got.word_ids(0))) == (list(want["input_ids"][0]), list(want.word_ids(0)))


def test_special_tokens_map_overrides_tokenizer_config_as_in_transformers(tmp_path):
    from transformers import AutoTokenizer

    words = [["the", "🎬", "movie"]]  # the emoji is not in the vocabulary: the unknown token
    for where in ("map", "config"):
        (tmp_path / where).mkdir()
        path = _tokenizer_dir(tmp_path / where, True)
        if where == "map":
            special = json.loads((path / "special_tokens_map.json").read_text())
            (path / "special_tokens_map.json").write_text(json.dumps({**special, "unk_token": "[MASK]"}))
        else:
            config = json.loads((path / "tokenizer_config.json").read_text())
            (path / "tokenizer_config.json").write_text(json.dumps({**config, "unk_token": "[MASK]"}))
        lite, why = lite_tokenizer(path)
        assert why is None
        reference = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        got = lite(words, is_split_into_words=True, add_special_tokens=False)["input_ids"][0]
        want = reference(words, is_split_into_words=True, add_special_tokens=False)["input_ids"][0]
        assert list(got) == list(want)


@pytest.mark.parametrize("settings, reason", [
    ({"unk_token": {"__type": "AddedToken", "content": "[UNK]", "lstrip": False}}, "special tokens with options"),
    ({"do_lower_case": "false"}, "non-boolean normaliser settings"),
    ({"strip_accents": "yes"}, "non-boolean normaliser settings"),
])
def test_tokenizer_settings_it_cannot_read_go_to_transformers(tmp_path, settings, reason):
    assert lite_tokenizer(_tokenizer_dir(tmp_path, True, **settings)) == (None, reason)


def test_other_tokenizer_settings_go_to_transformers(tmp_path):
    path = _tokenizer_dir(tmp_path, True, tokenizer_class="RobertaTokenizer")
    assert lite_tokenizer(path) == (None, "tokenizer_class 'RobertaTokenizer'")
    path = _tokenizer_dir(tmp_path, True, split_special_tokens=True)
    assert lite_tokenizer(path)[1] == "tokenizer_config.json sets split_special_tokens"


# -- fusionkit.load ----------------------------------------------------------------------------------------------
def _checkpoint(tmp_path: Path, name: str = "mhmf", **config_changes) -> Path:
    config = tiny_bert_config()
    for key, value in config_changes.items():
        setattr(config, key, value)
    kwargs = {"bert_config": config, "d_acoustic": 74, "d_visual": 47}
    torch.manual_seed(0)
    model = build_model(name, kwargs)
    best = tmp_path / "run" / "best"
    best.mkdir(parents=True)
    ckpt.save_model_weights(model, best / ckpt.MODEL_WEIGHTS)
    ckpt.write_checked_json(best / ckpt.MODEL_JSON, model_description(name, kwargs, dataset="synthetic",
                                                                      max_seq_length=50))
    return best


UTTERANCES = ["the movie was really great", "so boring", "Café naïve — SUPERCALIFRAGILISTIC!!! [MASK]",
              " ".join(["long"] * 70)]


def _through_transformers(monkeypatch):
    monkeypatch.setattr(bert_lite, "unsupported", lambda config: "forced by the test")
    monkeypatch.setattr(bert_lite, "lite_tokenizer", lambda path: (None, "forced by the test"))


@pytest.mark.filterwarnings("ignore:no acoustic or visual features")
@pytest.mark.parametrize("name", ["mhmf", "mag"])
def test_loaded_model_predicts_as_through_transformers(tmp_path, monkeypatch, name):
    best = _checkpoint(tmp_path, name)
    lite = fusionkit.load(best)
    assert isinstance(lite.model.encoder.model, LiteBertModel) and isinstance(lite.tokenizer, LiteTokenizer)
    scores = lite.predict(UTTERANCES, batch=True, batch_size=3)
    with monkeypatch.context() as m:
        _through_transformers(m)
        reference = fusionkit.load(best)
    assert type(reference.model.encoder.model).__name__ == "BertModel"
    assert scores == pytest.approx(reference.predict(UTTERANCES, batch=True, batch_size=3), abs=1e-5)


def test_unsupported_config_loads_through_transformers_and_says_so(tmp_path, caplog):
    best = _checkpoint(tmp_path, "text", hidden_act="gelu_new")
    with caplog.at_level(logging.DEBUG, logger="fusionkit.inference"):
        predictor = fusionkit.load(best)
    assert type(predictor.model.encoder.model).__name__ == "BertModel"
    assert "text encoder through transformers' BertModel: hidden_act 'gelu_new'" in caplog.text


@pytest.mark.slow
def test_load_and_predict_import_neither_transformers_nor_timm(tmp_path):
    best = _checkpoint(tmp_path)
    code = ("import sys, warnings, fusionkit; warnings.simplefilter('ignore'); "
            f"print(fusionkit.load({str(best)!r}).predict('what a great movie')); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'transformers', 'timm', 'torchvision'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    score, modules = proc.stdout.splitlines()
    float(score)
    assert modules == "[]"


# -- the FFN of the adapters and MISA's fusion layer ---------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    dict(in_features=8, hidden_features=32, act_layer=nn.GELU, drop=(0.0, 0.1)),
    dict(in_features=8, hidden_features=16, act_layer=nn.ReLU, drop=0.3),
    dict(in_features=6, hidden_features=None, out_features=4, act_layer=nn.GELU, drop=(0.2, 0.0)),
])
def test_mlp_is_timms_mlp(kwargs):
    """Same initialisation from the same seed, same parameter names, same outputs (dropout masks included)."""
    from timm.layers import Mlp as TimmMlp

    from fusionkit.components.mlp import Mlp

    torch.manual_seed(3)
    ours = Mlp(**kwargs)
    torch.manual_seed(3)
    theirs = TimmMlp(**kwargs)
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    x = torch.randn(3, 5, kwargs["in_features"])
    for train in (False, True):
        ours.train(train), theirs.train(train)
        torch.manual_seed(4)
        got = ours(x)
        torch.manual_seed(4)
        assert torch.equal(got, theirs(x))

