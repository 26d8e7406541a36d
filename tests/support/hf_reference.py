"""transformers reference models built from the real checkpoint configs, with random weights.

Every parameter is re-randomised (HF init leaves layerscale at 1, registers at 0 and LN at
identity, which would hide bugs), and q/k weights are scaled up so that attention rows are
far from uniform.
"""

from __future__ import annotations

import numpy as np
import torch
import transformers as tf

from ssl_jax.models.config import bundled_checkpoint_files

ALIASES = ("dinov2", "dinov3", "mae", "clip", "siglip2")

# q/k weights get this × the N(0, 1/fan_in) scale: attention logits of std ≈ 1.8, so the mean
# row maximum is 2-4× the 10/T bar the parity tests assert (1.0 gives nearly uniform rows
# that hide layout bugs; 2.0 makes logits so large that float32 rounding alone exceeds 5e-6).
QK_SCALE = 1.35


def vision_config(alias: str) -> tf.PretrainedConfig:
    cfg = bundled_checkpoint_files(alias)["config"]
    if alias == "dinov2":
        return tf.Dinov2WithRegistersConfig(**cfg)
    if alias == "dinov3":
        return tf.DINOv3ViTConfig(**cfg)
    if alias == "mae":
        return tf.ViTMAEConfig(**{**cfg, "mask_ratio": 0.0})
    if alias == "clip":
        return tf.CLIPVisionConfig(**cfg["vision_config"])
    if alias == "siglip2":
        return tf.SiglipVisionConfig(**cfg["vision_config"])
    raise KeyError(alias)


def build(alias: str, seed: int = 0, *, composite: bool = False, num_layers: int | None = None):
    """An eval-mode eager transformers model of `alias` with re-randomised weights.

    composite=True builds what the hub stores (CLIPModel, SiglipModel, ViTMAEForPreTraining).
    """
    torch.manual_seed(seed)
    if composite:
        cfg = bundled_checkpoint_files(alias)["config"]
        if alias == "clip":
            config = tf.CLIPConfig(text_config=cfg["text_config"], vision_config=cfg["vision_config"])
            config.text_config.num_hidden_layers = 1
            cls = tf.CLIPModel
        elif alias == "siglip2":
            config = tf.SiglipConfig(text_config={**cfg["text_config"], "num_hidden_layers": 1,
                                                  "vocab_size": 1000},
                                     vision_config=cfg["vision_config"])
            cls = tf.SiglipModel
        elif alias == "mae":
            config = tf.ViTMAEConfig(**{**cfg, "mask_ratio": 0.0, "decoder_num_hidden_layers": 1})
            cls = tf.ViTMAEForPreTraining
        else:
            raise KeyError(alias)
        vis = config.vision_config if alias != "mae" else config
    else:
        config = vision_config(alias)
        vis = config
        cls = {"dinov2": tf.Dinov2WithRegistersModel, "dinov3": tf.DINOv3ViTModel,
               "mae": tf.ViTMAEModel, "clip": tf.CLIPVisionModel,
               "siglip2": tf.SiglipVisionModel}[alias]
    if num_layers is not None:
        vis.num_hidden_layers = num_layers
    config._attn_implementation = "eager"
    model = cls(config).eval()
    randomize_(model, seed)
    return model


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed + 1)
    for name, p in model.state_dict().items():
        if not p.is_floating_point():
            continue
        shape = p.shape
        if name.endswith("lambda1"):
            new = 0.1 + 0.05 * torch.randn(shape, generator=g)
        elif ("norm" in name or "layrnorm" in name) and name.endswith("weight"):
            new = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith("bias"):
            new = 0.05 * torch.randn(shape, generator=g)
        elif name.endswith("weight") and p.ndim >= 2:
            fan_in = int(np.prod(shape[1:]))
            scale = 1.0 / np.sqrt(fan_in)
            if any(s in name for s in ("q_proj", "k_proj", "query", "key", "in_proj")):
                scale *= QK_SCALE
            new = scale * torch.randn(shape, generator=g)
        else:  # cls/register/mask tokens, position tables, probe, class_embedding
            new = 0.5 * torch.randn(shape, generator=g)
        p.copy_(new.to(p.dtype))


@torch.no_grad()
def run(model, pixels_nhwc: np.ndarray, alias: str) -> dict:
    """Reference outputs (numpy) for NHWC float32 pixels."""
    x = torch.from_numpy(np.ascontiguousarray(pixels_nhwc.transpose(0, 3, 1, 2)))
    kw: dict = dict(output_attentions=True, output_hidden_states=True)
    h, w = x.shape[2:]
    if alias in ("mae", "clip", "siglip2"):
        kw["interpolate_pos_encoding"] = True
    if alias == "mae":
        n = (h // 16) * (w // 16)
        kw["noise"] = torch.arange(n, dtype=torch.float32).expand(x.shape[0], -1)
    out = model(pixel_values=x, **kw)
    res = {
        "last_hidden_state": out.last_hidden_state.numpy(),
        "hidden_states": torch.stack(out.hidden_states, 1).numpy(),
        "attentions": torch.stack(out.attentions, 1).numpy(),
    }
    pooled = getattr(out, "pooler_output", None)
    if pooled is not None:
        res["pooled"] = pooled.numpy()
    if alias == "siglip2":
        head = model.head
        probe = head.probe.repeat(x.shape[0], 1, 1)
        _, w_att = head.attention(probe, out.last_hidden_state, out.last_hidden_state,
                                  need_weights=True, average_attn_weights=False)
        res["probe_attention"] = w_att[:, :, 0].numpy()
    return res
