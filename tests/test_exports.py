"""The public surface: every public name is exported once, and documented."""

from __future__ import annotations

import types

import pagewal


def test_every_public_name_is_exported_exactly_once() -> None:
    assert len(pagewal.__all__) == len(set(pagewal.__all__))
    for name in pagewal.__all__:
        assert hasattr(pagewal, name), name
    public = {n for n, v in vars(pagewal).items()
              if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public == set(pagewal.__all__)


def test_the_harness_exports_its_public_names_once() -> None:
    from pagewal import harness

    assert len(harness.__all__) == len(set(harness.__all__))
    assert all(hasattr(harness, name) for name in harness.__all__)


def test_the_trio_adapter_exports_its_public_names_once_and_documents_them() -> None:
    import pagewal.trio

    assert (pagewal.trio.__doc__ or "").strip()
    assert sorted(pagewal.trio.__all__) == sorted(set(pagewal.trio.__all__))
    for name in pagewal.trio.__all__:
        obj = getattr(pagewal.trio, name)
        assert (obj.__doc__ or "").strip(), f"pagewal.trio.{name} has no docstring"
    methods = {n: v for n, v in vars(pagewal.trio.TrioWal).items() if not n.startswith("_")}
    assert methods, "TrioWal has public methods"
    for name, method in methods.items():
        assert (method.__doc__ or "").strip(), f"TrioWal.{name} has no docstring"


def test_public_classes_and_functions_have_docstrings() -> None:
    for name in pagewal.__all__:
        obj = getattr(pagewal, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"


def test_every_public_method_and_property_has_a_docstring() -> None:
    import inspect

    import pagewal.trio
    from pagewal import harness

    missing = []
    for module in (pagewal, pagewal.trio, harness):
        for name in module.__all__:
            obj = getattr(module, name)
            if not inspect.isclass(obj):
                continue
            for attribute, value in vars(obj).items():
                if attribute.startswith("_") or not (callable(value)
                                                     or isinstance(value, property)):
                    continue
                if not (inspect.getdoc(getattr(obj, attribute)) or "").strip():
                    missing.append(f"{module.__name__}.{name}.{attribute}")
    assert missing == []


def test_errors_form_one_hierarchy() -> None:
    errors = [pagewal.BrokenLogError, pagewal.CheckpointMissingError, pagewal.ClosedError,
              pagewal.ConfigError, pagewal.CorruptSegmentError, pagewal.ImageTooLargeError,
              pagewal.InvalidCommitError, pagewal.InvalidPageError, pagewal.InvalidPositionError,
              pagewal.LogLockedError, pagewal.ForeignFileError]
    assert all(issubclass(e, pagewal.PagewalError) for e in errors)
    assert issubclass(pagewal.ImageTooLargeError, ValueError)
    assert issubclass(pagewal.ConfigError, ValueError)
    assert issubclass(pagewal.InvalidPageError, ValueError)
    assert issubclass(pagewal.InvalidPositionError, ValueError)
    assert issubclass(pagewal.CheckpointMissingError, pagewal.CorruptSegmentError)
