"""lr-weights show: the module's own expansion, in every output format."""

import json

import pytest

from lr_weights.archs.blocks import SD, SDXL
from lr_weights.args.lbw import LBW_PRESETS
from lr_weights.args.weights import resolve_block_lr_weights

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
    assert blocks["IN07"]["status"] == "train"  # 7/11 = 0.64 > 0.5 (IN06, a downsampler, has no LoRA modules)


def test_threshold_above_every_weight_is_an_error(cli):
    result = cli("show", "down=linear", "mid=0.5", "up=linear", "threshold=2")
    assert result.code == 1
    assert "nothing in the U-Net would train" in result.err
    assert "pruned: IN00, IN01" in result.out  # the table is still shown


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
        (["show", "sine+"], "an offset after the sign"),
        (["show", "bogus"], "LBW preset"),
        (["show", "down=bogus"], "down_lr_weight='bogus'"),
        (["show", "left=1"], "KEY is one of"),
        (["show", "OUTD", "down=1"], "not both"),
        (["show", "--arch", "sdxl", "lbw=" + ",".join(["1"] * 17)], "12 or 20"),
    ],
)
def test_bad_specs_are_one_line_errors(cli, argv, fragment):
    result = cli(*argv)
    assert result.code == 2
    assert result.usage.startswith("usage: lr-weights show")
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


def _upstream_presets():
    from tests.conftest import UPSTREAM

    return json.loads((UPSTREAM / "presets.json").read_text(encoding="utf-8"))["newest"]


@pytest.mark.parametrize("entry", _upstream_presets(), ids=lambda e: f"{e['family']}-{e['preset']}")
def test_bare_spec_expands_as_upstream(cli, entry):
    # The values sd-scripts' get_block_lr_weight returned for this preset (threshold 0, its default).
    arch = ["--arch", "sdxl"] if entry["family"] == "sdxl" else []
    result = cli("show", entry["preset"], "--format", "json", *arch)
    document = json.loads(result.out)
    assert document["spec"] == entry["preset"]
    assert document["values"] == entry["values_threshold_0"]
    assert len(document["values"]) == entry["n"]


def test_bare_spec_table_lists_each_value_with_its_blocks(cli):
    result = cli("show", "sine+.25")
    assert result.code == 0, result.err
    rows = [line.split() for line in result.out.splitlines()[2:14]]
    # printed with 6 significant digits: rounding moves a value by at most half a unit of the 6th
    assert [float(r[1]) for r in rows] == pytest.approx(SINE_25, rel=5e-6)
    assert rows[0][2:] == ["IN00", "OUT00"] and rows[11][2:] == ["IN11", "OUT11"]


def test_bare_spec_is_down_and_up_in_the_other_formats(cli):
    args = dict(part.strip('"').split("=", 1) for part in cli("show", "sine+.25", "--format", "sd-scripts").out.split()[1:])
    assert resolve_block_lr_weights(SD, args["down_lr_weight"], args["mid_lr_weight"], args["up_lr_weight"]) == resolve_block_lr_weights(
        SD, "sine+.25", None, "sine+.25"
    )
    assert cli("show", "sine+.25", "down=1").code == 2  # down given twice


def _statuses(cli, *argv):
    document = json.loads(cli("show", *argv, "--format", "json").out)
    return {b["block"]: b["status"] for b in document["blocks"]}


@pytest.mark.parametrize("arch, conv", [("sd1", False), ("sd1", True), ("sdxl", False), ("sdxl", True)])
def test_show_and_plan_agree_on_which_blocks_train(cli, arch, conv):
    weights = ["down=sine+.25", "mid=1", "up=cosine+.25"]
    show_arch = "sdxl" if arch == "sdxl" else "sd"
    statuses = _statuses(cli, *weights, *(["conv_dim=4"] if conv else []), "--arch", show_arch)
    network_args = [w.replace("=", "_lr_weight=", 1) for w in weights] + (["conv_dim=4"] if conv else [])
    plan = json.loads(cli("plan", "--arch", arch, "--json", "--network_args", *network_args).out)
    planned = {row["name"]: row["status"] for row in plan["rows"] if row["block"] >= 0}
    assert planned.keys() == statuses.keys()
    for block, status in planned.items():
        assert (status == "train") == (statuses[block] == "train"), block
    if not conv:  # SD: the LoRA blocks of the LBW 17 vector, minus BASE (README's block map)
        trained = sorted(b for b, s in statuses.items() if s == "train")
        if arch == "sd1":
            assert trained == sorted(["IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00"] + [f"OUT{i:02d}" for i in range(3, 12)])
        assert statuses["IN03" if arch == "sd1" else "IN01"].startswith("no modules (conv only")


