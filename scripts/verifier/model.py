"""The pair-verifier head: an ESIM-style cross-attention over the final MiniLM token states of
both texts, plus the 11 lexical features. Two implementations: `Head` (torch, batched, for
training) and `forward_np` (numpy, one pair, the reference the Rust port follows).

Forward for one pair (A: [Ta, 384], B: [Tb, 384], the first <= 64 final-layer token states of
each text, [CLS] and [SEP] included; f: [11] lexical features with f[0] = cosine of the pooled
embeddings, f[1] = its square):

    a = A @ proj_w.T + proj_b                      [Ta, d]     (input standardisation folded in)
    b = B @ proj_w.T + proj_b                      [Tb, d]
    E = a @ b.T / sqrt(d)                          [Ta, Tb]
    alpha = softmax over j of E[i, j]              (A attends to B)
    beta  = softmax over i of E[i, j]              (B attends to A)
    a~ = alpha @ b;  b~ = beta.T @ a
    pa = i / max(Ta-1, 1);  pb = j / max(Tb-1, 1)  (relative positions)
    pa~ = alpha @ pb;  pb~ = beta.T @ pa
    ca = relu([a, a~, a - a~, a * a~, pa - pa~] @ cmp_w.T + cmp_b)     [Ta, h]
    cb = relu([b, b~, b - b~, b * b~, pb - pb~] @ cmp_w.T + cmp_b)     [Tb, h]
    va = [mean_i ca, max_i ca];  vb = [mean_j cb, max_j cb]            [2h] each
    z = [va + vb, |va - vb|, f]                                         [4h + 11]
    logit = relu(z @ mlp1_w.T + mlp1_b) @ mlp2_w.T + mlp2_b + f @ lin_w.T + lin_b    scalar

(lin_w, lin_b: a logistic regression on the 11 features alongside the network, so the
cosine's own ranking is there from the start and the network learns corrections.)

The score is symmetric in A and B by construction.
"""
from __future__ import annotations

import math

import numpy as np

N_FEAT = 11


