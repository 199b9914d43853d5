"""Static checks of the images (they are built where a Docker engine exists)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["Dockerfile.api", "Dockerfile.worker"])
def test_images_run_as_non_root_from_pinned_bases(name):
    lines = [line.strip() for line in (ROOT / name).read_text().splitlines() if line.strip() and not line.startswith("#")]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert all(":" in line.split()[1] and "latest" not in line for line in lines if line.startswith("FROM "))
    assert any("constraints.txt" in line for line in lines)  # same pins as the tests
    assert not any(line.startswith("ADD ") for line in lines)
