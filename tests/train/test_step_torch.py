"""One training step against a torch implementation of the same small model: transformers'
encoder + nn.Linear head, CrossEntropyLoss(weight), clip_grad_norm_, AdamW with warmup+cosine
(and, for LoRA, q/v adapters written out in torch). Loss, every gradient and the updated
parameters must agree."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ssl_jax
from ssl_jax.models.convert import convert_state_dict
from ssl_jax.train import (
    LoraConfig,
    batch_logits,
    init_head,
    init_lora,
    make_optimizer,
    weighted_cross_entropy,
)
from tests.support.finetune import tiny_hf_model

pytestmark = [pytest.mark.slow, pytest.mark.parity]

SIZE = {"dinov2": 28, "siglip2": 32}
WEIGHTS = np.asarray([0.3345, 0.3339, 2.9638, 0.3678], np.float32)
LR_BACKBONE, LR_HEAD, TOTAL, WARMUP = 1e-3, 1e-2, 10, 2
# Adam's eps, raised from 1e-8 in both implementations for the multi-step comparison: with a
# tiny eps, coordinates whose gradient is at float32 noise level move by ±lr either way
EPS = 1e-3


def _setup(alias, tmp_path):
    tm = tiny_hf_model(alias, seed=5)
    tm.save_pretrained(tmp_path / alias)
    model = ssl_jax.load_model(tmp_path / alias)
    rng = np.random.default_rng(0)
    s = SIZE[alias]
    pixels = rng.normal(size=(4, s, s, 3)).astype(np.float32)
    labels = np.asarray([0, 2, 3, 2], np.int64)
    head = init_head(jax.random.key(1), 64, 4)
    return model, tm, pixels, labels, head


def _torch_features(tm, alias, pixels):
    out = tm(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()),
             interpolate_pos_encoding=True) if alias == "siglip2" else \
        tm(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()))
    return out.pooler_output if alias == "siglip2" else out.last_hidden_state[:, 0]


def _lr_lambda(step):  # transformers get_cosine_schedule_with_warmup
    if step < WARMUP:
        return step / max(1, WARMUP)
    progress = (step - WARMUP) / max(1, TOTAL - WARMUP)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def _torch_step(params_groups, loss_fn, n_steps):
    opt = torch.optim.AdamW(params_groups, weight_decay=0.01, eps=EPS)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda)
    all_params = [p for g in params_groups for p in g["params"]]
    losses = []
    for _ in range(n_steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        losses.append(float(loss.detach()))
        torch.nn.utils.clip_grad_norm_(all_params, 1.0)
        opt.step()
        sched.step()
    return losses


def _jax_steps(trainable, loss_fn, n_steps):
    tx = make_optimizer(trainable, total_steps=TOTAL, lr_backbone=LR_BACKBONE, lr_head=LR_HEAD,
                        weight_decay=0.01, warmup_ratio=WARMUP / TOTAL, max_grad_norm=1.0,
                        eps=EPS)
    opt = tx.init(trainable)
    grads0, losses = None, []

    @jax.jit
    def step(trainable, opt):
        loss, grads = jax.value_and_grad(loss_fn)(trainable)
        updates, opt = tx.update(grads, opt, trainable)
        return jax.tree.map(lambda p, u: p + u, trainable, updates), opt, loss, grads

    for _ in range(n_steps):
        trainable, opt, loss, grads = step(trainable, opt)
        grads0 = grads if grads0 is None else grads0
        losses.append(float(loss))
    return losses, grads0, trainable


def _torch_head_loss(tm, alias, pixels, labels, head):
    """The torch head (a copy of ours) and the class-weighted loss closure of one batch."""
    lin = torch.nn.Linear(64, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(np.asarray(head["kernel"]).T.copy()))
        lin.bias.copy_(torch.from_numpy(np.array(head["bias"])))
    ce = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(WEIGHTS))
    y = torch.from_numpy(labels)

    def torch_loss():
        return ce(lin(_torch_features(tm, alias, pixels)), y)

    return lin, torch_loss


@pytest.mark.parametrize("alias", ["dinov2", "siglip2"])
def test_full_step_matches_torch(alias, tmp_path):
    model, tm, pixels, labels, head = _setup(alias, tmp_path)
    spec = model.spec
    lin, torch_loss = _torch_head_loss(tm, alias, pixels, labels, head)

    # gradients of the first step
    tm.zero_grad()
    lin.zero_grad()
    torch_loss().backward()
    t_grads = {k: np.zeros(tuple(p.shape), np.float32) if p.grad is None else p.grad.numpy().copy()
               for k, p in tm.named_parameters()}  # unused mask token: no grad
    t_head_grad = lin.weight.grad.numpy().T.copy()
    groups = [{"params": list(tm.parameters()), "lr": LR_BACKBONE},
              {"params": list(lin.parameters()), "lr": LR_HEAD}]
    t_losses = _torch_step(groups, torch_loss, 3)

    def loss_fn(tr):
        logits = batch_logits(spec, tr["backbone"], tr["head"], jnp.asarray(pixels))
        return weighted_cross_entropy(logits, jnp.asarray(labels), WEIGHTS)

    trainable = {"backbone": model.params, "head": head}
    j_losses, j_grads, j_after = _jax_steps(trainable, loss_fn, 3)
    np.testing.assert_allclose(j_losses, t_losses, rtol=0, atol=1e-5)
    np.testing.assert_allclose(j_grads["head"]["kernel"], t_head_grad, rtol=0, atol=1e-5)
    g_conv = convert_state_dict(spec, t_grads, where="torch grads")
    flat_t = dict(jax.tree_util.tree_flatten_with_path(g_conv)[0])
    for path, g in jax.tree_util.tree_flatten_with_path(j_grads["backbone"])[0]:
        scale = max(1.0, float(np.abs(flat_t[path]).max()))
        np.testing.assert_allclose(np.asarray(g), flat_t[path], rtol=0, atol=1e-4 * scale,
                                   err_msg=jax.tree_util.keystr(path))
    # parameters after 3 optimizer steps (warmup from lr 0, clipping active)
    p_conv = convert_state_dict(spec, {k: v.detach().numpy() for k, v in
                                       tm.state_dict().items()}, where="torch params")
    flat_p = dict(jax.tree_util.tree_flatten_with_path(p_conv)[0])
    for path, p in jax.tree_util.tree_flatten_with_path(j_after["backbone"])[0]:
        np.testing.assert_allclose(np.asarray(p), flat_p[path], rtol=0, atol=1e-4,
                                   err_msg=jax.tree_util.keystr(path))
    np.testing.assert_allclose(j_after["head"]["kernel"], lin.weight.detach().numpy().T,
                               rtol=0, atol=1e-4)
    np.testing.assert_allclose(j_after["head"]["bias"], lin.bias.detach().numpy(), rtol=0,
                               atol=1e-4)


class _LoraLinear(torch.nn.Module):
    def __init__(self, base, a, b, scale):
        super().__init__()
        self.base, self.scale = base, scale
        self.A = torch.nn.Parameter(torch.from_numpy(np.asarray(a).T.copy()))  # (r, in)
        self.B = torch.nn.Parameter(torch.from_numpy(np.asarray(b).T.copy()))  # (out, r)

    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.A.T @ self.B.T)


def test_lora_step_matches_torch(tmp_path):
    alias = "dinov2"
    model, tm, pixels, labels, head = _setup(alias, tmp_path)
    spec = model.spec
    cfg = LoraConfig(rank=4, alpha=8.0, dropout=0.0)
    adapters = init_lora(spec, cfg, jax.random.key(2))
    rng = np.random.default_rng(3)
    adapters = {t: {"a": ab["a"], "b": jnp.asarray(0.1 * rng.normal(size=ab["b"].shape),
                                                   jnp.float32)} for t, ab in adapters.items()}
    for p in tm.parameters():
        p.requires_grad_(False)
    wrapped = {}
    for i, layer in enumerate(tm.encoder.layer):
        for t, name in (("q", "q_proj"), ("v", "v_proj")):
            mod = _LoraLinear(getattr(layer.attention, name), adapters[t]["a"][i],
                              adapters[t]["b"][i], cfg.scale)
            setattr(layer.attention, name, mod)
            wrapped[(t, i)] = mod
    lin, torch_loss = _torch_head_loss(tm, alias, pixels, labels, head)

    torch_loss().backward()
    t_grads = {k: (m.A.grad.numpy().T.copy(), m.B.grad.numpy().T.copy())
               for k, m in wrapped.items()}
    for m in wrapped.values():
        m.A.grad = m.B.grad = None
    lin.zero_grad()
    groups = [{"params": [p for m in wrapped.values() for p in (m.A, m.B)], "lr": LR_BACKBONE},
              {"params": list(lin.parameters()), "lr": LR_HEAD}]
    t_losses = _torch_step(groups, torch_loss, 2)

    def loss_fn(tr):
        logits = batch_logits(spec, model.params, tr["head"], jnp.asarray(pixels),
                              adapters=tr["lora"], lora=cfg)
        return weighted_cross_entropy(logits, jnp.asarray(labels), WEIGHTS)

    j_losses, j_grads, j_after = _jax_steps({"lora": adapters, "head": head}, loss_fn, 2)
    np.testing.assert_allclose(j_losses, t_losses, rtol=0, atol=1e-5)
    for (t, i), (ga, gb) in t_grads.items():
        np.testing.assert_allclose(j_grads["lora"][t]["a"][i], ga, rtol=0, atol=1e-5)
        np.testing.assert_allclose(j_grads["lora"][t]["b"][i], gb, rtol=0, atol=1e-5)
        m = wrapped[(t, i)]
        np.testing.assert_allclose(j_after["lora"][t]["a"][i], m.A.detach().numpy().T, atol=1e-5)
        np.testing.assert_allclose(j_after["lora"][t]["b"][i], m.B.detach().numpy().T, atol=1e-5)
    np.testing.assert_allclose(j_after["head"]["kernel"], lin.weight.detach().numpy().T,
                               atol=1e-5)
