"""Batched active-set solver for minimum-variance and maximum-Sharpe weights (torch).

One call solves B independent problems, one per rebalance date, each with its own covariance
``S[b]`` (and excess return ``a[b]`` for the Sharpe ratio), under a budget and per-asset bounds
``lower <= w <= upper`` (long-only is ``lower = 0``). Only tensors and scalars come in.

The method is the primal-dual active-set method (Hintermüller, Ito & Kunisch 2002, "The
primal-dual active set strategy as a semismooth Newton method", SIAM J. Optim. 13(3)): guess
which bounds bind, solve the equality-constrained KKT system exactly with those bounds as
equalities, then move every violated bound into the set and every bound with a wrong-signed
multiplier out of it, until the set stops changing. A problem whose set is stable satisfies
the KKT conditions of its convex QP to rounding, so its weights are the exact optimum; the few
that do not settle within ``max_iter`` rounds are reported, and the caller solves them exactly
one by one. All B problems advance together: each round is one batched linear solve.

Maximum Sharpe uses the homogenisation of Cornuejols & Tütüncü (2007, *Optimization Methods
in Finance*, sec. 8.2): with ``y = k w``, ``k > 0``, maximising ``a'w / sqrt(w'Sw)`` is
``min y'Sy`` subject to ``a'y = 1``, ``sum(y) = budget k`` and ``lower k <= y <= upper k``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def solve_batched(
    cov: torch.Tensor,
    excess: torch.Tensor | None,
    lower: torch.Tensor,
    upper: torch.Tensor,
    budget: float,
    max_iter: int = 60,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Solve B minimum-variance (``excess is None``) or maximum-Sharpe QPs at once.

    Parameters
    ----------
    cov
        ``[B, N, N]`` covariances (float64, positive definite).
    excess
        ``[B, N]`` expected excess returns ``mu - rf`` for the maximum Sharpe ratio, or None
        for the minimum variance.
    lower, upper
        ``[B, N]`` bounds (``-inf`` / ``inf`` where there is none).
    budget
        The sum of the weights (must be > 0 for the Sharpe ratio).

    Returns
    -------
    weights, converged, rounds
        ``[B, N]`` weights, a ``[B]`` bool tensor (False: the caller must solve that problem
        another way), and the number of rounds run.
    """
    import torch

    bsz, n, _ = cov.shape
    dev, dt = cov.device, cov.dtype
    sharpe = excess is not None
    # Scale each problem to unit mean variance (and unit largest |excess|): same argmin,
    # tolerances that mean the same thing for every date.
    scale = torch.diagonal(cov, dim1=1, dim2=2).mean(dim=1)  # [B]
    s = cov / scale[:, None, None]  # [B, N, N]
    a = torch.zeros(bsz, n, dtype=dt, device=dev)
    if excess is not None:
        a = excess / excess.abs().amax(dim=1, keepdim=True).clamp_min(1e-300)
    finite_lo, finite_hi = torch.isfinite(lower), torch.isfinite(upper)
    lo0 = torch.where(finite_lo, lower, torch.zeros_like(lower))
    hi0 = torch.where(finite_hi, upper, torch.zeros_like(upper))
    at_lo = torch.zeros(bsz, n, dtype=torch.bool, device=dev)
    at_hi = torch.zeros_like(at_lo)
    eye = torch.eye(n, dtype=dt, device=dev)
    converged = torch.zeros(bsz, dtype=torch.bool, device=dev)
    w = torch.full((bsz, n), float("nan"), dtype=dt, device=dev)
    todo = torch.arange(bsz, device=dev)  # problems whose active set has not settled yet
    rounds = 0
    while todo.numel() and rounds < max_iter:
        rounds += 1
        if todo.numel() == bsz:  # every problem still open: no copies
            lo_t, hi_t, flo, fhi, s_t, a_t = lo0, hi0, finite_lo, finite_hi, s, a
        else:
            lo_t, hi_t, flo, fhi = lo0[todo], hi0[todo], finite_lo[todo], finite_hi[todo]
            s_t, a_t = s[todo], a[todo]
        al, ah = at_lo[todo], at_hi[todo]
        z, ok = _kkt_solve(s_t, a_t, al, ah, lo_t, hi_t, eye, budget, sharpe)
        y, kappa, nu1, nu2 = z[:, :n], z[:, n], z[:, n + 1], z[:, n + 2]
        ok = ok & (kappa > 0)
        g = torch.einsum("bij,bj->bi", s_t, y) - nu1[:, None] * a_t - nu2[:, None]  # [b, N]
        free = ~(al | ah)
        k = kappa.abs()[:, None]
        tol_y = 1e-11 * k
        tol_g = 1e-11 * g.abs().amax(dim=1, keepdim=True).clamp_min(1e-300)
        # Semismooth Newton step of the complementarity (HIK 2002, Algorithm 2.1): a fixed
        # weight stays fixed while its multiplier has the right sign; a free one that crosses
        # its bound becomes fixed.
        new_lo = (al & (g >= -tol_g)) | (free & flo & (y < lo_t * kappa[:, None] - tol_y))
        new_hi = (ah & (g <= tol_g)) | (free & fhi & (y > hi_t * kappa[:, None] + tol_y))
        stable = ok & (new_lo == al).all(dim=1) & (new_hi == ah).all(dim=1)
        done = todo[stable]
        w[done] = y[stable] / kappa[stable, None]
        converged[done] = True
        at_lo[todo], at_hi[todo] = new_lo, new_hi
        todo = todo[~stable]
    # Fixed weights are exactly their bound (the solve gives them to rounding).
    w = torch.where(at_lo & converged[:, None], lo0, w)
    w = torch.where(at_hi & converged[:, None], hi0, w)
    return w, converged, rounds


