"""Screenshots of a comparison in the MLflow UI (for README): the experiment's
runs, the parent run's leaderboard table, a trial's training-loss chart.

    python tools/mlflow_screenshots.py --tracking-uri http://127.0.0.1:5077 --experiment ui-demo --out-dir docs

Drives headless Chromium over the DevTools protocol (aiohttp, which MLflow
brings): the UI keeps its view state (expanded runs, chosen columns, the
assistant panel) in the browser's localStorage, which a plain
`chromium --screenshot` cannot set. `tools/mlflow_screenshots.sh` runs the
whole thing: a small comparison against a temporary `mlflow server`, then this.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
from mlflow.tracking import MlflowClient
from PIL import Image

WIDTH, HEIGHT = 1600, 1000
MAX_BYTES = 400_000
VIEW = "workflowType=machine_learning"  # the UI's model-training view, not GenAI


class Browser:
    """Just enough of the DevTools protocol: navigate, run JavaScript, type, screenshot."""

    def __init__(self, chromium: str):
        self.profile = tempfile.mkdtemp(prefix="mlflow-shots-")
        self.proc = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                      f"--window-size={WIDTH},{HEIGHT}", "--remote-debugging-port=0",
                                      f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{chromium} did not start")
            time.sleep(0.2)
        self.port = int(port_file.read_text().split()[0])
        self.ids = itertools.count(1)

    async def open(self):
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{self.port}/json/list") as response:
            page = next(t for t in await response.json() if t["type"] == "page")
        self.ws = await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        await self.send("Page.enable")
        await self.resize(WIDTH)
        return self

    async def send(self, method: str, **params):
        call = next(self.ids)
        await self.ws.send_json({"id": call, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json()
            if message.get("id") == call:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def js(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def goto(self, url: str, settle: float = 8.0) -> None:
        await self.send("Page.navigate", url="about:blank")  # a hash change alone would keep the page's state
        await asyncio.sleep(0.5)
        await self.send("Page.navigate", url=url)
        await asyncio.sleep(settle)

    async def type_into(self, selector: str, text: str, settle: float = 3.0) -> None:
        await self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", text=text)
        await asyncio.sleep(settle)

    async def resize(self, width: int) -> None:
        self.width = width
        await self.send("Emulation.setDeviceMetricsOverride", width=width, height=HEIGHT, deviceScaleFactor=1,
                        mobile=False)

    async def screenshot(self, path: Path, height: int = HEIGHT) -> None:
        """The viewport's top `height` pixels."""
        clip = {"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1}
        data = base64.b64decode((await self.send("Page.captureScreenshot", format="png", clip=clip))["data"])
        save_small(data, path)

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)


def save_small(png: bytes, path: Path) -> None:
    """The PNG as is if under MAX_BYTES, else as a 256-colour PNG (screenshots have few colours)."""
    if len(png) > MAX_BYTES:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(buffer, format="PNG", optimize=True)
        png = buffer.getvalue()
    path.write_bytes(png)
    print(f"{path}: {len(png) // 1000} kB")


def comparison_runs(client: MlflowClient, experiment: str):
    """(experiment id, latest parent run, its trial with the longest training-loss history)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no experiment {experiment!r} at {client.tracking_uri}")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1000)
    parent = next(r for r in runs if r.data.tags.get("cherrybench.role") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    child = max(children, key=lambda r: len(client.get_metric_history(r.info.run_id, "train_loss")))
    return exp.experiment_id, parent, child


async def shoot(uri: str, experiment: str, out_dir: Path, chromium: str) -> None:
    client = MlflowClient(uri)
    exp_id, parent, child = comparison_runs(client, experiment)
    base = uri.rstrip("/") + "/"
    browser = await Browser(chromium).open()
    try:
        # the runs: the parent expanded, a few columns a reader compares trials by; no assistant panel
        await browser.goto(f"{base}#/experiments/{exp_id}?{VIEW}")
        key = f'MLflowLocalStorage-1.1-ExperimentPage-["{exp_id}"]-ReactComponentState'
        state = json.loads(await browser.js(f"localStorage.getItem({json.dumps(key)})") or "{}")
        columns = ["attributes.`Dataset`", "metrics.`heldout.eval_loss`", "metrics.`train_loss`",
                   "metrics.`n_selected`", "params.`budget`"]
        widths = {"attributes.`Run Name`": 210, "runDateAndNestInfo": 130, "attributes.`Dataset`": 330,
                  "duration": 80, **{c: 130 for c in columns[1:]}}
        state.update(runsExpanded={parent.info.run_id: True}, selectedColumns=columns,
                     columnOrder=list(widths), columnWidths=widths)  # widths apply to the ordered columns
        await browser.js(f"localStorage.setItem({json.dumps(key)}, {json.dumps(json.dumps(state))});"
                         "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false')")
        await browser.goto(f"{base}#/experiments/{exp_id}?{VIEW}")
        await browser.screenshot(out_dir / "mlflow-runs.png", height=620)
        # the parent run: the leaderboard table (its numbers are also the run's metrics); the
        # navigation sidebar folded away and the page a little wider, so that the table's columns fit
        await browser.resize(WIDTH + 160)
        await browser.goto(f"{base}#/experiments/{exp_id}/runs/{parent.info.run_id}/artifacts/leaderboard.json?{VIEW}")
        await browser.js("document.querySelector('button[aria-label=\"Toggle sidebar\"]').click()")
        await asyncio.sleep(2)
        await browser.screenshot(out_dir / "mlflow-parent.png", height=440)
        await browser.resize(WIDTH)
        # a trial: its model metrics, filtered to the losses (the training loss per step, the eval loss)
        await browser.goto(f"{base}#/experiments/{exp_id}/runs/{child.info.run_id}/model-metrics?{VIEW}")
        await browser.type_into("input[placeholder='Search metric charts']", "loss")
        await browser.screenshot(out_dir / "mlflow-child.png", height=640)
    finally:
        await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", required=True, help="the MLflow server, e.g. http://127.0.0.1:5077")
    parser.add_argument("--experiment", default="ui-demo")
    parser.add_argument("--out-dir", type=Path, default=Path("docs"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(shoot(args.tracking_uri, args.experiment, args.out_dir, args.chromium))


if __name__ == "__main__":
    main()
