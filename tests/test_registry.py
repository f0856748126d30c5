"""survey.registry.Registry: lazy built-ins, one-line refusals naming the name and where it was taken."""

from __future__ import annotations

import sys

import pytest

from survey.registry import Registry, RegistryError


def test_builtins_are_imported_only_when_asked_for():
    sys.modules.pop("survey.perturb.rings", None)
    reg = Registry("perturbation family", {"rings": "survey.perturb.rings:build"})
    assert reg.names() == ["rings"] and "rings" in reg
    assert "survey.perturb.rings" not in sys.modules
    assert callable(reg.get("rings")) and "survey.perturb.rings" in sys.modules
    assert reg.origin("rings") == "survey.perturb.rings" and reg.builtin("rings")


def test_a_taken_name_is_refused_naming_where_it_was_registered():
    reg = Registry("widget", {"builtin": "survey.perturb.rings:build"})

    def first():
        return 1

    def second():
        return 2

    reg.register("mine")(first)
    assert reg.register("mine")(first) is first            # the same object again: fine (a re-import)
    with pytest.raises(RegistryError, match=r"^widget 'mine' is already registered by .*test_registry\.py$"):
        reg.add("mine", second)
    with pytest.raises(RegistryError, match=r"^widget 'builtin' is already registered \(built in: "):
        reg.add("builtin", second)
    with pytest.raises(RegistryError, match=r"^unknown widget 'nope'; choose one of \['builtin', 'mine'\]$"):
        reg.get("nope")
    assert reg.get("nope", None) is None


def test_it_reads_as_a_mapping_and_test_entries_can_be_removed():
    reg = Registry("widget")
    reg["a"] = 1
    assert dict(reg) == {"a": 1} and len(reg) == 1 and reg["a"] == 1
    with pytest.raises(KeyError):
        reg["b"]
    del reg["a"]
    assert "a" not in reg


def test_the_package_registries_refuse_a_builtin_name():
    import survey.perturb
    import survey.physics

    with pytest.raises(RegistryError, match="physics kind 'mri' is already registered"):
        survey.physics.register("mri")(lambda **kw: None)
    with pytest.raises(RegistryError, match="perturbation family 'motion' is already registered"):
        survey.perturb.register("motion")(lambda **kw: None)
