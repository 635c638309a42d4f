"""samkit.families: every spec's model file registers its builder and key remap."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from samkit import families, specs
from samkit.families import builder_for, register_builder, register_remap, remap_for

NEURAL = [n for n, s in specs.MODELS.items() if s.neural]


@pytest.mark.parametrize("name", list(specs.MODELS))
def test_every_spec_has_a_registered_builder_in_its_model_file(name):
    spec = specs.MODELS[name]
    fn = builder_for(spec)
    assert fn.__module__ == spec.module, f"{name} is built by {fn.__module__}, but its spec names {spec.module}"


@pytest.mark.parametrize("name", NEURAL)
def test_every_neural_spec_builds_with_its_memory_and_has_a_remap(name):
    spec = specs.MODELS[name]
    with torch.device("meta"):
        model = builder_for(spec)()
    assert isinstance(model, torch.nn.Module) and len(model.state_dict()) > 0
    assert remap_for(spec) is not None, f"no remap registered for checkpoint format {spec.checkpoint_format!r}"
    memory = getattr(model, "memory_config", None)
    assert (memory is not None) == spec.video
    if memory is not None:
        assert memory.image_size == spec.input_size == model.image_size


def test_registering_a_second_function_under_a_name_fails(monkeypatch):
    monkeypatch.setattr(families, "_BUILDERS", {})
    monkeypatch.setattr(families, "_REMAPS", {})

    @register_builder("dup")
    def build_one():
        return None

    register_builder("dup")(build_one)  # the same function again (a module re-import) is fine
    with pytest.raises(ValueError, match="registered twice"):
        @register_builder("dup")
        def build_two():
            return None

    @register_remap("fmt")
    def remap_one(sd):
        return sd

    with pytest.raises(ValueError, match="registered twice"):
        @register_remap("fmt")
        def remap_two(sd):
            return sd


def test_a_spec_whose_module_registers_nothing_says_so():
    spec = specs.ModelSpec(name="nowhere", family="x", module="samkit.layers", url=None, filename=None,
                           license="-", paper="-", checkpoint_format="none")
    with pytest.raises(ImportError, match=r"registers no builder for model 'nowhere'.*register_builder"):
        builder_for(spec)


def test_import_samkit_imports_no_family():
    code = ("import sys, samkit, samkit.specs, samkit.families; "
            "print([m for m in sys.modules if m.startswith('samkit.models') or m.startswith('samkit.backbones')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
