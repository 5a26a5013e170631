"""Kept for scripts written against the documented `lr_weights.lbw.parse_lbw`: LBW lives in
lr_weights.args.lbw now, with the other network_args parsers."""

from lr_weights.args.lbw import (  # noqa: F401  (re-exported public names)
    LBW_PRESETS,
    LBWWeights,
    block_weights_to_network_args,
    lbw_lengths,
    lbw_to_network_args,
    lbw_vector,
    parse_lbw,
)
