"""Build the offline HTML template for `dvc plots show`: `python -m stages.app.plots_template`.

DVC's default page loads Vega, Vega-Lite and Vega-Embed from a CDN, so offline (an
air-gapped hospital network, our CI) it renders blank. This writes .dvc/plots_offline.html
with the very versions DVC's page asks for inlined from their npm packages (`npm pack`, the
registry only; their BSD-3 licence texts go with them), and no `{scripts}` slot, so DVC adds
no CDN tag. .dvc/config points `plots.html_template` at it, so plain `dvc plots show`
uses it. The generated file is committed: users need neither npm nor the network.
"""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
from pathlib import Path

# The versions dvc-render's page loads (dvc_render/vega.py), so the specs behave the same.
PACKAGES = {"vega": "5.20.2", "vega-lite": "5.2.0", "vega-embed": "6.18.2"}
OUT = Path(__file__).resolve().parents[2] / ".dvc" / "plots_offline.html"

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot (offline)</title>
    <!-- Vega, Vega-Lite and Vega-Embed inlined by stages/app/plots_template.py -->
SCRIPTS
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def bundled_script(name: str, version: str, workdir: Path) -> str:
    """The package's minified build, with its licence as a comment above it."""
    subprocess.run(["npm", "pack", "--silent", f"{name}@{version}"], cwd=workdir, check=True,
                   capture_output=True)
    with tarfile.open(workdir / f"{name}-{version}.tgz") as archive:
        code = archive.extractfile(f"package/build/{name}.min.js").read().decode()
        licence = archive.extractfile("package/LICENSE").read().decode()
    # A literal "</script>" inside the code would end the tag early.
    code = code.replace("</script>", "<\\/script>")
    return (f"<script>/* {name} {version}\n{licence.replace('*/', '* /')}*/\n"
            f"{code}\n</script>")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        scripts = "\n".join(bundled_script(n, v, Path(tmp)) for n, v in PACKAGES.items())
    OUT.write_text(PAGE.replace("SCRIPTS", scripts), encoding="utf8")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
