"""The public surface: what ``datakiln`` and its subpackages declare, and one name per class."""

from __future__ import annotations

import importlib
import inspect

import pytest

import datakiln
from datakiln import errors

SUBPACKAGES = (
    "datakiln.cache",
    "datakiln.datasets",
    "datakiln.etl",
    "datakiln.etl.fields",
    "datakiln.etl.kernels",
    "datakiln.etl.modalities",
    "datakiln.readers",
    "datakiln.readers.sources",
    "datakiln.service",
    "datakiln.testing",
    "datakiln.writers",
)


def test_every_public_name_resolves_once():
    assert len(datakiln.__all__) == len(set(datakiln.__all__))
    for name in datakiln.__all__:
        assert getattr(datakiln, name) is not None, name
    assert set(datakiln.__all__) <= set(dir(datakiln))


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_each_subpackage_declares_what_it_offers(package):
    module = importlib.import_module(package)
    assert module.__doc__, f"{package} says nothing of what it is for"
    assert module.__all__, package
    for name in module.__all__:
        # a name, or a submodule the package lists without importing it
        found = hasattr(module, name) or importlib.import_module(f"{package}.{name}")
        assert found is not None, f"{package}.{name}"


def test_every_error_lives_in_errors_and_is_exported():
    defined = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, Exception) and not name.startswith("_")
    }
    assert {"ImageDecodeError", "AudioDecodeError", "LeaseHeldError"} <= defined
    assert defined <= set(datakiln.__all__)
    for name in defined:
        assert issubclass(getattr(errors, name), errors.DatakilnError), name


def test_moved_errors_stay_importable_from_their_old_modules():
    from datakiln.cache.local_dir import LocalLimitError
    from datakiln.readers.audio import AudioDecodeError
    from datakiln.readers.image import ImageDecodeError
    from datakiln.service.client import JobFailedError, ServiceError

    assert ImageDecodeError is datakiln.ImageDecodeError
    assert AudioDecodeError is datakiln.AudioDecodeError
    assert LocalLimitError is datakiln.LocalLimitError
    assert (ServiceError, JobFailedError) == (datakiln.ServiceError, datakiln.JobFailedError)
    from datakiln.readers.image import decode_image

    with pytest.raises(ValueError, match="not an image") as caught:  # the builtin callers catch
        decode_image(b"", representation="rgb", height=4, width=4)
    assert caught.value.stage == "open"


def test_the_guide_text_params_and_the_bake_text_params_are_two_names():
    assert datakiln.TextParams is not datakiln.TextBakeParams
    assert datakiln.TextParams.__module__ == "datakiln.datasets.configs"
    spec = datakiln.BakeSpec(
        sources=("corpus/*.txt",),
        output="out",
        modality="text",
        text=datakiln.TextBakeParams(vocab_size=300, max_length=16),
    )
    assert spec.text.vocab_size == 300


def test_a_wrong_params_class_is_named_with_its_module():
    with pytest.raises(datakiln.SpecError) as caught:
        datakiln.BakeSpec(
            sources=("corpus/*.txt",),
            output="out",
            modality="text",
            text=datakiln.TextParams(vocab_size=300, max_length=16),
        )
    message = str(caught.value)
    assert "text must be TextBakeParams" in message
    assert "got datakiln.datasets.configs.TextParams" in message


def test_a_same_named_class_is_told_apart_by_module():
    class TextBakeParams:  # a user's class that happens to share the name
        pass

    with pytest.raises(datakiln.SpecError) as caught:
        datakiln.BakeSpec(sources=("a.txt",), output="out", text=TextBakeParams())
    message = str(caught.value)
    assert "must be datakiln.etl.spec.TextBakeParams" in message
    assert f"got {__name__}." in message


def test_a_field_with_the_wrong_params_class_is_named_with_its_module():
    with pytest.raises(datakiln.SpecError, match=r"must be TextBakeParams.*got datakiln\.datasets"):
        datakiln.FieldSpec(name="caption", modality="text", params=datakiln.TextParams())
