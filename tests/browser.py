"""Open a local HTML file in headless Chromium: screenshot, DOM and console errors.

Chromium comes from Debian's ``chromium`` package (``make browser`` installs it); tests call
:func:`unavailable` first and skip with its reason when there is no browser.

:func:`render` runs ``/usr/bin/chromium --headless=new`` twice — once with ``--screenshot``
and once with ``--dump-dom`` — each with a timeout, and collects from Chromium's stderr
(``--enable-logging=stderr``) the lines that report page problems: console messages
(Chromium logs them as ``…:CONSOLE…] "message", source: …`` at INFO level whatever their
console level, so every console line counts — a page without scripts has none), uncaught
exceptions and failed loads of the page's resources.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CHROMIUM", "BrowserResult", "pixel_stddev", "render", "unavailable"]

CHROMIUM = Path(os.environ.get("FEDCRM_CHROMIUM", "/usr/bin/chromium"))
_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--window-size=1280,2400",
    "--enable-logging=stderr",
    "--v=0",
    "--no-first-run",
    "--no-default-browser-check",
)
_PROBLEM = re.compile(r":CONSOLE[:(]|Uncaught|Failed to load resource|net::ERR_.*file://")


@dataclass
class BrowserResult:
    """What Chromium made of a page."""

    dom: str
    png_path: Path
    errors: list[str] = field(default_factory=list)  # console / JS / load problem lines
    stderr: str = ""


def unavailable() -> str | None:
    """Why no headless browser can be used here, or None when Chromium is installed."""
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        return (
            f"{CHROMIUM} is not installed (run `make browser`, which installs Debian's "
            "chromium package with apt-get)"
        )
    return None


def _run(args: list[str], timeout: float, profile: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(profile)}  # keep Chromium's state out of the real home
    return subprocess.run(
        [str(CHROMIUM), *_FLAGS, f"--user-data-dir={profile / 'chromium'}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def render(html_path: Path, png_path: Path, *, timeout: float = 90.0) -> BrowserResult:
    """Screenshot ``html_path`` to ``png_path`` (1280×2400) and dump its DOM.

    Raises ``RuntimeError`` when Chromium fails or writes no screenshot, and
    ``subprocess.TimeoutExpired`` when a call takes longer than ``timeout`` seconds.
    """
    reason = unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    url = Path(html_path).resolve().as_uri()
    png_path = Path(png_path).resolve()
    png_path.unlink(missing_ok=True)
    profile = png_path.parent / f".{png_path.stem}-chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    try:
        shot = _run([f"--screenshot={png_path}", url], timeout, profile)
        if shot.returncode != 0 or not png_path.is_file():
            raise RuntimeError(
                f"chromium --screenshot exited {shot.returncode} without a screenshot: "
                + shot.stderr[-2000:]
            )
        dom = _run(["--dump-dom", url], timeout, profile)
        if dom.returncode != 0:
            raise RuntimeError(f"chromium --dump-dom exited {dom.returncode}: {dom.stderr[-2000:]}")
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    stderr = shot.stderr + dom.stderr
    errors = [line for line in stderr.splitlines() if _PROBLEM.search(line)]
    return BrowserResult(dom=dom.stdout, png_path=png_path, errors=errors, stderr=stderr)


def pixel_stddev(png_path: Path) -> float:
    """Standard deviation of the screenshot's grey levels (0 for a blank, one-colour image)."""
    import numpy as np
    from PIL import Image

    with Image.open(png_path) as image:
        grey = np.asarray(image.convert("L"), dtype=np.float64)
    return float(grey.std())
