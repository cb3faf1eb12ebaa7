"""Transforms registered at run time (a notebook): a pipeline run after a new registration uses
it, though the set-up piper instances (and their compiled chains) outlive each run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from bytefreezer.control.models import DatasetSpec, ParquetOptions
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.transforms import RecordTransform, TransformConfig, register_transform
from bytefreezer.transforms.registry import registry_version
from tests.e2e.test_recovery import post, read_parquet_dir, setup_stack


def _stamp(value: str) -> type[RecordTransform]:
    class Stamp(RecordTransform):
        """Sets `stamp`."""

        name: ClassVar[str] = "test_stamp"
        Config: ClassVar[type[TransformConfig]] = TransformConfig
        example: ClassVar[dict[str, Any]] = {}

        def process(self, record: dict[str, Any]) -> dict[str, Any]:
            return {**record, "stamp": value}

    return Stamp


def test_a_re_registered_transform_is_used_by_the_next_run(tmp_path: Path) -> None:
    register_transform(_stamp("first"))
    settings, control, storage = setup_stack(tmp_path)
    control.put_dataset(
        "acme",
        DatasetSpec(
            name="web",
            transforms=[{"type": "test_stamp"}],
            parquet=ParquetOptions(max_file_size_mb=1),
        ),
    )
    stamps = []
    for value, ids in (("first", range(0, 10)), ("second", range(10, 20))):
        before = registry_version()
        register_transform(_stamp(value))
        assert registry_version() > before
        post(storage, ids)
        run_piper_cycle(settings, control, storage)
        run_packer_cycle(settings, control, storage)
        table = read_parquet_dir(settings.data_dir / "destination" / "acme" / "web")
        stamps.append(sorted(set(table.column("stamp").to_pylist())))
    assert stamps == [["first"], ["first", "second"]]
