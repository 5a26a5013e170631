"""lr-weights show: the module's own expansion, in every output format."""

import json

import pytest

from lr_weights.blocks import SD, SDXL
from lr_weights.lbw import LBW_PRESETS
from lr_weights.weights import resolve_block_lr_weights

from .conftest import png_size

SINE_25 = [0.25, 0.39231483827328517, 0.5317325568414297, 0.6654150130018863, 0.7906408174555976, 0.904860733945285,
           1.0057495743542582, 1.091253532831181, 1.1596319953545184, 1.2094929736144975, 1.2398214418809328, 1.25]


def test_table_shows_weights_lrs_and_status(cli):
    result = cli("show", "down=sine+.25", "mid=1", "up=cosine+.25", "--unet-lr", "1e-4")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    in01 = next(line for line in lines if line.startswith("IN01 "))
    assert in01.split() == ["IN01", "1", "0.3923", "3.923e-05", "train"]
    assert next(line for line in lines if line.startswith("IN00 ")).endswith("no modules")
    assert lines[-1] == "pruned: none"


def test_json_matches_upstream_expansion(cli):
    result = cli("show", "down_lr_weight=sine+.25", "mid_lr_weight=1", "up_lr_weight=cosine+.25", "--format", "json", "--unet-lr", "2e-4")
    document = json.loads(result.out)
    weights = [b["weight"] for b in document["blocks"]]
    assert weights[:12] == SINE_25  # CONTRACT §4, upstream's printed values
    assert weights[13:] == SINE_25[::-1]
    assert document["blocks"][5]["lr"] == pytest.approx(2e-4 * SINE_25[5])
    assert document["trains"] is True


def test_threshold_prunes_by_weight_alone(cli):
    result = cli("show", "down=linear", "up=reverse_linear", "--threshold", "0.5", "--format", "json")
    blocks = {b["block"]: b for b in json.loads(result.out)["blocks"]}
    assert blocks["IN05"]["status"] == "pruned" and blocks["IN05"]["weight"] == 0  # linear: 5/11 = 0.45
    assert blocks["IN06"]["status"] == "train"  # 6/11 = 0.55 > 0.5


def test_threshold_above_every_weight_is_an_error(cli):
    result = cli("show", "down=linear", "mid=0.5", "up=linear", "threshold=2")
    assert result.code == 1
    assert "nothing in the U-Net would train" in result.err
    assert "pruned: IN01" in result.out  # the table is still shown


def test_sd_scripts_format_round_trips(cli):
    result = cli("show", "down=sine", "mid=0.5", "up=cosine", "--format", "sd-scripts")
    assert result.out.startswith("--network_args ")
    args = dict(part.strip('"').split("=", 1) for part in result.out.split()[1:])
    expected = resolve_block_lr_weights(SD, "sine", "0.5", "cosine")
    assert resolve_block_lr_weights(SD, args["down_lr_weight"], args["mid_lr_weight"], args["up_lr_weight"]) == expected


def test_lbw_in_and_out(cli):
    assert cli("show", "OUTD", "--format", "lbw", "--lbw-length", "17").out.strip() == LBW_PRESETS["OUTD"]
    full = cli("show", "lbw=" + LBW_PRESETS["IND"], "--format", "lbw").out.strip().split(",")
    assert len(full) == 26 and full[0] == "1"
    xl = cli("show", "--arch", "sdxl", "1,0,0,0,0,1,1,1,1,1,1,1", "--format", "json")
    document = json.loads(xl.out)
    assert document["base"] == 1 and len(document["blocks"]) == SDXL.num_blocks


def test_sdxl_layout(cli):
    result = cli("show", "--arch", "sdxl", "down=0,0,0,1,1,1,1,1,1", "mid=1,1,1", "up=cosine")
    names = [line.split()[0] for line in result.out.splitlines()[2:-1]]
    assert names == list(SDXL.block_names)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["show", "sine"], "down=sine"),
        (["show", "down=bogus"], "down_lr_weight='bogus'"),
        (["show", "left=1"], "KEY=VALUE with KEY one of"),
        (["show", "1,1,1"], "LBW preset"),
        (["show", "OUTD", "down=1"], "not both"),
        (["show", "--arch", "sdxl", "lbw=" + ",".join(["1"] * 17)], "12 or 20"),
    ],
)
def test_bad_specs_are_one_line_errors(cli, argv, fragment):
    result = cli(*argv)
    assert result.code == 2
    assert result.err.count("\n") == 1 and result.err.startswith("lr-weights show: error: ")
    assert fragment in result.err


def test_plot(cli, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "w.png"
    assert cli("show", "down=sine", "up=cosine", "--plot", path, "--plot-size", "800x300").code == 0
    assert png_size(path) == (800, 300)
    first = path.read_bytes()
    cli("show", "down=sine", "up=cosine", "--plot", path, "--plot-size", "800x300")
    assert path.read_bytes() == first  # deterministic output


def test_help_has_examples(cli, capsys):
    for command in ("show", "plan", "gui", "inspect", "bake"):
        with pytest.raises(SystemExit) as exit_info:
            cli(command, "--help")
        assert exit_info.value.code == 0
        assert "examples:" in capsys.readouterr().out
