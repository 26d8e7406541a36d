"""Sparse autoencoder in JAX: f = ReLU(W_enc (s·x - b_pre) + b_enc), x̂ = (W_dec f + b_dec) / s.

Parameters follow the common external layout: W_enc (D, F), b_enc (F,), W_dec (F, D),
b_dec (D,). `s` is a fixed input scale chosen at training time so that E‖s·x‖² = D (1 for
external weights); `b_pre` is b_dec when `subtract_b_dec` (the Anthropic/SAELens convention)
and 0 otherwise (the plain ReLU(W_enc x + b_enc) of the issue, our default).

Training (`train_sae`): L = mean_batch ‖s·x - x̂_s‖² + λ Σ_f f, decoder rows renormalised to
unit norm after every step (so the L1 term cannot be gamed by shrinking f), Adam (optax),
optional λ controller towards a target L0, and dead-feature resampling: features that did not
fire for `dead_window` training vectors are re-initialised towards inputs the SAE reconstructs
worst (sampled ∝ loss²), their Adam moments zeroed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax.models.checkpoint import tree_digest

PARAM_KEYS = ("W_enc", "b_enc", "W_dec", "b_dec")


@dataclass
class SAE:
    params: dict[str, jax.Array]
    scale: float = 1.0
    subtract_b_dec: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.params["W_enc"].shape[0])

    @property
    def num_features(self) -> int:
        return int(self.params["W_enc"].shape[1])

    def encode(self, x) -> jax.Array:
        return encode(self.params, x, self.scale, self.subtract_b_dec)

    def pre_activation(self, x) -> jax.Array:
        return pre_activation(self.params, x, self.scale, self.subtract_b_dec)

    def decode(self, f) -> jax.Array:
        return decode(self.params, f, self.scale)

    def __call__(self, x) -> jax.Array:
        return self.decode(self.encode(x))


def init_sae(key, width: int, expansion: int = 64, *, num_features: int | None = None,
             scale: float = 1.0, subtract_b_dec: bool = False, b_dec=None) -> SAE:
    """Random SAE: unit-norm decoder rows, encoder = decoder transposed (a common start),
    b_dec = `b_dec` (e.g. the data mean, scaled) or 0."""
    f = num_features or width * expansion
    w = jax.random.normal(key, (f, width), jnp.float32)
    w = w / jnp.linalg.norm(w, axis=1, keepdims=True)
    bd = jnp.zeros(width, jnp.float32) if b_dec is None else jnp.asarray(b_dec, jnp.float32)
    params = {"W_enc": w.T, "b_enc": jnp.zeros(f, jnp.float32), "W_dec": w, "b_dec": bd}
    return SAE(params, float(scale), subtract_b_dec)


def pre_activation(params, x, scale=1.0, subtract_b_dec=False) -> jax.Array:
    """W_enc (s·x - b_pre) + b_enc: the features before the ReLU."""
    x = jnp.asarray(x, jnp.float32) * scale
    if subtract_b_dec:
        x = x - params["b_dec"]
    return x @ params["W_enc"] + params["b_enc"]


def encode(params, x, scale=1.0, subtract_b_dec=False) -> jax.Array:
    return jax.nn.relu(pre_activation(params, x, scale, subtract_b_dec))


def decode(params, f, scale=1.0) -> jax.Array:
    return (f @ params["W_dec"] + params["b_dec"]) / scale


# ---- metrics ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SAEMetrics:
    mse: float                 # mean squared error per element, in the input's units
    explained_variance: float  # 1 - Σ‖x - x̂‖² / Σ‖x - mean x‖²
    l0: float                  # mean number of active features per vector
    dead_fraction: float       # features that never fire on the evaluated vectors
    baseline_mse: float        # mse of predicting the mean (for scale)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@functools.partial(jax.jit, static_argnames="subtract")
def _metric_sums(params, x, scale, subtract):
    f = encode(params, x, scale, subtract)
    xh = decode(params, f, scale)
    return (jnp.sum((x - xh) ** 2), jnp.sum(f > 0), jnp.any(f > 0, axis=0), jnp.sum(x, 0),
            jnp.sum(x * x))


def evaluate(sae: SAE, x, batch_size: int = 4096) -> SAEMetrics:
    """Reconstruction MSE, explained variance, L0 and dead fraction over all rows of x (M, D)."""
    x = np.asarray(x, np.float32)
    m, d = x.shape
    err = nz = sq = 0.0
    s = np.zeros(d, np.float64)
    alive = np.zeros(sae.num_features, bool)
    for i in range(0, m, batch_size):
        e, n, a, sx, sxx = _metric_sums(sae.params, jnp.asarray(x[i:i + batch_size]),
                                        jnp.float32(sae.scale), subtract=sae.subtract_b_dec)
        err += float(e)
        nz += float(n)
        alive |= np.asarray(a)
        s += np.asarray(sx, np.float64)
        sq += float(sxx)
    total_var = sq - float(np.sum(s * s)) / m
    return SAEMetrics(mse=err / (m * d), explained_variance=1.0 - err / max(total_var, 1e-30),
                      l0=nz / m, dead_fraction=float(1.0 - alive.mean()),
                      baseline_mse=total_var / (m * d))


# ---- training --------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    expansion: int = 64
    num_features: int | None = None
    l1: float = 1.0                # initial sparsity coefficient λ (normalised-input units)
    target_l0: float | None = None  # adapt λ multiplicatively towards this L0
    l1_rate: float = 0.01           # controller step: λ *= exp(rate · clip(log(L0/target), ±1))
    l1_range: float = 1000.0        # λ stays within [l1 / range, l1 · range] (no wind-up)
    lr: float = 1e-3
    batch_size: int = 256
    steps: int = 1000
    dead_window: int = 20_000       # vectors without firing before a feature counts as dead
    resample_every: int = 250       # steps between resampling checks (0: never)
    resample_until: float = 0.6     # no resampling after this fraction of training
    normalize: bool = True          # scale inputs so E‖s·x‖² = D
    subtract_b_dec: bool = False
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _normalize_decoder(params):
    w = params["W_dec"]
    return {**params, "W_dec": w / jnp.maximum(jnp.linalg.norm(w, axis=1, keepdims=True), 1e-8)}


def _zero_moments(state, dead):
    """Zero Adam's first and second moments of the dead features' slices."""
    mask = {"W_enc": dead[None, :], "b_enc": dead, "W_dec": dead[:, None],
            "b_dec": jnp.zeros_like(dead[:1])}

    def fix(s):
        if isinstance(s, optax.ScaleByAdamState):
            z = {k: jnp.where(mask[k], 0.0, v) for k, v in s.mu.items()}
            z2 = {k: jnp.where(mask[k], 0.0, v) for k, v in s.nu.items()}
            return s._replace(mu=z, nu=z2)
        return s

    return jax.tree.map(fix, state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))


def train_sae(x, config: TrainConfig = TrainConfig(), *, log=None,
              init: SAE | None = None, checkpoints: Callable[[dict], Any] | None = None,
              checkpoint_every: int = 0) -> tuple[SAE, dict[str, Any]]:
    """Train an SAE on activations x (M, D). Deterministic for `config.seed`. `init`: start
    from this SAE (its scale and convention are kept) instead of a random one.

    `checkpoints`: a factory `record -> store` (`ssl_jax.io.sae_files.checkpoints_in(folder)`:
    orbax) that keeps the full training state (parameters, Adam moments, dead-feature
    counters, λ, data order) every `checkpoint_every` steps and at the end; the store has
    `restore(like) -> (tree, meta) | None`, `save(step, tree, meta)`, `close()` and `root`. A
    call with the same data and config resumes from it and ends bit-identical to an
    uninterrupted run; the store refuses a checkpoint of other data or settings (`record`).

    Returns (sae, history) with history = {"step", "loss", "mse", "l0", "l1", "resampled"}
    lists (per logged step) and "before"/"after" SAEMetrics dicts on all of x.
    """
    c = config
    x = np.asarray(x, np.float32)
    m, d = x.shape
    key = jax.random.key(c.seed)
    k_init, k_loop = jax.random.split(key)
    if init is None:
        scale = float(np.sqrt(d / np.mean(np.sum(x * x, axis=1)))) if c.normalize else 1.0
        sae = init_sae(k_init, d, c.expansion, num_features=c.num_features, scale=scale,
                       subtract_b_dec=c.subtract_b_dec, b_dec=x.mean(0) * scale)
        if c.target_l0:
            sae.params["b_enc"] = _bias_for_rate(sae, x, c.target_l0 / sae.num_features,
                                                 jax.random.fold_in(k_init, 1))
    else:
        if init.width != d:
            raise ValueError(f"init SAE has width {init.width}, activations {d}")
        sae = init
    scale, subtract = sae.scale, sae.subtract_b_dec
    # training works in the scaled space: encode(p, s·x) with scale 1, decoder output vs s·x
    opt = optax.adam(c.lr)
    params = sae.params
    state = opt.init(params)
    xs = jnp.asarray(x * scale)

    def loss_fn(p, xb, l1):
        f = encode(p, xb, 1.0, subtract)
        xh = f @ p["W_dec"] + p["b_dec"]
        rec = jnp.mean(jnp.sum((xb - xh) ** 2, axis=-1))
        return rec + l1 * jnp.mean(jnp.sum(f, axis=-1)), (rec, f)

    @jax.jit
    def step(p, s, idx, l1, since):
        xb = xs[idx]
        (loss, (rec, f)), g = jax.value_and_grad(loss_fn, has_aux=True)(p, xb, l1)
        upd, s = opt.update(g, s, p)
        p = _normalize_decoder(optax.apply_updates(p, upd))
        fired = jnp.any(f > 0, axis=0)
        since = jnp.where(fired, 0, since + idx.shape[0])
        l0 = jnp.mean(jnp.sum(f > 0, axis=-1))
        return p, s, since, loss, rec, l0

    @jax.jit
    def resample(p, s, since, key):
        dead = since >= c.dead_window
        k1, k2 = jax.random.split(key)
        sub = jax.random.choice(k1, m, (min(m, 8192),), replace=False)
        xb = xs[sub]
        f = encode(p, xb, 1.0, subtract)
        err = jnp.sum((xb - (f @ p["W_dec"] + p["b_dec"])) ** 2, axis=-1)
        prob = err ** 2 / jnp.maximum(jnp.sum(err ** 2), 1e-30)
        pick = jax.random.choice(k2, sub.shape[0], (dead.shape[0],), p=prob)
        direction = xb[pick] - p["b_dec"]
        direction = direction / jnp.maximum(jnp.linalg.norm(direction, axis=1, keepdims=True),
                                            1e-8)
        alive_norm = jnp.sum(jnp.where(~dead, jnp.linalg.norm(p["W_enc"], axis=0), 0.0)) / \
            jnp.maximum(jnp.sum(~dead), 1)
        alive_norm = jnp.where(jnp.any(~dead), alive_norm, 1.0)
        w_enc = jnp.where(dead[None, :], direction.T * 0.2 * alive_norm, p["W_enc"])
        b_new = jnp.zeros_like(p["b_enc"])
        if c.target_l0:
            # a zero bias would make every re-initialised feature fire on about half of all
            # inputs (on a ViT-B run: L0 32 -> 1,900 and the loss ×1000 after one resampling);
            # start them at the target firing rate instead, like the initial biases
            probe = xb[:512] - (p["b_dec"] if subtract else 0.0)
            b_new = _rate_bias(probe, w_enc, c.target_l0 / w_enc.shape[1])
        p = {"W_enc": w_enc,
             "b_enc": jnp.where(dead, b_new, p["b_enc"]),
             "W_dec": jnp.where(dead[:, None], direction, p["W_dec"]),
             "b_dec": p["b_dec"]}
        return p, _zero_moments(s, dead), jnp.where(dead, 0, since), jnp.sum(dead)

    nf = sae.num_features
    since = jnp.zeros(nf, jnp.int32)
    l1 = float(c.l1)
    hist: dict[str, Any] = {"step": [], "loss": [], "mse": [], "l0": [], "l1": [],
                            "resampled": []}
    bs = min(c.batch_size, m)
    perm_key = k_loop
    pos, start = 0, 0
    ckpt = None
    if checkpoints is not None:
        ckpt = checkpoints({
            "config": c.to_dict(), "data_sha256": data_digest(x), "width": d,
            "num_features": nf, "init_sha256": tree_digest(sae.params)})
        found = ckpt.restore({"params": params, "opt": state, "since": since,
                              "perm_key": jax.random.key_data(perm_key)})
        if found is not None:
            tree, meta = found
            params, state, since = tree["params"], tree["opt"], tree["since"]
            perm_key = jax.random.wrap_key_data(tree["perm_key"])
            l1, pos, start, hist = meta["l1"], meta["pos"], meta["step"], meta["hist"]
            hist["resampled"] = [tuple(r) for r in hist["resampled"]]
            if log:
                log(f"resuming SAE training at step {start} from {ckpt.root}")
    before = hist.get("before") or evaluate(sae, x).to_dict()
    hist["before"] = before
    order = np.asarray(jax.random.permutation(perm_key, m))
    log_every = max(1, c.steps // 20)
    for t in range(start, c.steps):
        if pos + bs > m:
            perm_key = jax.random.fold_in(perm_key, t)
            order = np.asarray(jax.random.permutation(perm_key, m))
            pos = 0
        idx = jnp.asarray(order[pos:pos + bs])
        pos += bs
        params, state, since, loss, rec, l0 = step(params, state, idx, jnp.float32(l1), since)
        if c.target_l0:
            # multiplicative steps on log(L0/target), bounded per step and in total: with
            # Adam the biases move ~lr per step whatever λ is, so an unbounded controller
            # winds λ up by orders of magnitude before L0 can answer (measured: λ 1e-2 →
            # 4e10, explained variance -0.004 at width 768 before these bounds)
            ratio = np.log(max(float(l0), 0.1) / c.target_l0)
            l1 = float(np.clip(l1 * np.exp(c.l1_rate * np.clip(ratio, -1.0, 1.0)),
                               c.l1 / c.l1_range, c.l1 * c.l1_range))
        if (c.resample_every and (t + 1) % c.resample_every == 0
                and t + 1 < c.resample_until * c.steps):
            params, state, since, n_dead = resample(params, state, since,
                                                    jax.random.fold_in(k_loop, 10_000 + t))
            hist["resampled"].append((t + 1, int(n_dead)))
        if t % log_every == 0 or t == c.steps - 1:
            hist["step"].append(t)
            hist["loss"].append(float(loss))
            hist["mse"].append(float(rec) / d / scale ** 2)
            hist["l0"].append(float(l0))
            hist["l1"].append(l1)
        if ckpt is not None and (t == c.steps - 1 or (checkpoint_every
                                                     and (t + 1) % checkpoint_every == 0)):
            ckpt.save(t + 1, {"params": params, "opt": state, "since": since,
                              "perm_key": jax.random.key_data(perm_key)},
                      {"l1": l1, "pos": pos, "step": t + 1, "hist": hist})
        if t % log_every == 0 or t == c.steps - 1:
            if log:
                log(f"step {t:6d} loss {float(loss):.4f} mse {float(rec) / d / scale**2:.4g} "
                    f"L0 {float(l0):.1f} l1 {l1:.3g}")
    if ckpt is not None:
        ckpt.close()
    out = SAE(params, scale, subtract, meta={"train": c.to_dict(), "final_l1": l1})
    hist["after"] = evaluate(out, x).to_dict()
    return out, hist


def _bias_for_rate(sae: SAE, x: np.ndarray, rate: float, key, sample: int = 2048):
    """Encoder biases that make each feature fire on a fraction `rate` of the data: minus
    the (1 - rate) quantile of its pre-activation over a sample. A zero-bias start has half
    of all features active (L0 ≈ F/2, e.g. 24,576 of 49,152), which Adam needs thousands of
    steps to bring down to a target L0 of tens."""
    idx = np.asarray(jax.random.choice(key, x.shape[0], (min(sample, x.shape[0]),),
                                       replace=False))
    xs = jnp.asarray(x[np.sort(idx)]) * sae.scale
    if sae.subtract_b_dec:
        xs = xs - sae.params["b_dec"]
    return _rate_bias(xs, sae.params["W_enc"], rate)


def _rate_bias(xs, w_enc, rate: float) -> jax.Array:
    """Minus the (1 - rate) quantile of each feature's pre-activation (without bias) over
    the rows of xs (already scaled and centred), 8192 features at a time."""
    q = 1.0 - min(max(rate, 0.0), 1.0)
    return jnp.concatenate([-jnp.quantile(xs @ w_enc[:, lo:lo + 8192], q, axis=0)
                            for lo in range(0, w_enc.shape[1], 8192)]).astype(jnp.float32)


def data_digest(x: np.ndarray) -> str:
    """sha256 of the training matrix (shape, dtype, bytes): a resumed run must see the same
    data."""
    h = hashlib.sha256(f"{x.shape}{x.dtype}".encode())
    h.update(np.ascontiguousarray(x).data)
    return h.hexdigest()
