#!/usr/bin/env python
"""A screenshot of the ``s2s serve`` web page translating a sentence, as the README shows it.

    python tools/page_screenshot.py runs/translation --text "Ein Mann fährt mit dem Fahrrad." --out page.png

Starts ``s2s serve RUN`` on a free loopback port, opens the page in headless Chromium (Debian's chromium and
chromium-driver, driven with selenium: ``pip install -e '.[dev]'``), types the sentence, waits for its translation
and attention heat map, saves the PNG and stops the server.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from loadtest import free_port, wait_ready  # tools/ is on the path when a tool runs as a script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a translation run directory")
    parser.add_argument("--text", required=True, help="the sentence typed into the page")
    parser.add_argument("--out", type=Path, required=True, help="the PNG file to write")
    parser.add_argument("--size", default="1000x900", help="window size, WIDTHxHEIGHT (1000x900)")
    args = parser.parse_args(argv)
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        parser.error("needs Chromium and ChromeDriver: apt-get install chromium chromium-driver")
    width, height = (int(n) for n in args.size.split("x"))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "s2s", "serve", str(args.run), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_ready(port, server)
        shoot(f"http://127.0.0.1:{port}/", args.text, args.out, (width, height))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    print(f"wrote {args.out}")
    return 0


def shoot(url: str, text: str, out: Path, size: tuple[int, int]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory() as profile:
        driver = open_chromium(Path(profile), size)
        try:
            driver.get(url)
            wait = WebDriverWait(driver, 60)
            wait.until(lambda b: b.find_element(By.ID, "status").text.startswith("ready"))
            driver.find_element(By.ID, "translate-input").send_keys(text)
            driver.find_element(By.ID, "translate-button").click()
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#translate-output table.heat"))
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))
        finally:
            driver.quit()


def open_chromium(profile: Path, size: tuple[int, int]):
    """Headless Chromium (Debian's, with its chromedriver) driven by selenium, with a fresh profile and no
    background connections (a closed network refuses them, many at a time)."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"):
        options.add_argument(flag)
    options.add_argument("--disable-background-networking")
    options.add_argument("--disable-component-update")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    driver.set_window_size(*size)
    return driver


if __name__ == "__main__":
    sys.exit(main())
