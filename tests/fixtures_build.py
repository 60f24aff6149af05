"""Build ``tests/fixtures/``: tiny copies of each real dataset layout with SynthFace images.

Run ``python tests/fixtures_build.py`` after changing it. File names, pair files and label files
follow the real formats (see the readers in ``meerbench/data/formats/``); only the counts are
small and the faces synthetic. The output is deterministic. Tests read the committed tree (through
``FIXTURES``, or ``fixture_copy`` when they change files) and check it against a fresh ``build``.
"""

from __future__ import annotations

import io
import itertools
import pickle
import random
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from meerbench.data.render.face import render_face

SEED = 7
JPEG_QUALITY = 85
FOLDS = 10
FIXTURES = Path(__file__).resolve().parent / "fixtures"

_people: dict[str, int] = {}  # name -> SynthFace identity, shared by all layouts


def face(name: str, index: int, masked: bool = False) -> Image.Image:
    """The SynthFace image ``index`` of the synthetic person standing in for ``name``."""
    identity = _people.setdefault(name, len(_people))
    return Image.fromarray(render_face(SEED, identity, index, masked=masked).image)


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def save(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        image.save(path, format="PNG")
    else:
        path.write_bytes(jpeg_bytes(image))


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def cycle_pairs(items: list, rng: random.Random) -> Iterator[tuple]:
    """Endless shuffled distinct pairs from ``items`` (all pairs, reshuffled each round)."""
    while True:
        combos = list(itertools.combinations(items, 2))
        rng.shuffle(combos)
        yield from combos


# --------------------------------------------------------------------------- LFW

LFW_PEOPLE = {  # name -> number of images (real LFW names, synthetic faces)
    "Abel_Pacheco": 4, "Akhmed_Zakayev": 3, "Abdel_Madi_Shabneh": 1, "Dean_Barker": 1,
    "George_W_Bush": 4, "Aaron_Eckhart": 1, "Carl_Reiner": 3, "Bernard_Law": 4,
    "Ian_Smith": 3, "Gray_Davis": 2, "Zico": 1, "Laura_Bush": 2,
}
LFW_PER_SET = 3  # pairs.txt header '10\t3'


def build_lfw(root: Path) -> None:
    for name, count in LFW_PEOPLE.items():
        for n in range(1, count + 1):
            save(root / "lfw" / name / f"{name}_{n:04d}.jpg", face(name, n))
    rng = random.Random(1)
    matched = cycle_pairs([(name, n) for name, count in LFW_PEOPLE.items()
                           for n in range(1, count + 1) if count > 1], rng)
    mismatched = cycle_pairs(sorted(LFW_PEOPLE), rng)
    lines = [f"{FOLDS}\t{LFW_PER_SET}"]
    for _ in range(FOLDS):
        done = 0
        while done < LFW_PER_SET:
            (name1, n1), (name2, n2) = next(matched)
            if name1 == name2:
                lines.append(f"{name1}\t{n1}\t{n2}")
                done += 1
        for _ in range(LFW_PER_SET):
            name1, name2 = next(mismatched)
            lines.append(f"{name1}\t{rng.randint(1, LFW_PEOPLE[name1])}\t"
                         f"{name2}\t{rng.randint(1, LFW_PEOPLE[name2])}")
    write_lines(root / "pairs.txt", lines)


# --------------------------------------------------------------------------- MFR2

MFR2_PEOPLE = ("AdrianDunbar", "NancyPelosi", "MitchMcConnell", "ImranKhan", "SimonCowell",
               "TsaiIngwen")
MFR2_MASKS = ("surgical_blue", "cloth", "KN95", "N95", "surgical_white")
MFR2_IMAGES = 3  # image 1 unmasked, 2 and 3 masked
MFR2_PAIRS = 20


def build_mfr2(root: Path) -> None:
    base = root / "mfr2"
    labels, masks = [], itertools.cycle(MFR2_MASKS)
    for name in MFR2_PEOPLE:
        for n in range(1, MFR2_IMAGES + 1):
            masked = n > 1
            save(base / name / f"{name}_{n:04d}.png", face(name, n, masked))
            labels.append(f"{name}, {n}, {next(masks) if masked else 'no-mask'}")
    write_lines(base / "mfr2_labels.txt", labels)
    rng = random.Random(2)
    same, different = cycle_pairs(list(range(1, MFR2_IMAGES + 1)), rng), cycle_pairs(
        list(MFR2_PEOPLE), rng)
    lines = []
    for i in range(MFR2_PAIRS):
        if i % 2:
            a, b = next(different)
            lines.append(f"{a} {rng.randint(1, MFR2_IMAGES)} {b} {rng.randint(1, MFR2_IMAGES)}")
        else:
            n1, n2 = next(same)
            lines.append(f"{rng.choice(MFR2_PEOPLE)} {n1} {n2}")
    rng.shuffle(lines)  # the real file is not grouped either
    write_lines(base / "pairs.txt", lines)


# --------------------------------------------------------------------------- CALFW family

CROSS_PEOPLE = ("Aaron_Eckhart", "Carl_Reiner", "Bernard_Law", "Ian_Smith", "Gray_Davis",
                "Laura_Bush", "Abel_Pacheco", "George_W_Bush")
CROSS_IMAGES = 3
CROSS_PER_FOLD = 2  # positive (and negative) pairs per fold


def build_cross(root: Path, file_name: str, pairs_file: str, positive_token: str) -> None:
    """CALFW/CPLFW: flat 'aligned images/', two 'file token' lines per pair, positives first.

    ``file_name`` formats (name, n); ``positive_token`` formats the 0-based fold."""
    folder = root / "aligned images"
    for name in CROSS_PEOPLE:
        for n in range(1, CROSS_IMAGES + 1):
            save(folder / file_name.format(name=name, n=n), face(name, n))
    rng = random.Random(3)
    same = cycle_pairs(list(range(1, CROSS_IMAGES + 1)), rng)
    different = cycle_pairs(list(CROSS_PEOPLE), rng)
    lines = []
    for fold in range(FOLDS):
        for _ in range(CROSS_PER_FOLD):
            name, (n1, n2) = rng.choice(CROSS_PEOPLE), next(same)
            token = positive_token.format(fold=fold + 1)
            lines += [f"{file_name.format(name=name, n=n1)} {token}",
                      f"{file_name.format(name=name, n=n2)} {token}"]
    for _ in range(FOLDS * CROSS_PER_FOLD):
        a, b = next(different)
        lines += [f"{file_name.format(name=a, n=rng.randint(1, CROSS_IMAGES))} 0",
                  f"{file_name.format(name=b, n=rng.randint(1, CROSS_IMAGES))} 0"]
    write_lines(root / pairs_file, lines)


def build_mlfw(root: Path) -> None:
    """MLFW: flat 'aligned/' of Name_<image>_<variant>.jpg, tab lines 'img1 img2 label'."""
    files = {name: [f"{name}_{n:04d}_{v:04d}.jpg" for n in range(1, 3) for v in range(2)]
             for name in CROSS_PEOPLE}
    for name, names in files.items():
        for k, file in enumerate(names):
            save(root / "aligned" / file, face(name, 100 + k, masked=True))
    rng = random.Random(4)
    different = cycle_pairs(list(CROSS_PEOPLE), rng)
    lines = []
    for _ in range(FOLDS * CROSS_PER_FOLD):
        a, b = rng.sample(files[rng.choice(CROSS_PEOPLE)], 2)
        lines.append(f"{a}\t{b}\t1")
        name1, name2 = next(different)
        lines.append(f"{rng.choice(files[name1])}\t{rng.choice(files[name2])}\t0")
    write_lines(root / "pairs.txt", lines)


# --------------------------------------------------------------------------- RMFRD, SMFRD

# 22 identities in both trees (enough for 10 identity-disjoint folds) plus one in each tree only.
RMFRD_BOTH = ("anhu", "baiyu", "caiwen", "dengli", "fanbing", "gaoyuan", "hanxue", "huangbo",
              "jiangwen", "liming", "liuyan", "luhan", "maliu", "qinlan", "sunli", "tangwei",
              "wangfei", "xuzheng", "yangmi", "zhaowei", "zhoujie", "zhuyin")
RMFRD_UNMASKED = {"aidai": 3, "chenhao": 2, **dict.fromkeys(RMFRD_BOTH, 2)}
RMFRD_MASKED = {"aidai": 2, "baibaihe": 2, **dict.fromkeys(RMFRD_BOTH, 2)}


def build_rmfrd(root: Path) -> None:
    """The self-built-masked-face-recognition-dataset layout; 'chenhao' is only unmasked and
    'baibaihe' only masked, as in the real data where the trees differ."""
    base = root / "self-built-masked-face-recognition-dataset"
    for tree, people, masked in (("AFDB_face_dataset", RMFRD_UNMASKED, False),
                                 ("AFDB_masked_face_dataset", RMFRD_MASKED, True)):
        for name, count in people.items():
            for n in range(count):
                save(base / tree / name / f"{n:04d}.jpg", face(f"rmfrd-{name}", n + 10 * masked,
                                                              masked))


SMFRD_PARTS = {"webface": ("0000045", "0000099"), "lfw": ("Aaron_Eckhart", "Zico")}


def build_smfrd(root: Path) -> None:
    for part, people in SMFRD_PARTS.items():
        for name in people:
            for n in range(1, 3):
                file = f"{name}_{n:04d}.jpg" if part == "lfw" else f"{n:03d}.jpg"
                save(root / part / name / file, face(name, 200 + n, masked=True))


# --------------------------------------------------------------------------- insightface bin

BIN_PAIRS = 20


def build_bin(root: Path) -> None:
    """lfw.bin: pickle of (JPEG bytes, issame list); even pairs genuine, odd pairs impostor."""
    bins, issame = [], []
    for i in range(BIN_PAIRS):
        genuine = i % 2 == 0
        ref = face(f"bin-{i}", 0)
        probe = face(f"bin-{i}", 1) if genuine else face(f"bin-{i}-other", 0)
        bins += [jpeg_bytes(ref), jpeg_bytes(probe)]
        issame.append(genuine)
    root.mkdir(parents=True, exist_ok=True)
    (root / "lfw.bin").write_bytes(pickle.dumps((bins, issame), protocol=4))


def build(out: Path) -> Path:
    """Write the whole fixture tree into ``out`` (which must not exist yet); returns ``out``."""
    _people.clear()
    build_lfw(out / "lfw")
    build_mfr2(out / "mfr2")
    build_cross(out / "calfw", "{name}_{n:04d}.jpg", "pairs_CALFW.txt", "{fold}")
    build_cross(out / "cplfw", "{name}_{n}.jpg", "pairs_CPLFW.txt", "1")
    build_mlfw(out / "mlfw")
    build_rmfrd(out / "rmfrd")
    build_smfrd(out / "smfrd")
    build_bin(out / "bins")
    return out


def fixture_copy(name: str, dest: Path) -> Path:
    """A private copy of fixture ``name`` under ``dest`` that a test may change."""
    return Path(shutil.copytree(FIXTURES / name, dest / name))


def read_fixture(fmt: str, root: Path, **options: object):
    """Read ``root`` with the ``fmt`` reader, as a protocol naming that folder would."""
    from meerbench.data.dataset import DatasetSpec
    from meerbench.data.formats import open_dataset

    return open_dataset(DatasetSpec(fmt, root.name, options), root)


def set_line(path: Path, number: int, text: str | None) -> None:
    """Replace line ``number`` (1-based) of ``path``; None deletes it."""
    lines = path.read_text().splitlines()
    if text is None:
        del lines[number - 1]
    else:
        lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    temp = FIXTURES.with_name("fixtures.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    build(temp)
    shutil.rmtree(FIXTURES, ignore_errors=True)
    temp.rename(FIXTURES)
    files = [p for p in FIXTURES.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    print(f"{FIXTURES}: {len(files)} files, {size / 1e6:.2f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