def _softmax(x, axis):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def forward_np(W: dict[str, np.ndarray], A: np.ndarray, B: np.ndarray, f: np.ndarray) -> float:
    """The reference forward (float32 weights, float64 arithmetic is not needed)."""
    A = A.astype(np.float32)
    B = B.astype(np.float32)
    f = np.asarray(f, np.float32)
    d = W["proj_w"].shape[0]
    a = A @ W["proj_w"].T + W["proj_b"]
    b = B @ W["proj_w"].T + W["proj_b"]
    E = (a @ b.T) / math.sqrt(d)
    alpha = _softmax(E, 1)
    beta = _softmax(E, 0)
    at = alpha @ b
    bt = beta.T @ a
    Ta, Tb = len(a), len(b)
    pa = np.arange(Ta, dtype=np.float32) / max(Ta - 1, 1)
    pb = np.arange(Tb, dtype=np.float32) / max(Tb - 1, 1)
    pat = alpha @ pb
    pbt = beta.T @ pa

    def cmp(x, xt, p, pt):
        u = np.concatenate([x, xt, x - xt, x * xt, (p - pt)[:, None]], 1)
        return np.maximum(u @ W["cmp_w"].T + W["cmp_b"], 0)

    ca = cmp(a, at, pa, pat)
    cb = cmp(b, bt, pb, pbt)
    va = np.concatenate([ca.mean(0), ca.max(0)])
    vb = np.concatenate([cb.mean(0), cb.max(0)])
    z = np.concatenate([va + vb, np.abs(va - vb), f])
    hdn = np.maximum(z @ W["mlp1_w"].T + W["mlp1_b"], 0)
    net = float((hdn @ W["mlp2_w"].T + W["mlp2_b"])[0])
    lin = float((f @ W["lin_w"].T + W["lin_b"])[0])
    if "veto" in W and float(W["veto"][0]) > 0:
        return lin - _softplus(net)
    return lin + net


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def build_torch():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Head(nn.Module):
        def __init__(self, d=64, h=64, m=64, drop=0.2, feat_drop=0.0, mu=None, sd=None,
                     use_feats=True, veto=False):
            super().__init__()
            self.d = d
            self.register_buffer("mu", torch.zeros(384) if mu is None else torch.as_tensor(mu))
            self.register_buffer("sd", torch.ones(384) if sd is None else torch.as_tensor(sd))
            self.proj = nn.Linear(384, d)
            self.cmp = nn.Linear(4 * d + 1, h)
            self.mlp1 = nn.Linear(4 * h + N_FEAT, m)
            self.mlp2 = nn.Linear(m, 1)
            self.lin = nn.Linear(N_FEAT, 1)
            self.drop = nn.Dropout(drop)
            self.feat_drop = feat_drop
            self.use_feats = use_feats
            self.veto = veto

        def side(self, x, xt, p, pt, mask):
            u = torch.cat([x, xt, x - xt, x * xt, (p - pt).unsqueeze(-1)], -1)
            c = F.relu(self.cmp(self.drop(u)))
            m = mask.unsqueeze(-1)
            mean = (c * m).sum(1) / m.sum(1)
            mx = c.masked_fill(m == 0, -1e9).max(1).values
            return torch.cat([mean, mx], -1)

        def forward(self, A, ma, B, mb, f):
            """A: [N, Ta, 384], ma: [N, Ta] (1 = token), likewise B, mb; f: [N, 11]."""
            a = self.proj(self.drop((A - self.mu) / self.sd))
            b = self.proj(self.drop((B - self.mu) / self.sd))
            E = a @ b.transpose(1, 2) / math.sqrt(self.d)          # [N, Ta, Tb]
            neg = -1e9
            alpha = torch.softmax(E.masked_fill(mb.unsqueeze(1) == 0, neg), 2)
            beta = torch.softmax(E.masked_fill(ma.unsqueeze(2) == 0, neg), 1)
            at = alpha @ b
            bt = beta.transpose(1, 2) @ a
            la = ma.sum(1, keepdim=True)
            lb = mb.sum(1, keepdim=True)
            pa = torch.arange(A.shape[1], dtype=A.dtype).unsqueeze(0) / (la - 1).clamp(min=1)
            pb = torch.arange(B.shape[1], dtype=B.dtype).unsqueeze(0) / (lb - 1).clamp(min=1)
            pat = (alpha @ pb.unsqueeze(-1)).squeeze(-1)
            pbt = (beta.transpose(1, 2) @ pa.unsqueeze(-1)).squeeze(-1)
            va = self.side(a, at, pa, pat, ma)
            vb = self.side(b, bt, pb, pbt, mb)
            fz = f
            if not self.use_feats:
                f = f * 0
                fz = f
            elif self.training and self.feat_drop > 0:
                # Drop the rule flags (5..10) from the network's input now and then, so the
                # attention path learns them too (the linear part always sees them).
                keep = (torch.rand(f.shape[0], 1) >= self.feat_drop).to(f.dtype)
                mask = torch.ones_like(f)
                mask[:, 5:] = keep
                fz = f * mask
            z = torch.cat([va + vb, (va - vb).abs(), fz], -1)
            net = self.mlp2(self.drop(F.relu(self.mlp1(z))))
            if self.veto:
                return (self.lin(f) - F.softplus(net)).squeeze(-1)
            return (self.lin(f) + net).squeeze(-1)

        def export(self) -> dict[str, np.ndarray]:
            """Weights for forward_np, with the input standardisation folded into proj."""
            sd = self.sd.detach().numpy().astype(np.float64)
            mu = self.mu.detach().numpy().astype(np.float64)
            pw = self.proj.weight.detach().numpy().astype(np.float64)
            pb = self.proj.bias.detach().numpy().astype(np.float64)
            w = {
                "proj_w": (pw / sd).astype(np.float32),
                "proj_b": (pb - (pw / sd) @ mu).astype(np.float32),
                "cmp_w": self.cmp.weight.detach().numpy().astype(np.float32),
                "cmp_b": self.cmp.bias.detach().numpy().astype(np.float32),
                "mlp1_w": self.mlp1.weight.detach().numpy().astype(np.float32),
                "mlp1_b": self.mlp1.bias.detach().numpy().astype(np.float32),
                "mlp2_w": self.mlp2.weight.detach().numpy().astype(np.float32),
                "mlp2_b": self.mlp2.bias.detach().numpy().astype(np.float32),
                "lin_w": self.lin.weight.detach().numpy().astype(np.float32),
                "lin_b": self.lin.bias.detach().numpy().astype(np.float32),
            }
            if self.veto:
                w["veto"] = np.array([1.0], np.float32)
            if not self.use_feats:
                w["mlp1_w"][:, -N_FEAT:] = 0
                w["lin_w"][:] = 0
            return w

    return Head
