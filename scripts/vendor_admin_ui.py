"""Vendor the built Socket.IO Admin UI into blocks_rt/admin_ui/, with nothing left that loads from the internet.

    python scripts/vendor_admin_ui.py      # needs npm; fetches the pinned packages with `npm pack`

The published `@socket.io/admin-ui` package carries the built UI in `ui/dist/`. Its index.html loads the
Roboto font from Google Fonts and the Material Design Icons from jsDelivr (`@mdi/font@latest`); those two
links are replaced by local copies of the same fonts from npm (`@fontsource/roboto`, `@mdi/font`, woff2 only,
which every browser the UI supports reads). A small inline script points the connection form at the
gateway that serves the page. Source maps are left out (3.4 MB, only read by browser dev tools).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

ADMIN_UI = "@socket.io/admin-ui@0.5.1"
MDI = "@mdi/font@7.4.47"
ROBOTO = "@fontsource/roboto@5.3.0"
ROBOTO_WEIGHTS = (100, 300, 400, 500, 700, 900)  # what the upstream Google Fonts link asked for
OUT = Path(__file__).resolve().parent.parent / "blocks_rt" / "admin_ui"

# The server URL field starts empty in the upstream UI; here it starts at the gateway that served the page.
DEFAULT_SERVER = ('<script>try{localStorage.getItem("server_url")||'
                  'localStorage.setItem("server_url",location.origin)}catch(e){}</script>')

# A read-only server (python-socketio's instrumentation: no JOIN among its supportedFeatures) is shown as one: the
# "Read-only?" switch on and locked, and no "Join a room" form. Upstream only reads that switch from localStorage.
READ_ONLY_PATCHES = [
    ("updateConfig:function(e,t){e.supportedFeatures=t.supportedFeatures}",
     'updateConfig:function(e,t){e.supportedFeatures=t.supportedFeatures,t.supportedFeatures.includes("JOIN")||'
     "(e.readonly=!0)}"),
    ("disabled:function(e){return 0===e.config.supportedFeatures.length}",
     'disabled:function(e){return!e.config.supportedFeatures.includes("JOIN")}'),
    ('n("v-card-text",[n("form",{on:{submit:function(t){return t.preventDefault(),e.onSubmit(t)}}},'
     '[n("v-combobox",{staticClass:"select-room',
     'e.isReadonly?e._e():n("v-card-text",[n("form",{on:{submit:function(t){return t.preventDefault(),'
     'e.onSubmit(t)}}},[n("v-combobox",{staticClass:"select-room'),
]


def patch_read_only(js: str) -> str:
    """The app's bundle with READ_ONLY_PATCHES applied (each must match exactly once)."""
    for old, new in READ_ONLY_PATCHES:
        if js.count(old) != 1:
            raise SystemExit(f"the upstream app bundle changed: review the read-only patch {old[:40]!r} by hand")
        js = js.replace(old, new)
    return js


def unpack(spec: str, work: Path) -> Path:
    name = subprocess.run(["npm", "pack", "--silent", spec], cwd=work, check=True, capture_output=True,
                          text=True).stdout.strip().splitlines()[-1]
    target = work / name.removesuffix(".tgz")
    with tarfile.open(work / name) as tar:
        tar.extractall(target, filter="data")
    return target / "package"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ui, mdi, roboto = unpack(ADMIN_UI, work), unpack(MDI, work), unpack(ROBOTO, work)
        if OUT.exists():
            shutil.rmtree(OUT)
        shutil.copytree(ui / "ui" / "dist", OUT, ignore=shutil.ignore_patterns("*.map"))
        fonts = OUT / "fonts"
        fonts.mkdir()
        shutil.copy(mdi / "fonts" / "materialdesignicons-webfont.woff2", fonts)
        icons = (mdi / "css" / "materialdesignicons.min.css").read_text()
        icons = re.sub(r"@font-face\{[^}]*\}", '@font-face{font-family:"Material Design Icons";'
                       'src:url("../fonts/materialdesignicons-webfont.woff2") format("woff2");'
                       'font-weight:normal;font-style:normal}', icons, count=1)
        icons = re.sub(r"/\*# sourceMappingURL=.*?\*/", "", icons)
        (OUT / "css" / "materialdesignicons.min.css").write_text(icons)
        faces = []
        for weight in ROBOTO_WEIGHTS:
            shutil.copy(roboto / "files" / f"roboto-latin-{weight}-normal.woff2", fonts)
            faces.append(f"@font-face{{font-family:'Roboto';font-style:normal;font-display:swap;font-weight:{weight};"
                         f"src:url(../fonts/roboto-latin-{weight}-normal.woff2) format('woff2')}}")
        (OUT / "css" / "roboto.css").write_text("\n".join(faces) + "\n")
        index = (OUT / "index.html").read_text()
        index, n = re.subn(r'<link rel="stylesheet" href="https://fonts\.googleapis\.com/[^"]*">',
                           '<link rel="stylesheet" href="css/roboto.css">', index)
        index, m = re.subn(r'<link rel="stylesheet" href="https://cdn\.jsdelivr\.net/npm/@mdi/font[^"]*">',
                           '<link rel="stylesheet" href="css/materialdesignicons.min.css">', index)
        if (n, m) != (1, 1):
            raise SystemExit("the upstream index.html changed: review the external links by hand")
        (OUT / "index.html").write_text(index.replace("<title>", DEFAULT_SERVER + "<title>", 1))
        for js in (OUT / "js").glob("*.js"):  # the maps are not shipped: no dangling reference to them
            js.write_text(re.sub(r"\n?//# sourceMappingURL=\S+\s*$", "\n", js.read_text()))
        [app] = (OUT / "js").glob("app.*.js")
        app.write_text(patch_read_only(app.read_text()))
        licences = OUT / "licenses"
        licences.mkdir()
        shutil.copy(ui / "LICENSE", licences / "socket.io-admin-ui.LICENSE")
        shutil.copy(mdi / "LICENSE", licences / "mdi-font.LICENSE")
        shutil.copy(roboto / "LICENSE", licences / "fontsource-roboto.LICENSE")
    print(f"vendored {ADMIN_UI} into {OUT}")


if __name__ == "__main__":
    main()
