"""Checks of a space beyond the shape of its YAML (`search.space.parse` calls them once that is right): each value as a
trial would take it, rules about combinations, every model and CAM method it uses, and its dataset roots."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from search.space.grid import block_values, blocks
from trainer.config import MASKLESS_METHODS, ConfigError, TrialConfig
from trainer.data.imagefolder import check_image_folder
from trainer.errors import FolderError
from trainer.schedule import parse_schedule

Problem = Callable[[str, str], None]  # problem(key, message): one line of the error a space gets


def check_values(data: dict, problem: Problem) -> None:
    """Check `fixed:` and every axis value on its own, so that each bad value is reported once, by its key."""
    first_dataset = next(iter(data["datasets"].values()), None)
    if first_dataset is None:
        return

    # Each bad fixed: field is reported once, at its own key, then left out, so that the axes are checked against
    # the rest of fixed: instead of blaming every axis for it.
    fixed = dict(data["fixed"])

    def attempt(overrides: dict, where: str) -> str | None:
        try:
            TrialConfig.from_dict({**fixed, **overrides, "dataset": first_dataset})
        except ConfigError as exc:
            field, _, message = str(exc).partition(": ")
            problem(f"{where}.{field}" if where == "fixed" else where, message or str(exc))
            return field
        return None

    while (bad := attempt({}, "fixed")) is not None and bad.split(".")[0] in fixed:
        del fixed[bad.split(".")[0]]
    named = [("grid", data["grid"])] + [(f"baselines[{i}]", b) for i, b in enumerate(data["baselines"])]
    for where, axes in named:
        for axis, values in axes.items():
            if axis != "dataset":
                for value in values:
                    attempt({axis: value}, f"{where}.{axis}")


def _setting_values(data: dict, axis: str) -> set:
    """Every value `axis` takes in some block (the fixed value or default where a block does not name it)."""
    return {json.dumps(v) for block in blocks(data) for v in block_values(block, data["fixed"], axis)}


def check_rules(data: dict, problem: Problem) -> None:
    """Rules about combinations: duplicate replacement rules, and halving rungs that could decide something."""
    rules = {json.loads(v) for v in _setting_values(data, "pixel_replacement")}
    if {"min", "black"} <= rules:
        problem(
            "pixel_replacement",
            "min and black are the same rule here (CAMs are min-max normalised, so every "
            "map's minimum is 0): keep one of them",
        )
    halving = data["halving"]
    if not halving:
        return
    axes = {a for block in blocks(data) for a in block}
    if halving["within"] is None:  # the default: per dataset and architecture, where the space has them
        halving["within"] = [a for a in ("architecture", "dataset") if a in axes]
    for axis in halving["within"]:
        if axis not in axes:
            problem("halving.within", f"{axis!r} is not an axis of this space ({', '.join(sorted(axes))})")
    for block in blocks(data):
        methods = block_values(block, data["fixed"], "cam_method")
        for text in block_values(block, data["fixed"], "proxy_steps"):
            schedule = parse_schedule(text)
            if not schedule.steps or all(m in MASKLESS_METHODS for m in methods):
                continue  # baselines run to the end: every verdict needs them
            first, total = schedule.boundaries[0], schedule.epochs
            for rung in halving["rungs"]:
                if rung <= first:
                    problem(
                        "halving.rungs",
                        f"rung {rung} is not after the first proxy step of proxy_steps "
                        f"{text!r} (epoch {first}): its points are all identical there",
                    )
                elif rung >= total:
                    problem(
                        "halving.rungs",
                        f"rung {rung} is not before the end of proxy_steps {text!r} ({total} epochs)",
                    )


def check_models(data: dict, problem: Problem) -> None:
    """Check each (architecture, CAM method, image size) the space uses once, before anything is made."""
    from trainer.modelcheck import ModelError, check  # imports torch only for a model not checked before

    fixed, combos = data["fixed"], set()
    for block in blocks(data):
        proxies = any(parse_schedule(s).steps for s in block_values(block, fixed, "proxy_steps"))
        methods = [m for m in block_values(block, fixed, "cam_method") if m not in MASKLESS_METHODS] if proxies else []
        for arch in block_values(block, fixed, "architecture"):
            for size in block_values(block, fixed, "image_size"):
                combos.update({(arch, None, size), *((arch, m, size) for m in methods)})
    reported = set()
    for combo in sorted(combos, key=str):
        try:
            check(*combo)
        except ModelError as exc:
            if str(exc) not in reported:
                reported.add(str(exc))
                problem(_where(data, exc.field), str(exc))
    weights = {path for block in blocks(data) for path in block_values(block, fixed, "pretrained_path") if path}
    if weights:  # a file that is no state dict would fail every attempt of every trial: refused here
        from trainer.models import load_pretrained

        for path in sorted(weights):
            try:
                load_pretrained(Path(path))
            except ModelError as exc:
                problem(_where(data, "pretrained_path"), str(exc))


def _where(data: dict, field: str) -> str:
    """The key a problem with `field` is reported at: where the space sets it (fixed:, grid:, a baseline)."""
    if field in data["fixed"]:
        return f"fixed.{field}"
    if field in data["grid"]:
        return f"grid.{field}"
    at = next((i for i, b in enumerate(data["baselines"]) if field in b), None)
    return f"baselines[{at}].{field}" if at is not None else field


def root_problems(data: dict) -> list[str]:
    """`key: message` lines for dataset roots that cannot make a trial: missing (and not downloaded), or image
    folders with too few classes or images. `search run` refuses them; `--dry-run` prints them after its plan."""
    lines = []
    split = data["fixed"].get("split", {})
    for name, ds in data["datasets"].items():
        root = ds["root"]
        if root is None or ds["download"]:
            continue
        if not Path(root).exists():
            hint = (
                "an imagefolder root is a folder of class folders: put the dataset there"
                if ds["kind"] == "imagefolder"
                else "set download: true to fetch it"
            )
            lines.append(f"datasets.{name}.root: {root} does not exist ({hint})")
        elif ds["kind"] == "imagefolder":
            try:
                check_image_folder(Path(root), split.get("val", 0.15), split.get("test", 0.15))
            except FolderError as exc:
                lines.append(f"datasets.{name}.root: {str(exc).removeprefix('imagefolder: ')}")
    return lines
