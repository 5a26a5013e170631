"""Models rebuilt on the meta device from the recorded sd-scripts skeletons (tests/fixtures/upstream)."""


from lr_weights.models.skeleton import load_skeleton

from .conftest import UPSTREAM

SKELETONS = UPSTREAM / "skeletons"


def rebuild(model: str):
    """(text_encoder, unet) as sd-scripts hands them to a network module: SDXL gets a list of two."""
    if model == "sdxl":
        return [load_skeleton(SKELETONS / "sdxl_te1.json"), load_skeleton(SKELETONS / "sdxl_te2.json")], load_skeleton(SKELETONS / "sdxl_unet.json")
    return load_skeleton(SKELETONS / f"{model}_te.json"), load_skeleton(SKELETONS / f"{model}_unet.json")


