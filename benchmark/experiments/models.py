"""Small convolutional encoder/decoder around a quantizer (the ``vqvae`` experiment).

Shape of the VQ-VAE of van den Oord et al. 2017, shrunk to train in minutes on a CPU:
encoder = ``downsamples`` x (4x4 conv, stride 2, ReLU) -> ``res_blocks`` residual blocks
(ReLU, 3x3 conv, ReLU, 1x1 conv) -> 1x1 conv to ``dim`` latent channels; the decoder mirrors it
(1x1 conv -> residual blocks -> ``downsamples`` x 4x4 transposed conv, stride 2). The decoder
output is linear (no sigmoid); evaluation clips reconstructions to [0, 1].

Memory format: weights and activations are channels-last (NHWC strides, ``torch.channels_last``).
The latents are channels-last by interface (B, h, w, dim) anyway, so the permutes at the quantizer
become free views, and oneDNN's kernels for these tiny convolutions (4x4 and 8x8 maps, 1 to 32
channels) run faster on NHWC: a digits training step (hidden 32, batch 128, one thread) 13.9 ->
12.6 ms, a 16x16 patch step (two downsamples) 32.5 -> 29.3 ms (interleaved medians of 7). The
math is the same convolution; only the summation order inside the kernels differs (float rounding).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from benchmark.experiments.config import ConfigError


@dataclass(frozen=True)
class ModelOptions:
    """``model_options`` of a vqvae or transplant run (params.yaml key = field name).

    ``prior_steps`` > 0 trains the downstream autoregressive prior on the tokenizer's token grids
    (:mod:`benchmark.experiments.prior`) for that many steps, the same for every method: 0 = off.
    ``autoencoder_steps`` and ``decoder_finetune_steps`` belong to the transplant experiment only:
    the steps of the quantizer-free autoencoder trained once per dataset, and of the optional
    decoder fine-tune on the quantized latents (0 = the frozen decoder as trained).
    """

    hidden: int = 64  # hidden channels of every conv layer
    downsamples: int = 2  # stride-2 stages: latent side = image side / 2**downsamples
    res_blocks: int = 1  # residual blocks in the encoder and in the decoder
    prior_steps: int = 0  # training steps of the downstream token prior, 0 = no prior
    autoencoder_steps: int = 1000  # transplant only: steps of the plain autoencoder
    decoder_finetune_steps: int = 0  # transplant only: decoder fine-tune on quantized latents

    TRANSPLANT_ONLY = ("autoencoder_steps", "decoder_finetune_steps")

    def __post_init__(self) -> None:
        for name, low in (("hidden", 1), ("downsamples", 0), ("res_blocks", 0), ("prior_steps", 0),
                          ("autoencoder_steps", 1), ("decoder_finetune_steps", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"model_options.{name}: must be an integer >= {low}, got {value!r}")

    def check_experiment(self, experiment: str, given: Mapping[str, Any]) -> None:
        """ConfigError naming a transplant-only option given to another experiment."""
        if experiment != "transplant":
            for name in self.TRANSPLANT_ONLY:
                if name in given:
                    raise ConfigError(f"model_options.{name}: only used by the transplant experiment, "
                                      f"not {experiment!r}")

    def architecture(self) -> tuple[int, int, int]:
        """The fields that shape the encoder/decoder (a cache key of trained autoencoders)."""
        return (self.hidden, self.downsamples, self.res_blocks)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "ModelOptions":
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in valid:
                raise ConfigError(f"model_options.{key}: unknown model option; valid: {valid}")
        return cls(**dict(values))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class Encoder(nn.Module):
    """(B, C, H, W) images -> (B, dim, H / 2**downsamples, W / 2**downsamples) latents."""

    def __init__(self, channels: int, dim: int, options: ModelOptions) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = channels
        for _ in range(options.downsamples):
            layers += [nn.Conv2d(width, options.hidden, 4, stride=2, padding=1), nn.ReLU()]
            width = options.hidden
        if options.downsamples == 0:
            layers += [nn.Conv2d(width, options.hidden, 3, padding=1)]
        layers += [ResidualBlock(options.hidden) for _ in range(options.res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(options.hidden, dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(B, dim, h, w) latents -> (B, C, h * 2**downsamples, w * 2**downsamples) images."""

    def __init__(self, channels: int, dim: int, options: ModelOptions) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(dim, options.hidden, 3, padding=1)]
        layers += [ResidualBlock(options.hidden) for _ in range(options.res_blocks)]
        layers += [nn.ReLU()]
        for stage in range(options.downsamples):
            last = stage == options.downsamples - 1
            layers += [nn.ConvTranspose2d(options.hidden, channels if last else options.hidden, 4, 2, 1)]
            if not last:
                layers += [nn.ReLU()]
        if options.downsamples == 0:
            layers += [nn.Conv2d(options.hidden, channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class AutoEncoder(nn.Module):
    """Encoder + decoder; the quantizer is held outside (it has its own optimizer group)."""

    MEMORY_FORMAT = torch.channels_last  # of weights and activations: module docstring

    def __init__(self, channels: int, size: int, dim: int, options: ModelOptions) -> None:
        super().__init__()
        factor = 2**options.downsamples
        if size % factor:
            raise ConfigError(
                f"model_options.downsamples: image side {size} is not divisible by "
                f"2**{options.downsamples} = {factor}"
            )
        self.options = options
        self.encoder = Encoder(channels, dim, options)
        self.decoder = Decoder(channels, dim, options)
        self.to(memory_format=self.MEMORY_FORMAT)

    def extra_repr(self) -> str:
        """The memory format is in the repr, so memoised weights (keyed by the repr) trained under
        another format's rounding are not reused."""
        return f"memory_format={str(self.MEMORY_FORMAT).removeprefix('torch.')}"

    def encode(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> channels-last latents (B, h, w, dim)."""
        return self.encoder(images.contiguous(memory_format=self.MEMORY_FORMAT)).permute(0, 2, 3, 1)

    def decode(self, latents: Tensor) -> Tensor:
        """Channels-last latents (B, h, w, dim) -> (B, C, H, W)."""
        return self.decoder(latents.permute(0, 3, 1, 2).contiguous(memory_format=self.MEMORY_FORMAT))