def _kkt_solve(
    s: torch.Tensor,
    a: torch.Tensor,
    at_lo: torch.Tensor,
    at_hi: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    eye: torch.Tensor,
    budget: float,
    sharpe: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve the KKT system of one active set for every problem; return ``[y, k, nu1, nu2]``.

    Free assets satisfy stationarity, ``(S y)_i - nu1 a_i - nu2 = 0``; fixed ones their bound,
    ``y_i = bound_i k``, with their multiplier ``g_i`` eliminated into the condition on ``k``
    (Sharpe: ``budget nu2 + sum_fixed bound_i g_i = 0``; minimum variance: ``k = 1``). Then
    ``a'y = 1`` (minimum variance: ``nu1 = 0``) and ``sum(y) = budget k``.

    Solved by block elimination: ``y`` is linear in ``(k, nu1, nu2)``,
    ``y = k u_k + nu1 u_1 + nu2 u_2``, each ``u`` one solve with ``S`` restricted to the free
    assets (gathered into a ``[B, F, F]`` block, ``F`` the most free assets of any problem,
    padded with the identity), and the three scalars solve a 3 x 3 system. The free block is
    small once the bounds bind (long-only minimum variance keeps ~10-30% of the assets).
    """
    import torch

    bsz, n, _ = s.shape
    fixed = at_lo | at_hi  # [B, N]
    free = ~fixed
    bound = torch.where(at_lo, lo, torch.where(at_hi, hi, torch.zeros_like(lo)))  # [B, N]
    s_bound = torch.einsum("bij,bj->bi", s, bound)  # [B, N]
    n_free = free.sum(dim=1)  # [B]
    f = max(int(n_free.max()), 1)
    order = torch.argsort(fixed.to(torch.int8), dim=1, stable=True)  # free assets first
    idx = order[:, :f]  # [B, F]
    valid = torch.arange(f, device=s.device)[None, :] < n_free[:, None]  # [B, F]
    rows = torch.arange(bsz, device=s.device)[:, None, None]
    s_ff = s[rows, idx[:, :, None], idx[:, None, :]]  # [B, F, F]
    both = valid[:, :, None] & valid[:, None, :]
    s_ff = torch.where(both, s_ff, eye[:f, :f].expand(bsz, f, f))
    ones = torch.ones_like(a)
    rhs = torch.stack([-s_bound, a, ones], dim=2)  # [B, N, 3]: for u_k, u_1, u_2
    rhs_f = torch.gather(rhs, 1, idx[:, :, None].expand(bsz, f, 3))  # [B, F, 3]
    rhs_f = torch.where(valid[:, :, None], rhs_f, torch.zeros_like(rhs_f))
    sol, info = torch.linalg.solve_ex(s_ff, rhs_f)  # [B, F, 3]
    sol = torch.where(valid[:, :, None], sol, torch.zeros_like(sol))
    u = torch.zeros(bsz, n, 3, dtype=s.dtype, device=s.device)
    u.scatter_add_(1, idx[:, :, None].expand(bsz, f, 3), sol)  # [B, N, 3]
    u[:, :, 0] += bound  # y_fixed = bound k
    if sharpe:
        # Rows: k-condition, a'y = 1, sum(y) - budget k = 0; columns: k, nu1, nu2.
        su = torch.einsum("bij,bjc->bic", s, u)  # [B, N, 3]
        coef = torch.zeros(bsz, 3, 3, dtype=s.dtype, device=s.device)
        coef[:, 0, :] = torch.einsum("bi,bic->bc", bound, su)
        coef[:, 0, 1] -= (bound * a).sum(dim=1)
        coef[:, 0, 2] += budget - bound.sum(dim=1)
        coef[:, 1, :] = torch.einsum("bi,bic->bc", a, u)
        coef[:, 2, :] = u.sum(dim=1)
        coef[:, 2, 0] -= budget
        target = torch.zeros(bsz, 3, dtype=s.dtype, device=s.device)
        target[:, 1] = 1.0
        scal, info3 = torch.linalg.solve_ex(coef, target)  # [B, 3]
        info = info | info3
    else:
        u_sum = u.sum(dim=1)  # [B, 3]
        nu2 = (budget - u_sum[:, 0]) / u_sum[:, 2]
        scal = torch.stack([torch.ones_like(nu2), torch.zeros_like(nu2), nu2], dim=1)
    y = torch.einsum("bic,bc->bi", u, scal)  # [B, N]
    z = torch.cat([y, scal], dim=1)  # [B, N + 3]
    return z, (info == 0) & torch.isfinite(z).all(dim=1)
