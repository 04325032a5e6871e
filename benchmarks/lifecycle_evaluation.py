"""How long lifecycle evaluation takes: a 10-rule policy over 100,000 images (target: under one second).

Run: `python benchmarks/lifecycle_evaluation.py [--images N] [--repeat R]`. Prints the best and median wall
time, and the best CPU time, of `evaluate` (ECR's evaluation), `plan` (with Dockyard's safety step) and
`preview` (plan plus the GetLifecyclePolicyPreview shapes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from dockyard.domain.lifecycle import ImageFacts, StorageClass, evaluate, parse_policy, plan, preview

NOW = datetime(2025, 6, 30, tzinfo=UTC)


def _rule(priority: int, selection: dict[str, object], action: str = "expire") -> dict[str, object]:
    body: dict[str, object] = {"type": action}
    if action == "transition":
        body["targetStorageClass"] = "archive"
    return {"rulePriority": priority, "selection": selection, "action": body}


def _tagged(key: str, *entries: str) -> dict[str, object]:
    return {"tagStatus": "tagged", key: list(entries)}


def _keep(count: int) -> dict[str, object]:
    return {"countType": "imageCountMoreThan", "countNumber": count}


def _days(count_type: str, days: int) -> dict[str, object]:
    return {"countType": count_type, "countUnit": "days", "countNumber": days}


POLICY = {
    "rules": [
        _rule(1, {**_tagged("tagPatternList", "prod-*"), **_keep(50)}),
        _rule(2, {**_tagged("tagPatternList", "release-*", "*-lts"), **_days("sinceImagePushed", 365)}),
        _rule(3, {**_tagged("tagPrefixList", "v1."), **_keep(20)}),
        _rule(4, {**_tagged("tagPatternList", "*-rc*"), **_days("sinceImagePushed", 30)}),
        _rule(5, {**_tagged("tagPatternList", "dev-*"), **_days("sinceImagePulled", 60)}, "transition"),
        _rule(6, {**_tagged("tagPatternList", "feature-*-*"), **_keep(100)}),
        _rule(7, {**_tagged("tagPrefixList", "nightly"), **_days("sinceImagePushed", 7)}),
        _rule(8, {"tagStatus": "untagged", **_days("sinceImagePushed", 14)}),
        _rule(9, {"tagStatus": "any", **_days("sinceImagePushed", 180)}, "transition"),
        _rule(10, {"tagStatus": "any", "storageClass": "archive", **_days("sinceImageTransitioned", 365)}),
    ]
}
_TAG_SHAPES = (
    "prod-",
    "release-",
    "release-{}-lts",
    "v1.",
    "v2.",
    "1.{}-rc1",
    "dev-",
    "feature-x-",
    "nightly-",
)


def _tags(number: int, rng: random.Random) -> tuple[str, ...]:
    roll = rng.random()
    if roll < 0.3:
        return ()
    shapes = [rng.choice(_TAG_SHAPES) for _ in range(1 + int(roll > 0.9))]
    return tuple(shape.format(number) if "{}" in shape else f"{shape}{number}" for shape in shapes)


def _digest(number: int) -> str:
    return f"sha256:{hashlib.sha256(str(number).encode()).hexdigest()}"


def _image(number: int, rng: random.Random) -> ImageFacts:
    pushed = NOW - timedelta(seconds=rng.randrange(2 * 365 * 86400))
    pulled = pushed + timedelta(days=rng.randrange(30)) if rng.random() < 0.5 else None
    archived = rng.random() < 0.05
    # Every 20th image is an index listing the next two; every 50th a referrer of the one before.
    children = (_digest(number + 1), _digest(number + 2)) if number % 20 == 0 else ()
    return ImageFacts(
        digest=_digest(number),
        tags=_tags(number, rng),
        pushed_at=pushed,
        last_pulled_at=pulled,
        last_archived_at=pushed + timedelta(days=1) if archived else None,
        storage_class=StorageClass.ARCHIVE if archived else StorageClass.STANDARD,
        subject_digest=_digest(number - 1) if number % 50 == 49 else None,
        is_index=bool(children),
        child_digests=children,
    )


def _time(function: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    """Best and median wall time, and best CPU time (steadier on a shared machine)."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), statistics.median(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(20250630)
    images = [_image(number, rng) for number in range(args.images)]
    policy = parse_policy(json.dumps(POLICY))
    acted = plan(policy, images, NOW)
    print(f"{len(images)} images, {len(policy.rules)} rules, {len(acted)} acted on by plan")
    for name, function in (
        ("evaluate", lambda: evaluate(policy, images, NOW)),
        ("plan", lambda: plan(policy, images, NOW)),
        ("preview", lambda: preview(policy, images, NOW)),
    ):
        best, median, cpu = _time(function, args.repeat)
        walls = f"wall best {best * 1000:.0f} ms, median {median * 1000:.0f} ms"
        print(f"{name:>9}: {walls}; CPU best {cpu * 1000:.0f} ms")


if __name__ == "__main__":
    main()
