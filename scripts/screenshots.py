#!/usr/bin/env python3
"""Regenerate screenshots/*.svg (and .png when a converter exists) from the real UI on the lab.

Usage: ``.venv/bin/python scripts/screenshots.py [--out DIR] [--size COLSxROWS]``. Needs a running
lab (``kvm-clone lab up``); the pictures show its hosts as they are. PNGs are made with
``rsvg-convert`` (Debian: librsvg2-bin) when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

from kvm_clone_tui.engine.config import load_config
from kvm_clone_tui.lab.layout import default_state_dir
from kvm_clone_tui.tui.app import KVMCloneApp
from kvm_clone_tui.tui.screens.details import VMDetailsScreen
from kvm_clone_tui.tui.startup import running_lab_config
from kvm_clone_tui.tui.widgets.host_pane import PaneState

ROOT = Path(__file__).resolve().parents[1]
PNG_WIDTH = 1800  # pixels


async def settle(app: KVMCloneApp, pilot: object, timeout: float = 60) -> None:
    """Wait until no pane is still connecting."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(p.state is PaneState.CONNECTING for p in app.panes):
        if loop.time() > deadline:
            raise SystemExit("screenshots: the lab's hosts did not answer in time")
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)


async def take(out: Path, size: tuple[int, int]) -> list[Path]:
    """Drive the app on the lab and save main, details and help SVGs into ``out``."""
    config_file = running_lab_config(default_state_dir())
    if config_file is None:
        raise SystemExit("screenshots: no lab is up; run `kvm-clone lab up` first")
    config = load_config(config_file, environ={})
    app = KVMCloneApp(config.default_hosts, config=config)
    saved: list[Path] = []
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        alpha = app.panes[0]
        names = [str(row.key.value) for row in alpha.table.ordered_rows]
        for name in ("db01", "web01"):  # two marked VMs
            if name in names:
                alpha.table.move_cursor(row=alpha.table.get_row_index(name))
                await pilot.press("space")
        alpha.table.move_cursor(row=alpha.table.get_row_index("linked01"))
        await pilot.pause()
        saved.append(Path(app.save_screenshot("main.svg", str(out))))

        await pilot.press("enter")
        while not isinstance(app.screen, VMDetailsScreen):
            await pilot.pause(0.05)
        await pilot.pause(0.2)
        saved.append(Path(app.save_screenshot("details.svg", str(out))))
        await pilot.press("escape")

        await pilot.press("question_mark")
        await pilot.pause(0.2)
        saved.append(Path(app.save_screenshot("help.svg", str(out))))
    return saved


def to_png(svg: Path) -> Path | None:
    """Convert with rsvg-convert; None when it is not installed."""
    converter = shutil.which("rsvg-convert")
    if converter is None:
        return None
    # Textual's SVGs start text runs with no-break spaces, which librsvg drops unless told to
    # preserve white space.
    text = svg.read_text(encoding="utf-8").replace("<svg ", '<svg xml:space="preserve" ', 1)
    png = svg.with_suffix(".png")
    subprocess.run(
        [converter, "--width", str(PNG_WIDTH), "--output", str(png)],
        input=text.encode("utf-8"),
        check=True,
    )
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots", help="output folder")
    parser.add_argument("--size", default="170x42", help="terminal size, COLSxROWS")
    args = parser.parse_args(argv)
    columns, _, rows = args.size.partition("x")
    args.out.mkdir(parents=True, exist_ok=True)
    for svg in asyncio.run(take(args.out, (int(columns), int(rows)))):
        png = to_png(svg)
        print(svg.relative_to(ROOT) if svg.is_relative_to(ROOT) else svg)
        if png is not None:
            print(png.relative_to(ROOT) if png.is_relative_to(ROOT) else png)
    if shutil.which("rsvg-convert") is None:
        print("no PNGs: install rsvg-convert (Debian: apt-get install librsvg2-bin)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
