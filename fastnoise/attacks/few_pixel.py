"""Few-pixel attack by differential evolution (Su, Vargas & Sakurai, 2019, "One pixel
attack for fooling deep neural networks"), tensorized over images and population.

A candidate changes ``pixels`` pixels; each pixel is ``(row, col, value_1..value_C)``.
DE/rand/1/bin (their Eq. (2) plus binomial crossover): for every candidate, a mutant
``a + F (b - c)`` from three other random members of the same image's population,
crossed with the parent, replaces it when it lowers the true-class probability. The
whole population of every unfinished image goes through the model in batched forward
passes; an image stops as soon as one of its candidates is misclassified.

On a randomized model (Learn2Perturb, PNIL) the fitness is the mean over ``eot`` noise
draws (Expectation over Transformation, Athalye et al., 2018), and a candidate counts as
misclassified only when every one of those draws misclassifies it and ``stop_draws``
fresh draws confirm it (fresh, so that a candidate picked for its lucky draws among the
whole population is not confirmed by those same draws).

It is an L0 attack: ``eps`` is ``math.inf`` and ``norm`` is ``"l0"`` (at most ``pixels``
pixels change, by any amount inside the box).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from fastnoise import _validation as v
from fastnoise.attacks.base import Attack
from fastnoise.attacks.eot import default_chunk

__all__ = ["FewPixel", "apply_pixels"]


def apply_pixels(images: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Copies of ``images`` (N, C, H, W) with the pixels of ``candidates``
    (N, pixels, 2 + C: row, col, channel values) written in. Coordinates are floored."""
    n, channels, height, width = images.shape
    out = images.clone()
    rows = candidates[..., 0].floor().long().clamp(0, height - 1)
    cols = candidates[..., 1].floor().long().clamp(0, width - 1)
    which = torch.arange(n, device=images.device)[:, None].expand_as(rows)
    # out[i, :, r, c] = value for every (image, pixel): advanced indexing puts C last.
    out[which, :, rows, cols] = candidates[..., 2:].to(images.dtype)
    return out


def _three_others(batch: int, population: int, device: torch.device) -> torch.Tensor:
    """Indices (batch, population, 3) of three distinct members, none the candidate itself.

    Sampling without replacement in O(B P) memory: draw the k-th index from the
    population - 1 - k slots left, then shift it past every excluded index in ascending
    order, which maps the draw onto the remaining members one to one."""
    excluded = torch.arange(population, device=device).expand(batch, population)[..., None]
    picks = []
    for k in range(3):
        draw = torch.randint(0, population - 1 - k, (batch, population, 1), device=device)
        for column in excluded.sort(dim=-1).values.unbind(-1):
            draw = draw + (draw >= column[..., None]).long()
        picks.append(draw)
        excluded = torch.cat([excluded, draw], dim=-1)
    return torch.cat(picks, dim=-1)


