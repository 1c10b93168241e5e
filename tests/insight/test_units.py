"""Text properties, correlations and the 8-bit storage of activations (charrnn/insight/units.py)."""
import numpy as np
import pytest

from charrnn.insight.units import (correlated_units, correlations, dequantise,
                                   gate_units_to_keep, quantise, text_properties,
                                   units_to_keep)


def test_the_properties_of_a_hand_made_text():
    text = 'He said "no (yes)" x\nOK 12'
    props = text_properties(text)
    ones = lambda name: set(np.flatnonzero(props[name]).tolist())
    assert ones("inside quotes") == set(range(8, 18))          # "no (yes)" with its quotes
    assert ones("inside brackets") == set(range(12, 17))       # (yes)
    assert list(props["position in line"][18:23]) == [19, 20, 0, 1, 2]
    assert ones("start of word") == {0, 3, 9, 13, 19, 21}
    assert ones("upper case") == {0, 21, 22}
    assert ones("line in capitals") == {0, 21, 22, 23, 24, 25}  # "H", then "OK 12"
    assert ones("digit") == {24, 25}
    assert list(props["position in word"][:5]) == [1, 2, 0, 1, 2]


def test_curly_quotes_open_and_close():
    props = text_properties("a \u201cb\u201d c")
    assert list(props["inside quotes"]) == [0, 0, 1, 1, 1, 0, 0]


def test_correlations_are_pearsons_r():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(200, 6))
    values[:, 5] = 3.0                                # a constant unit: r = 0
    feature = rng.normal(size=200) + values[:, 2]
    r = correlations(values, feature)
    expected = [np.corrcoef(values[:, u], feature)[0, 1] for u in range(5)]
    assert np.allclose(r[:5], expected) and r[5] == 0
    with pytest.raises(ValueError, match="constant feature"):
        correlations(values, np.ones(200))


def test_the_list_finds_a_planted_unit_and_skips_absent_properties():
    text = "ab (cd) ef (g) hij (k) " * 20
    inside = text_properties(text)["inside brackets"]
    rng = np.random.default_rng(1)
    states = {"c": rng.normal(0, 0.3, size=(2, len(text), 8))}
    states["c"][1, :, 6] = inside * 0.8 - 0.4 + rng.normal(0, 0.05, len(text))
    hits, absent = correlated_units(text, states, per_property=1)
    (brackets,) = [hit for hit in hits if hit.name == "inside brackets"]
    assert (brackets.layer, brackets.kind, brackets.unit) == (1, "c", 6) and brackets.r > 0.95
    assert {"inside quotes", "digit", "upper case"} <= set(absent)


def test_8_bit_codes_recover_the_activations_to_within_1_in_255():
    values = np.linspace(-1, 1, 10_001)
    codes = quantise(values)
    assert codes.dtype == np.uint8 and codes.min() == 0 and codes.max() == 255
    assert np.abs(dequantise(codes) - values).max() <= 1 / 255 + 1e-12
    assert (quantise(np.array([-5.0, 5.0])) == [0, 255]).all()     # clipped


def test_units_kept_fit_the_budget_and_include_the_wanted_ones():
    rng = np.random.default_rng(2)
    values = {"h": rng.normal(size=(2, 50, 10)), "c": rng.normal(size=(2, 50, 10))}
    values["h"][0, :, 3] *= 10                         # the unit that varies most
    # 51 values a unit: its 50 activations and the start state
    assert all(len(u) == 10 for u in units_to_keep(values, 4 * 51 * 10, []).values())
    assert all(len(u) == 9 for u in units_to_keep(values, 4 * 51 * 10 - 1, []).values())
    kept = units_to_keep(values, 4 * 51 * 3, [(1, "c", 9)])
    assert all(len(u) == 3 for u in kept.values())
    assert 9 in kept[(1, "c")] and 3 in kept[(0, "h")]
    assert sum(len(u) for u in kept.values()) * 51 <= 4 * 51 * 3
    wanted = [(0, "h", u) for u in (7, 1, 2, 5)]      # more than there is room for
    assert list(units_to_keep(values, 4 * 51 * 3, wanted)[(0, "h")]) == [1, 2, 7]


def test_gates_are_kept_for_the_same_units_in_every_gate_within_the_room_left():
    rng = np.random.default_rng(3)
    values = {"h": rng.normal(size=(2, 50, 10)), "c": rng.normal(size=(2, 50, 10))}
    values["c"][1, :, 6] *= 10                         # the cell that varies most
    assert all(len(u) == 10 for u in gate_units_to_keep(values, 4 * 50 * 2 * 10, []).values())
    kept = gate_units_to_keep(values, 4 * 50 * 2 * 3 + 399, [(0, "h", 2)])   # room for 3
    assert {layer: len(u) for layer, u in kept.items()} == {0: 3, 1: 3}
    assert 2 in kept[0] and 6 in kept[1]
    assert all(len(u) == 0 for u in gate_units_to_keep(values, 399, []).values())
    assert all(len(u) == 0 for u in gate_units_to_keep(values, -5, []).values())