def test_near_miss_key_gets_a_suggestion(cli):
    result = cli("show", "down_lr_weigth=sine")
    assert result.code == 2
    assert "did you mean down_lr_weight?" in result.err
    assert result.usage.startswith("usage: lr-weights show")


def test_plot_marks_pruned_and_moduleless_blocks(cli, tmp_path, monkeypatch):
    from lr_weights.cli import _util, show

    drawn = {}
    monkeypatch.setattr(show, "save_bar_chart", lambda *a, **k: drawn.update(args=a, kwargs=k))
    cli("show", "down=linear", "up=1", "--unet-lr", "1e-4", "--plot", tmp_path / "w.png")
    labels, series, ylabel = drawn["args"][1], drawn["args"][2], drawn["args"][4]
    kinds = dict(zip(labels, drawn["kwargs"]["kinds"]))
    assert kinds["IN00"] == "pruned" and kinds["IN03"] == "no modules" and kinds["IN01"] == "train"
    assert set(kinds.values()) <= set(_util.BAR_STYLES)
    assert ylabel == "effective U-Net LR" and series[0][1][labels.index("OUT05")] == pytest.approx(1e-4)
    assert drawn["kwargs"]["xlabel"] == "U-Net block"


def test_plot_is_drawn(cli, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "w.png"
    assert cli("show", "down=linear", "up=1", "--plot", path, "--plot-size", "600x300").code == 0
    assert png_size(path) == (600, 300)


def test_plot_into_a_missing_folder_fails_before_any_work(cli, tmp_path):
    result = cli("show", "down=linear", "--plot", tmp_path / "missing" / "w.png")
    assert result.code == 2
    assert f"--plot='{tmp_path / 'missing' / 'w.png'}'" in result.err and "does not exist" in result.err
    assert result.out == ""


def test_flux_stacks_threshold_and_lrs(cli):
    result = cli("show", "--arch", "flux", "double=sine+.25", "single=cosine", "threshold=0.3", "--unet-lr", "1e-4", "--format", "json")
    assert result.code == 0, result.err
    document = json.loads(result.out)
    blocks = {b["block"]: b for b in document["blocks"]}
    assert [b["block"] for b in document["blocks"]] == ["IN"] + [f"D{i:02d}" for i in range(19)] + [f"S{i:02d}" for i in range(38)] + ["OUT"]
    assert blocks["D00"]["status"] == "pruned" and blocks["D18"]["lr"] == pytest.approx(1.25e-4)
    assert blocks["S37"]["status"] == "pruned" and blocks["S00"]["status"] == "train" and blocks["IN"]["status"] == "no modules"
    assert set(document["network_args"]) == {"double_lr_weight", "single_lr_weight"}


def test_flux_lbw_vector_names_both_encoders(cli):
    vector = ",".join(["0.5", "0", "1"] + ["0.5"] * 19 + ["1"] * 38 + ["1"])
    result = cli("show", "--arch", "flux", vector, "--format", "json")
    document = json.loads(result.out)
    assert document["text_encoders"] == {"TE1": 0.5, "TE3": 0.0}
    assert cli("show", "--arch", "flux", vector, "--format", "lbw").out.strip() == vector


def test_flux_refuses_sd_keys_and_bare_specs(cli):
    result = cli("show", "--arch", "flux", "down=sine")
    assert result.code != 0 and "double_lr_weight, single_lr_weight" in result.err
    result = cli("show", "--arch", "flux", "sine")
    assert result.code != 0 and "double=" in result.err
