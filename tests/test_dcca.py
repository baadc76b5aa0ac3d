"""The DCCA objective against a closed-form CCA (generalised eigenproblem, scipy) on small cases."""
import numpy as np
import pytest
import scipy.linalg
import torch

import fusionkit
from fusionkit.losses.cca import DCCALoss, canonical_correlations


def closed_form_cca(x: np.ndarray, y: np.ndarray, r1: float = 0.0, r2: float = 0.0) -> np.ndarray:
    """Canonical correlations from ``[0 Cxy; Cyx 0] v = ρ [Cxx 0; 0 Cyy] v`` (independent of the whitening)."""
    n, p = x.shape
    q = y.shape[1]
    x = x - x.mean(0)
    y = y - y.mean(0)
    cxx = x.T @ x / (n - 1) + r1 * np.eye(p)
    cyy = y.T @ y / (n - 1) + r2 * np.eye(q)
    cxy = x.T @ y / (n - 1)
    a = np.block([[np.zeros((p, p)), cxy], [cxy.T, np.zeros((q, q))]])
    b = scipy.linalg.block_diag(cxx, cyy)
    rho = scipy.linalg.eigh(a, b, eigvals_only=True)
    return np.sort(rho)[::-1][: min(p, q)]


def _views(n=200, p=4, q=3, seed=0, coupling=0.8):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 2))
    x = rng.standard_normal((n, p))
    y = rng.standard_normal((n, q))
    x[:, :2] += coupling * 3 * z
    y[:, :2] += coupling * 3 * z @ np.array([[1.0, 0.5], [-0.3, 1.0]])
    return x, y


@pytest.mark.parametrize("p, q, r", [(4, 3, 0.0), (3, 5, 0.0), (4, 3, 0.1), (2, 2, 1e-3)])
def test_matches_closed_form_cca(p, q, r):
    x, y = _views(p=p, q=q)
    expected = closed_form_cca(x, y, r, r)
    got = canonical_correlations(torch.tensor(x), torch.tensor(y), r1=r, r2=r, eps=0.0).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-10)
    loss = DCCALoss(r1=r, r2=r)(torch.tensor(x), torch.tensor(y))
    assert loss.item() == pytest.approx(-expected.sum(), abs=1e-7)  # default eps = 1e-9 on the diagonal
    assert DCCALoss(r1=r, r2=r, top_k=1)(torch.tensor(x), torch.tensor(y)).item() == pytest.approx(-expected[0], abs=1e-7)


def test_exact_cases_by_hand():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 3))
    # an invertible linear map of one view: every canonical correlation is 1
    y = x @ np.array([[2.0, 0.0, 1.0], [0.5, 1.0, 0.0], [0.0, -1.0, 3.0]])
    rho = canonical_correlations(torch.tensor(x), torch.tensor(y), r1=0.0, r2=0.0, eps=0.0)
    np.testing.assert_allclose(rho.numpy(), np.ones(3), atol=1e-8)
    # one dimension each: |Pearson correlation|
    a, b = rng.standard_normal(40), rng.standard_normal(40)
    b = a + b
    rho = canonical_correlations(torch.tensor(a[:, None]), torch.tensor(b[:, None]), r1=0.0, r2=0.0, eps=0.0)
    assert rho.item() == pytest.approx(abs(np.corrcoef(a, b)[0, 1]), abs=1e-10)
    # the regulariser only lowers correlations
    reg = canonical_correlations(torch.tensor(x), torch.tensor(y), r1=0.5, r2=0.5)
    assert (reg < 1.0).all()


def test_mean_scale_dtype_and_gradient():
    x, y = _views(n=30, p=3, q=3, seed=2)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.tensor(y, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: DCCALoss(r1=1e-2, r2=1e-2)(a, b), (tx, ty))
    f32 = DCCALoss(mean=True)(tx.float(), ty.float())
    assert f32.dtype == torch.float32 and -1.0 <= f32.item() <= 0.0
    assert f32.item() == pytest.approx(-closed_form_cca(x, y, 1e-3, 1e-3).mean(), abs=1e-5)
    # gradient ascent on the correlation: a step against the gradient raises the correlation
    loss = DCCALoss()(tx, ty)
    loss.backward()
    with torch.no_grad():
        better = DCCALoss()(tx - 0.05 * tx.grad, ty - 0.05 * ty.grad)
    assert better < loss


def test_errors_and_registry():
    assert isinstance(fusionkit.create("dcca_loss", r1=0.1), DCCALoss)
    with pytest.raises(ValueError, match="at least 2 samples"):
        DCCALoss()(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"two views \(N, o1\) and \(N, o2\)"):
        DCCALoss()(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="regularisation must be ≥ 0"):
        DCCALoss(r1=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        DCCALoss(top_k=0)


def test_gradient_finite_with_fewer_samples_than_dimensions():
    """A mini-batch smaller than the embedding: covariances are rank-deficient, the gradient stays finite."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, generator=g, requires_grad=True)
    y = torch.randn(4, 8, generator=g, requires_grad=True)
    loss = DCCALoss(mean=True)(x, y)
    loss.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all() and x.grad.abs().sum() > 0
    assert -1.0 <= loss.item() <= 0.0
