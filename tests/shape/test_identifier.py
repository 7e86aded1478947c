"""The identifier: every implant of a film embedded, the descriptor composed in, the encoder's turn honoured."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from raiox.adapters.imaging import ImageError
from raiox.shape import network
from raiox.shape.canonical import FINDER_VERSION
from raiox.shape.identifier import REFERENCE_AGREEMENT_MARGIN, ShapeIdentifier, ShapeModel, reference_implants
from raiox.tools.implant_designs import SceneOptions, random_systems
from raiox.tools.render import render_film

PLAIN = SceneOptions(upper_jaw=False, restoration="none", neighbours=0, photographed=False, quarter_turns=0,
                     mirrored=False, bits=8, jpeg_quality=0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shape encoder with seeded random weights, saved as `raiox train` saves one."""
    import torch

    torch.manual_seed(3)
    config = network.ShapeNetConfig.named("raiox-shape-s")
    path = tmp_path_factory.mktemp("shape") / "random.pt"
    network.save(network.build(config), config, path, meta={"name": "raiox-shape-s"})
    return path


def test_a_checkpoint_path_alone_loads_the_shape_encoder(checkpoint: Path) -> None:
    identifier = ShapeIdentifier.load("", str(checkpoint), device="cpu")
    assert identifier.model.kind == "shape" and identifier.model_id.startswith("raiox-shape-s@")
    assert identifier.model_id.endswith(f"+find{FINDER_VERSION}-d0.05")
    again = ShapeIdentifier.load("", str(checkpoint), device="cpu", descriptor_weight=0.3)
    assert again.model_id != identifier.model_id  # the descriptor's share changes the vectors


def test_every_implant_of_a_film_gets_a_unit_vector_and_a_summary(checkpoint: Path) -> None:
    identifier = ShapeIdentifier.load("", str(checkpoint), device="cpu")
    data, truth = render_film(random_systems(1, seed=3)[0], 11, SceneOptions(**{**PLAIN.__dict__, "neighbours": 1}))
    batch = identifier.identify([data, b"not an image"])
    assert isinstance(batch.errors[1], ImageError) and 1 not in batch.films
    film = batch.films[0]
    assert len(film.implants) >= 2 and [i.position for i in film.implants] == list(range(len(film.implants)))
    for implant in film.implants:
        assert implant.embedding.shape == (512,) and math.isclose(float(np.linalg.norm(implant.embedding)), 1,
                                                                   rel_tol=1e-5)
        summary = implant.summary()
        assert summary["found"] and len(summary["box"]) == 4 and "pitch_per_diameter" in summary["measured"]
        assert set(summary["read"]["values"]) >= {"thread_profile", "apex", "connection"}
        assert implant.crop_png().startswith(b"\x89PNG")
    assert identifier.encode([data]).embeddings[0].tolist() == film.primary.embedding.tolist()


def test_the_similarity_weighs_embedding_and_descriptor_as_configured(checkpoint: Path) -> None:
    identifier = ShapeIdentifier.load("", str(checkpoint), device="cpu", descriptor_weight=0.25)
    films = [render_film(system, 2, PLAIN)[0] for system in random_systems(2, seed=9)]
    a, b = (identifier.identify(films).films[i].primary for i in range(2))
    embeddings = identifier._run(np.stack([a.finding.crop, b.finding.crop]))[0]
    cos_e = float(embeddings[0] @ embeddings[1] / np.linalg.norm(embeddings[0]) / np.linalg.norm(embeddings[1]))
    da, db = a.descriptor.vector(), b.descriptor.vector()
    cos_d = float(da @ db / np.linalg.norm(da) / np.linalg.norm(db))
    assert float(a.embedding @ b.embedding) == pytest.approx(0.75 * cos_e + 0.25 * cos_d, abs=1e-4)


def test_the_encoder_turns_a_crop_it_judges_upside_down(checkpoint: Path) -> None:
    import torch

    model, _, _ = network.load(checkpoint)
    with torch.no_grad():
        model.upside_down.weight.zero_()
        model.upside_down.bias.fill_(5.0)  # every crop looks upside down to it
    identifier = ShapeIdentifier(ShapeModel(model, "raiox-shape-s"))
    data, _ = render_film(random_systems(1, seed=4)[0], 1, PLAIN)
    guessed = ShapeIdentifier.load("", str(checkpoint), device="cpu").identify([data]).films[0].primary
    turned = identifier.identify([data]).films[0].primary
    assert turned.turned and not guessed.turned
    assert turned.finding.platform_xy == guessed.finding.apex_xy
    assert turned.finding.apex_xy == guessed.finding.platform_xy


def _unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_a_reference_film_stands_for_the_implant_its_systems_other_films_agree_with() -> None:
    # The system's implant looks like (1, 0, 0); a film centred on a neighbour (0, 1, 0) with the system's implant
    # beside it stands for the one its other films agree with; one where no other implant agrees far better keeps
    # its first; so does a film with one implant, and one with nothing to agree with.
    system, neighbour, near = _unit(1, 0, 0), _unit(0, 1, 0), _unit(1, 0.3, 0)
    other = np.stack([system, _unit(0, 0, 1)])
    centred_on_neighbour = np.stack([neighbour, near])
    assert reference_implants([centred_on_neighbour, other, other]) == [1, 0, 0]
    barely = np.stack([_unit(1, 0.5, 0), system])  # its first agrees within the margin of its second
    assert float(system @ barely[1]) - float(system @ barely[0]) < REFERENCE_AGREEMENT_MARGIN
    assert reference_implants([barely, other]) == [0, 0]
    assert reference_implants([centred_on_neighbour]) == [0]
    assert reference_implants([neighbour[None, :], other]) == [0, 0]
    assert reference_implants([centred_on_neighbour], stored=[system, system]) == [1]  # kept references count


def test_the_inference_copy_gives_the_models_outputs_with_its_batch_norms_folded() -> None:
    import torch

    torch.manual_seed(0)
    model = network.build(network.ShapeNetConfig.named("raiox-shape-s")).eval()
    for module in model.modules():  # statistics as training leaves them, not the identity a new layer has
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    crops = torch.randint(0, 256, (3, 256, 64), dtype=torch.uint8)
    fast = network.for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the model itself is untouched
    with torch.inference_mode():
        for slow, quick in zip(model(crops), fast(crops), strict=True):
            assert torch.allclose(slow, quick, atol=1e-4)