class FewPixel(Attack):
    """Differential-evolution L0 attack changing at most ``pixels`` pixels per image.

    ``population`` candidates per image evolve for up to ``iterations`` generations with
    mutation factor ``mutation`` (F) and crossover rate ``crossover`` (1.0, the paper's
    choice, means the mutant is taken whole). Fitness is the softmax probability of the
    true class, averaged over ``eot`` noise draws. ``chunk``: most rows per forward pass
    (None: :func:`.eot.default_chunk`). ``early_stop=False`` runs every generation for
    every image (fixed work, for timing).

    A hit (the image's result, and with ``early_stop`` the end of its search) is a
    candidate misclassified on all its ``eot`` fitness draws and then on each of
    ``stop_draws`` (None: ``eot``) fresh independent draws, so one lucky draw of a
    randomized model does not end the search. A deterministic model needs neither.
    """

    name = "pixel"
    kind = "gradient-free"
    norm = "l0"

    def __init__(
        self,
        model: nn.Module,
        pixels: int = 1,
        population: int = 400,
        iterations: int = 75,
        *,
        eot: int = 1,
        stop_draws: int | None = None,
        mutation: float = 0.5,
        crossover: float = 1.0,
        chunk: int | None = None,
        early_stop: bool = True,
        eps: float = math.inf,
        clip: Sequence[float] = (0.0, 1.0),
        compile: bool | str = False,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(model, eps, eot=eot, clip=clip, compile=compile, eval_mode=eval_mode)
        self.stop_draws = (
            self.eot if stop_draws is None else v.check_positive_int("stop_draws", stop_draws)
        )
        self.pixels = v.check_positive_int("pixels", pixels)
        self.population = v.check_positive_int("population", population)
        if self.population < 4:
            raise ValueError(f"population must be >= 4 (DE mixes three others), got {population}")
        self.iterations = v.check_positive_int("iterations", iterations)
        self.mutation = v.check_non_negative_number("mutation", mutation)
        self.crossover = v.check_non_negative_number("crossover", crossover)
        if self.crossover > 1:
            raise ValueError(f"crossover must be in [0, 1], got {crossover}")
        self.chunk = None if chunk is None else v.check_positive_int("chunk", chunk)
        self.early_stop = bool(early_stop)

    def _scores(
        self,
        images: torch.Tensor,
        y: torch.Tensor,
        flat: torch.Tensor,
        owner: torch.Tensor,
        draws: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean true-class probability over ``draws`` noise draws and whether every draw
        misclassified, both (N,), for N candidates ``flat`` of images ``owner``.

        Row ``i * draws + l`` of the batched passes is draw ``l`` of candidate ``i`` (rows
        get their own draws); noise drawn once per forward (PNI-W) gets one pass per draw.
        """
        count = flat.shape[0]
        separate = draws > 1 and self._separate(images)
        device = images.device
        chunk = self.chunk or default_chunk(images)
        probs = torch.empty(count, draws, device=device)
        fooled = torch.empty(count, draws, dtype=torch.bool, device=device)
        if separate:
            passes = (
                (torch.arange(start, min(start + chunk, count), device=device), copy)
                for copy in range(draws)
                for start in range(0, count, chunk)
            )
        else:
            rows = torch.arange(count * draws, device=device)
            passes = (
                (rows[start : start + chunk] // draws, rows[start : start + chunk] % draws)
                for start in range(0, count * draws, chunk)
            )
        for candidate, copy in passes:
            rows = owner[candidate]
            logits = self.forward(apply_pixels(images[rows], flat[candidate])).float()
            probs[candidate, copy] = logits.softmax(1).gather(1, y[rows, None]).squeeze(1)
            fooled[candidate, copy] = logits.argmax(1) != y[rows]
        return probs.mean(1), fooled.all(1)

    def _separate(self, images: torch.Tensor) -> bool:
        # Attack.separate_passes (noise drawn once per forward, PNI-W), where present.
        decide = getattr(super(), "separate_passes", None)
        return bool(decide(images)) if decide is not None else False

    def _fitness(
        self, images: torch.Tensor, y: torch.Tensor, pop: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """True-class probability (mean over ``eot`` draws) and misclassified-on-every-draw
        flag, both (B, P), for a population."""
        batch, population = pop.shape[:2]
        owner = torch.arange(batch, device=images.device).repeat_interleave(population)
        probs, fooled = self._scores(images, y, pop.flatten(0, 1), owner, self.eot)
        return probs.view(batch, population), fooled.view(batch, population)

    def _confirm(
        self, images: torch.Tensor, y: torch.Tensor, pop: torch.Tensor, flagged: torch.Tensor
    ) -> torch.Tensor:
        """``flagged`` (B, P) narrowed to the candidates that ``stop_draws`` fresh draws all
        misclassify; only the flagged candidates are evaluated."""
        which = flagged.nonzero()
        if which.numel() == 0:
            return flagged
        owner, member = which.unbind(1)
        _, fooled = self._scores(images, y, pop[owner, member], owner, self.stop_draws)
        confirmed = torch.zeros_like(flagged)
        confirmed[owner[fooled], member[fooled]] = True
        return confirmed

    def _random_population(self, batch: int, images: torch.Tensor) -> torch.Tensor:
        _, channels, height, width = images.shape
        lo, hi = self.clip
        u = torch.rand(batch, self.population, self.pixels, 2 + channels, device=images.device)
        scale = torch.tensor([height, width] + [hi - lo] * channels, device=images.device)
        offset = torch.tensor([0.0, 0.0] + [lo] * channels, device=images.device)
        return u * scale + offset

    def _clamp(self, pop: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        _, _, height, width = images.shape
        lo, hi = self.clip
        low = torch.tensor([0.0, 0.0] + [lo] * (pop.shape[-1] - 2), device=pop.device)
        high = torch.tensor(
            [height - 1e-3, width - 1e-3] + [hi] * (pop.shape[-1] - 2), device=pop.device
        )
        return torch.maximum(torch.minimum(pop, high), low)

    @torch.no_grad()
    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(
                f"x must be images (N, C, H, W) for the pixel attack, got {tuple(x.shape)}"
            )
        x_adv = x.clone()
        active = torch.arange(x.shape[0], device=x.device)
        found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        pop = self._random_population(x.shape[0], x)
        fitness, fooled = self._fitness(x, y, pop)
        for generation in range(self.iterations + 1):
            # An image keeps its first misclassified candidate, once fresh draws confirm it;
            # with early_stop it also leaves the search, so later generations only evaluate
            # unfinished images. A flag that fails confirmation is dropped.
            fooled = self._confirm(x[active], y[active], pop, fooled & ~found[active, None])
            done = fooled.any(1)
            if done.any():
                winner = fooled.float().argmax(1)
                idx = done.nonzero().squeeze(1)
                x_adv[active[idx]] = apply_pixels(x[active[idx]], pop[idx, winner[idx]])
                found[active[idx]] = True
            if self.early_stop:
                keep = ~found[active]
                active, pop, fitness = active[keep], pop[keep], fitness[keep]
            if active.numel() == 0 or generation == self.iterations:
                break
            images, labels = x[active], y[active]
            batch, population = pop.shape[:2]
            # Mutation: a + F (b - c) with a, b, c distinct and not the parent.
            others = _three_others(batch, population, x.device)
            image_index = torch.arange(batch, device=x.device)[:, None]
            a, b, c = (pop[image_index, others[..., k]] for k in range(3))
            mutant = a + self.mutation * (b - c)
            # Binomial crossover per gene; one forced gene keeps the child from being the parent.
            genes = pop.shape[2] * pop.shape[3]
            take = torch.rand(batch, population, genes, device=x.device) < self.crossover
            forced = torch.randint(0, genes, (batch, population, 1), device=x.device)
            take.scatter_(2, forced, True)
            child = torch.where(take.view_as(pop), mutant, pop)
            child = self._clamp(child, images)
            child_fitness, child_fooled = self._fitness(images, labels, child)
            # Selection: the child replaces its parent when the true class got less likely.
            better = (child_fitness < fitness) | child_fooled
            pop = torch.where(better[..., None, None], child, pop)
            fitness = torch.where(better, child_fitness, fitness)
            fooled = child_fooled & better
        return x_adv
