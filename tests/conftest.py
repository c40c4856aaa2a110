import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "samples"))

from draw import draw_cel  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built models go to a cache private to this test session, never the user's."""
    path = tmp_path_factory.mktemp("model-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("UPSCALER_CACHE_DIR", str(path))
    yield path
    mp.undo()


@pytest.fixture
def cel() -> np.ndarray:
    """A drawn RGB uint8 cel, 96x128."""
    return draw_cel(96, 128)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)
