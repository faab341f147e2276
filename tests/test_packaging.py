"""One version for both distributions; the runtime never loads PyTorch."""
import re
import subprocess
import sys
from pathlib import Path

import bagcompile
import bagcompile_runtime

ROOT = Path(__file__).resolve().parents[1]


def test_one_version_for_both_distributions():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1) == bagcompile_runtime.__version__
    assert f'"bagcompile-runtime=={bagcompile_runtime.__version__}"' in pyproject
    assert bagcompile.__version__ == bagcompile_runtime.__version__


def test_runtime_depends_on_numpy_and_onnxruntime_only():
    text = (ROOT / "runtime" / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)\]", text, re.M | re.S).group(1)
    assert re.findall(r'"([a-zA-Z_-]+)', deps) == ["numpy"]
    assert 'cpu = ["onnxruntime' in text and 'gpu = ["onnxruntime-gpu' in text
    for source in (ROOT / "runtime" / "bagcompile_runtime").glob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+(torch|onnx)\b(?!runtime)", source.read_text(), re.M), source


def test_importing_bagcompile_loads_neither_torch_nor_onnx():
    code = "import sys, bagcompile; print('torch' in sys.modules, 'onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_bundled_data_sets_ship_with_licence_and_attribution():
    data = ROOT / "bagcompile" / "datasets"
    assert (data / "ett" / "LICENSE").read_text().startswith("Creative Commons Attribution-NoDerivatives 4.0")
    readme = (data / "README.md").read_text()
    assert "Informer" in readme and "CC BY-ND 4.0" in readme and "CC BY 4.0" in readme
