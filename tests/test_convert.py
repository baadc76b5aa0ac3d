"""Authors'-layout state dicts ↔ fusionkit modules (baselines.convert).

Each test builds the authors' parameter layout from its module definition (re-declared here, module by module,
with the authors' attribute names and shapes), fills it with random values, loads it into the fusionkit model,
exports it back and checks that every tensor round-trips exactly and that the authors' module accepts the
export with ``strict=True``.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel

import fusionkit
from baselines.convert import ConversionError, from_authors_state_dict, load_authors_state_dict, to_authors_state_dict
from fusionkit.testing import tiny_bert_config

D_A, D_V = 5, 7
CONFIG = tiny_bert_config()
H = CONFIG.hidden_size


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:  # TFN's frozen output range stays 6 / -3
                p.copy_(torch.randn(p.shape, generator=g))
    return module


def _model(name, **kw):
    torch.manual_seed(1)
    return fusionkit.create(name, bert_config=CONFIG, d_acoustic=D_A, d_visual=D_V, **kw)


def _assert_round_trip(model, authors: nn.Module, expect_left: str | None, skip=()):
    original = {k: v.clone() for k, v in authors.state_dict().items()}
    left = load_authors_state_dict(model, original, skip=skip)
    if expect_left is None:
        assert left == []
    else:
        assert left and all(k.startswith(expect_left) for k in left)
    exported = to_authors_state_dict(model)
    assert set(exported) == set(original)
    for key, value in original.items():
        assert torch.equal(exported[key], value), key
    authors.load_state_dict(exported, strict=True)


# -- MulT (yaohungt/Multimodal-Transformer: modules/transformer.py, modules/multihead_attention.py, src/models.py)
class AuthorsMultiheadAttention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d))
        self.out_proj = nn.Linear(d, d)


class AuthorsPositions(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("_float_tensor", torch.zeros(1))


class AuthorsEncoderLayer(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.self_attn = AuthorsMultiheadAttention(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        self.layer_norms = nn.ModuleList([nn.LayerNorm(d) for _ in range(2)])


class AuthorsTransformerEncoder(nn.Module):
    def __init__(self, d, layers):
        super().__init__()
        self.embed_positions = AuthorsPositions()
        self.layers = nn.ModuleList([AuthorsEncoderLayer(d) for _ in range(layers)])
        self.register_buffer("version", torch.tensor([2.0]))
        self.layer_norm = nn.LayerNorm(d)


class AuthorsMulT(nn.Module):
    def __init__(self, d_l, d_a, d_v, d, layers):
        super().__init__()
        self.proj_l = nn.Conv1d(d_l, d, kernel_size=1, bias=False)
        self.proj_a = nn.Conv1d(d_a, d, kernel_size=1, bias=False)
        self.proj_v = nn.Conv1d(d_v, d, kernel_size=1, bias=False)
        for t, s in [("l", "a"), ("l", "v"), ("a", "l"), ("a", "v"), ("v", "l"), ("v", "a")]:
            setattr(self, f"trans_{t}_with_{s}", AuthorsTransformerEncoder(d, layers))
        for m in "lav":
            setattr(self, f"trans_{m}_mem", AuthorsTransformerEncoder(2 * d, max(layers, 3)))
        self.proj1 = nn.Linear(6 * d, 6 * d)
        self.proj2 = nn.Linear(6 * d, 6 * d)
        self.out_layer = nn.Linear(6 * d, 1)


def test_mult_round_trip_and_packed_attention():
    model = _model("mult", d_model=12, heads=2, layers=2).eval()
    authors = _randomise(AuthorsMulT(H, D_A, D_V, 12, 2))
    _assert_round_trip(model, authors, expect_left="encoder.")  # GloVe in the authors' model: BERT stays
    # q, k, v rows of the packed projection: fusionkit's attention equals nn.MultiheadAttention with them
    a_attn = authors.trans_l_with_a.layers[1].self_attn
    reference = nn.MultiheadAttention(12, 2, batch_first=True).eval()
    with torch.no_grad():
        reference.in_proj_weight.copy_(a_attn.in_proj_weight)
        reference.in_proj_bias.copy_(a_attn.in_proj_bias)
        reference.out_proj.load_state_dict(a_attn.out_proj.state_dict())
    x, s = torch.randn(2, 4, 12), torch.randn(2, 6, 12)
    attn = model.trans["l_with_a"].layers[1].attn
    expected, _ = reference(x, s, s, need_weights=False)
    got = super(type(attn), attn).forward(x, s) if type(attn).__name__ == "FutureMaskedAttention" else attn(x, s)
    assert torch.allclose(got, expected, atol=1e-5)


# -- MISA (declare-lab/MISA: src/models.py, BERT text path)
def _seq(*named):
    block = nn.Sequential()
    for name, module in named:
        block.add_module(name, module)
    return block


class AuthorsMISA(nn.Module):
    def __init__(self, d_v, d_a, hidden):
        super().__init__()
        self.bertmodel = BertModel(CONFIG)
        self.vrnn1 = nn.LSTM(d_v, d_v, bidirectional=True)
        self.vrnn2 = nn.LSTM(2 * d_v, d_v, bidirectional=True)
        self.arnn1 = nn.LSTM(d_a, d_a, bidirectional=True)
        self.arnn2 = nn.LSTM(2 * d_a, d_a, bidirectional=True)
        sizes = {"t": H, "v": 4 * d_v, "a": 4 * d_a}
        for m in "tva":
            setattr(self, f"project_{m}", _seq((f"project_{m}", nn.Linear(sizes[m], hidden)),
                                               (f"project_{m}_activation", nn.ReLU()),
                                               (f"project_{m}_layer_norm", nn.LayerNorm(hidden))))
        for m, i in (("t", 1), ("v", 1), ("a", 3)):
            setattr(self, f"private_{m}", _seq((f"private_{m}_{i}", nn.Linear(hidden, hidden)),
                                               (f"private_{m}_activation_{i}", nn.Sigmoid())))
        self.shared = _seq(("shared_1", nn.Linear(hidden, hidden)), ("shared_activation_1", nn.Sigmoid()))
        for m in "tva":
            setattr(self, f"recon_{m}", _seq((f"recon_{m}_1", nn.Linear(hidden, hidden))))
        self.sp_discriminator = _seq(("sp_discriminator_layer_1", nn.Linear(hidden, 4)))
        self.fusion = _seq(("fusion_layer_1", nn.Linear(6 * hidden, 3 * hidden)), ("fusion_layer_1_dropout", nn.Dropout()),
                           ("fusion_layer_1_activation", nn.ReLU()), ("fusion_layer_3", nn.Linear(3 * hidden, 1)))
        self.tlayer_norm = nn.LayerNorm(2 * H)
        self.vlayer_norm = nn.LayerNorm(2 * d_v)
        self.alayer_norm = nn.LayerNorm(2 * d_a)
        self.transformer_encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(d_model=hidden, nhead=2),
                                                         num_layers=1, enable_nested_tensor=False)


def test_misa_round_trip_and_fusion_transformer_equivalence():
    model = _model("misa", hidden=16).eval()
    authors = _randomise(AuthorsMISA(D_V, D_A, 16)).eval()
    original = authors.state_dict()
    imported = from_authors_state_dict(model, original)
    assert "sp_discriminator.sp_discriminator_layer_1.weight" in imported.dropped
    assert any(k.startswith("bertmodel.pooler.") for k in imported.dropped)
    model.load_state_dict(imported.state_dict, strict=False)
    assert imported.not_covered == []
    exported = to_authors_state_dict(model)
    authors_only = set(imported.dropped)
    assert set(exported) == set(original) - authors_only
    assert all(torch.equal(exported[k], original[k]) for k in exported)
    tokens = torch.randn(3, 6, 16)
    with torch.no_grad():
        expected = authors.transformer_encoder(tokens.transpose(0, 1)).transpose(0, 1)
        got = model.fusion.transformer(tokens)
    assert torch.allclose(got, expected, atol=1e-5)


# -- TFN / LMF (Justin1904/TensorFusionNetworks, Justin1904/Low-rank-Multimodal-Fusion: model.py)
class AuthorsSubNet(nn.Module):
    def __init__(self, d_in, hidden):
        super().__init__()
        self.norm = nn.BatchNorm1d(d_in)
        self.linear_1, self.linear_2, self.linear_3 = nn.Linear(d_in, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)


class AuthorsTextSubNet(nn.Module):
    def __init__(self, d_in, hidden, d_out):
        super().__init__()
        self.rnn = nn.LSTM(d_in, hidden, batch_first=True)
        self.linear_1 = nn.Linear(hidden, d_out)


class AuthorsTFN(nn.Module):
    def __init__(self, model, text_hidden):
        super().__init__()
        a, v = model.audio_subnet, model.video_subnet
        self.audio_subnet = AuthorsSubNet(a.d_in, a.linear_1.out_features)
        self.video_subnet = AuthorsSubNet(v.d_in, v.linear_1.out_features)
        self.text_subnet = AuthorsTextSubNet(300, text_hidden, model.text_subnet.linear_1.out_features)
        for i in (1, 2, 3):
            layer = getattr(model, f"post_fusion_layer_{i}")
            setattr(self, f"post_fusion_layer_{i}", nn.Linear(layer.in_features, layer.out_features))
        self.output_range = nn.Parameter(torch.FloatTensor([6]), requires_grad=False)
        self.output_shift = nn.Parameter(torch.FloatTensor([-3]), requires_grad=False)


class AuthorsLMF(nn.Module):
    def __init__(self, model, text_hidden):
        super().__init__()
        a, v = model.audio_subnet, model.video_subnet
        self.audio_subnet = AuthorsSubNet(a.d_in, a.linear_1.out_features)
        self.video_subnet = AuthorsSubNet(v.d_in, v.linear_1.out_features)
        self.text_subnet = AuthorsTextSubNet(300, text_hidden, model.text_subnet.linear_1.out_features)
        f = model.fusion
        self.audio_factor, self.video_factor, self.text_factor = (nn.Parameter(torch.empty(p.shape)) for p in f.factors)
        self.fusion_weights = nn.Parameter(torch.empty(f.fusion_weights.shape))
        self.fusion_bias = nn.Parameter(torch.empty(f.fusion_bias.shape))


@pytest.mark.parametrize("name, authors_cls", [("tfn", AuthorsTFN), ("lmf", AuthorsLMF)])
def test_tfn_lmf_round_trip(name, authors_cls):
    model = _model(name)
    # the authors' text LSTM has the BERT width here, so that its linear_1 fits the (B) text path
    authors = _randomise(authors_cls(model, text_hidden=H))
    original = authors.state_dict()
    imported = from_authors_state_dict(model, original)
    assert imported.dropped and all(k.startswith("text_subnet.rnn.") for k in imported.dropped)
    model.load_state_dict(imported.state_dict, strict=False)
    assert imported.not_covered and all(k.startswith("encoder.") for k in imported.not_covered)
    exported = to_authors_state_dict(model)
    assert set(exported) == set(original) - set(imported.dropped)
    assert all(torch.equal(exported[k], original[k]) for k in exported)
    if name == "lmf":
        assert torch.equal(model.fusion.factors[2], original["text_factor"])
    else:
        assert model.output_range.item() == 6 and "output_range" not in dict(model.named_parameters())
    # an authors' text path of another width does not fit: refused, naming the tensor and the way out
    other = _randomise(authors_cls(model, text_hidden=H + 3)).state_dict()
    with pytest.raises(ConversionError, match=r"text_subnet\.linear_1\.weight .*skip="):
        load_authors_state_dict(model, other)
    left = load_authors_state_dict(model, other, skip=("text_subnet.",))
    assert "text_subnet.linear_1.weight" in left


# -- MAG-BERT (WasifurRahman/BERT_multimodal_transformer: bert.py, modeling.py)
class AuthorsMAG(nn.Module):
    def __init__(self, d, d_a, d_v):
        super().__init__()
        self.W_hv, self.W_ha = nn.Linear(d_v + d, d), nn.Linear(d_a + d, d)
        self.W_v, self.W_a = nn.Linear(d_v, d), nn.Linear(d_a, d)
        self.LayerNorm = nn.LayerNorm(d)


class AuthorsMAGBert(nn.Module):
    def __init__(self):
        super().__init__()
        self.bert = BertModel(CONFIG, add_pooling_layer=True)
        self.bert.MAG = AuthorsMAG(H, D_A, D_V)
        self.classifier = nn.Linear(H, 1)


@pytest.mark.parametrize("name", ["mag", "mag_mmsa"])
def test_mag_round_trip(name):
    model = _model(name)
    _assert_round_trip(model, _randomise(AuthorsMAGBert()), expect_left=None)


def test_errors_name_the_tensors():
    model = _model("mult", d_model=12, heads=2, layers=1)
    authors = AuthorsMulT(H, D_A, D_V, 12, 1).state_dict()
    del authors["proj1.weight"]
    authors["extra.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError, match=r"missing authors' tensors: proj1\.weight.*unexpected.*extra\.weight"):
        from_authors_state_dict(model, authors)
    with pytest.raises(ConversionError, match="no authors' layout is known for ICCN"):
        to_authors_state_dict(_model("iccn"))
    with pytest.raises(ConversionError, match="expected 36 packed rows"):
        bad = AuthorsMulT(H, D_A, D_V, 12, 1).state_dict()
        bad["trans_l_with_a.layers.0.self_attn.in_proj_weight"] = torch.zeros(24, 12)
        from_authors_state_dict(model, bad)
