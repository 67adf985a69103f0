"""Screenshots of Set Up Backend in real Blender's UI (Preferences > Add-ons > SplatSketch) and of the
Sketch panel's CLIP note, from an empty user folder, as an artist would see them.

    .venv/bin/python tests/addon/ui_backend_screens.py --wheels /tmp/wheels_full [--out DIR] [--docs] [--keep]

Builds the zip, installs it into DIR/user (BLENDER_USER_RESOURCES; HOME is DIR/home, so no CLIP
weights are cached), starts Blender 4.3 under Xvfb in ../shared/tools/real-blender (or
$REAL_BLENDER) with this file as its startup script, and then: opens Preferences on the add-on
(Torch Build CPU, Wheel Folder set, so pip uses only that folder), shoots it, presses Set Up Backend
(INVOKE_DEFAULT in the Preferences window, so it runs modal), shoots every 8 s while it installs,
shoots the ready box, presses Check, closes Preferences, clicks the Sketch tab and shoots the panel
(CLIP Objective on, weights missing), makes a random-weight RN101-quickgelu checkpoint with the
managed environment's Python, points Use Local File at it, Checks again and shoots the panel
without the note. Every installing shot is taken twice: 03_stale_* first (what the window shows
untouched; the modal set-up only tags 3D viewports for redraw), then 02_* half a second after every
area was tagged. Shots: DIR/shots (full screen) and DIR/crops (the window or panel); --docs copies
the five crops into docs/images. About 4 minutes on 2 cores; the set-up needs ~6 GB in DIR/user,
which is deleted at the end (with the checkpoint) unless --keep.
"""

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
ADDON = "bl_ext.user_default.splatsketch"
DOCS = {"01_not_set_up": "prefs_backend_not_set_up", "02_installing": "prefs_backend_installing",
        "04_ready": "prefs_backend_ready", "07_panel_no_clip": "panel_no_clip_weights",
        "08_panel_with_clip": "panel_with_clip_weights"}


# -- the driver (the project's Python, outside Blender) ----------------------------------------------


def drive() -> int:
    import argparse
    import glob
    import shutil

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheels", required=True, help="a local wheel folder for an offline set-up")
    parser.add_argument("--out", default="/tmp/splatsketch-backend-ui")
    parser.add_argument("--docs", action="store_true", help="copy the five crops into docs/images")
    parser.add_argument("--keep", action="store_true", help="keep DIR/user (the installed environment)")
    parser.add_argument("--timeout", type=int, default=1200)
    args = parser.parse_args()
    real = os.environ.get("REAL_BLENDER", os.path.join(os.path.dirname(REPO), "shared", "tools", "real-blender"))
    out = os.path.abspath(args.out)
    shutil.rmtree(out, ignore_errors=True)
    for sub in ("dist", "shots", "crops", "home", "wheels"):
        os.makedirs(os.path.join(out, sub))
    # hard links (not symlinks) to the wheels: the chroot sees /tmp but not where symlinks may point
    for name in os.listdir(args.wheels):
        src, dst = os.path.realpath(os.path.join(args.wheels, name)), os.path.join(out, "wheels", name)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy(src, dst)
    sys.path.insert(0, HERE)
    from test_manifest import build_zip

    zip_path = build_zip(os.path.join(out, "dist"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k not in ("PYTHONPATH",
                                                                                        "SPLATSKETCH_BACKEND_PYTHON")}
    env.update(PIP_CONFIG_FILE=os.devnull, BLENDER_USER_RESOURCES=os.path.join(out, "user"),
               HOME=os.path.join(out, "home"), SPLATSKETCH_SCREENS_OUT=out)
    run = lambda *a, **k: subprocess.run([real, *a], env=env, cwd=REPO, check=True, **k)  # noqa: E731
    run("run", "--command", "extension", "install-file", "-r", "user_default", "-e", zip_path,
        stdout=subprocess.DEVNULL)
    run("run", "-b", "--python-expr", "import bpy; bpy.context.preferences.view.show_splash = False; "
        "bpy.ops.wm.save_userpref()", stdout=subprocess.DEVNULL)
    done = os.path.join(out, "shots", "DONE")
    try:
        run("sh", f"Xvfb :96 -screen 0 1600x1000x24 >/dev/null 2>&1 & X=$!; sleep 1; export DISPLAY=:96; "
                  f"blender --python {os.path.abspath(__file__)} >{out}/blender.log 2>&1 & B=$!; "
                  f"for i in $(seq 1 {args.timeout}); do [ -e {done} ] && break; sleep 1; done; "
                  f"sleep 1; kill $B; sleep 1; kill $X")
    finally:
        if not args.keep:  # gigabytes: the environment, and the random CLIP checkpoint (~480 MB)
            shutil.rmtree(os.path.join(out, "user"), ignore_errors=True)
            if os.path.exists(os.path.join(out, "rn101_random.pt")):
                os.remove(os.path.join(out, "rn101_random.pt"))
        shutil.rmtree(os.path.join(out, "wheels"), ignore_errors=True)
    print(open(os.path.join(out, "blender.log")).read()[-3000:])
    if not os.path.exists(done):
        print("ui_backend_screens: the session did not finish, see", os.path.join(out, "blender.log"))
        return 1
    if args.docs:
        for prefix, name in DOCS.items():
            found = sorted(glob.glob(os.path.join(out, "crops", prefix + "*.png")))
            if prefix == "02_installing":  # the one nearest 30 s after Set Up: stage and package shown
                def seconds(path):
                    return int(os.path.splitext(os.path.basename(path))[0].split("_")[2].rstrip("s"))

                found.sort(key=lambda f: abs(seconds(f) - 30))
            if found:
                shutil.copy(found[0], os.path.join(REPO, "docs", "images", name + ".png"))
                print("docs/images/" + name + ".png <-", os.path.basename(found[0]))
    return 0


# -- the startup script (inside Blender) --------------------------------------------------------------


def session():
    import bpy

    out = os.environ["SPLATSKETCH_SCREENS_OUT"]
    t0 = time.time()
    steps = []

    def log(*args):
        print(f"[screens {time.time() - t0:6.1f}s]", *args, flush=True)

    def state():
        return bpy.context.window_manager.splatsketch

    def prefs():
        return bpy.context.preferences.addons[ADDON].preferences

    def main_window():
        return bpy.context.window_manager.windows[0]

    def prefs_window():
        return next((w for w in bpy.context.window_manager.windows[1:] if w.screen.areas[0].type == "PREFERENCES"),
                    None)

    def area_of(win, kind):
        area = next(a for a in win.screen.areas if a.type == kind)
        return area, next(r for r in area.regions if r.type == "WINDOW")

    def redraw_all():
        for win in bpy.context.window_manager.windows:
            for area in win.screen.areas:
                area.tag_redraw()

    def shot(name, box):
        """Screen to shots/NAME.png, the box (x, y from the top, w, h) to crops/NAME.png."""
        full, crop = os.path.join(out, "shots", name + ".png"), os.path.join(out, "crops", name + ".png")
        subprocess.run(["import", "-window", "root", full], check=False)
        x, y, w, h = box
        subprocess.run(["convert", full, "-crop", f"{w}x{h}+{x}+{y}", "+repage", crop], check=False)
        s = state()
        log("shot", name, "| running", s.running, "| status", repr(s.status), "| progress", round(s.progress, 3),
            "| report", repr(s.backend_report), "| clip", s.clip_status, repr(s.clip_report))

    def prefs_box():
        win = prefs_window()
        return win.x, win.y, win.width, win.height

    def panel_box():
        win = main_window()
        area, _ = area_of(win, "VIEW_3D")
        ui = next(r for r in area.regions if r.type == "UI")
        return ui.x - 8, win.height - (ui.y + ui.height), ui.width + 8, 560

    def step(delay):
        def deco(fn):
            steps.append((delay, fn))
            return fn
        return deco

    def open_prefs():
        win = main_window()
        area, region = area_of(win, "VIEW_3D")
        with bpy.context.temp_override(window=win, area=area, region=region):
            bpy.ops.screen.userpref_show(section="ADDONS")
        bpy.context.window_manager.addon_search = "SplatSketch"

    def scroll_prefs(clicks):
        win = prefs_window()
        area, region = area_of(win, "PREFERENCES")
        with bpy.context.temp_override(window=win, area=area, region=region):
            for _ in range(clicks):
                bpy.ops.view2d.scroll_down()

    def in_prefs(op):
        win = prefs_window()
        area, region = area_of(win, "PREFERENCES")
        with bpy.context.temp_override(window=win, area=area, region=region):
            return op("INVOKE_DEFAULT")

    @step(2.0)
    def configure():
        prefs().wheel_folder = os.path.join(out, "wheels")
        prefs().torch_build = "cpu"
        bpy.context.scene.splatsketch.use_clip = True
        area, _ = area_of(main_window(), "VIEW_3D")
        area.spaces.active.show_region_ui = True
        open_prefs()
        bpy.ops.preferences.addon_expand(module=ADDON)

    @step(3.0)
    def not_set_up():
        scroll_prefs(int(os.environ.get("SCROLL", "4")))
        redraw_all()

    @step(1.0)
    def not_set_up_shot():
        shot("01_not_set_up", prefs_box())

    @step(0.5)
    def press_set_up():
        log("SET UP", in_prefs(bpy.ops.splatsketch.setup_backend))
        press_set_up.t = time.time()

    @step(2.0)
    def installing():
        if not state().running:
            return None
        t = time.time() - press_set_up.t
        shot(f"03_stale_installing_{t:03.0f}s", prefs_box())
        redraw_all()
        bpy.app.timers.register(lambda: shot(f"02_installing_{t:03.0f}s", prefs_box()) and None,
                                first_interval=0.5)
        return 8.0

    @step(2.0)
    def ready_natural():
        shot("05_stale_ready", prefs_box())
        redraw_all()

    @step(1.0)
    def ready():
        shot("04_ready", prefs_box())

    @step(0.5)
    def press_check():
        log("CHECK", in_prefs(bpy.ops.splatsketch.check_backend))

    @step(2.0)
    def checked():
        if state().backend_report.startswith("Checking"):
            return 1.0
        redraw_all()
        bpy.app.timers.register(lambda: shot("06_checked", prefs_box()) and None, first_interval=0.5)
        return None

    @step(2.0)
    def close_prefs():
        with bpy.context.temp_override(window=prefs_window()):
            bpy.ops.wm.window_close()
        redraw_all()

    @step(2.0)
    def click_sketch_tab():
        area, _ = area_of(main_window(), "VIEW_3D")
        # Region.active_panel_category is read-only: click the tab (the 4th: Item, Tool, View, Sketch)
        x, y = area.x + area.width - 10, int(os.environ.get("TAB_Y", "250"))
        subprocess.Popen(["sh", "-c", f"xdotool mousemove {x} {y} click 1; sleep 0.3; xdotool mousemove 700 500"])

    @step(2.0)
    def panel_no_clip():
        redraw_all()
        bpy.app.timers.register(lambda: shot("07_panel_no_clip", panel_box()) and None, first_interval=0.5)

    @step(2.0)
    def make_checkpoint():
        python = prefs().resolved_python()
        log("random-weight checkpoint with", python)
        make_checkpoint.path = os.path.join(out, "rn101_random.pt")
        make_checkpoint.proc = subprocess.Popen(
            [python, "-c", "import sys, torch, open_clip; m = open_clip.create_model('RN101-quickgelu'); "
                           "torch.save(m.state_dict(), sys.argv[1])", make_checkpoint.path])

    @step(2.0)
    def use_checkpoint():
        if make_checkpoint.proc.poll() is None:
            return 2.0
        log("checkpoint rc", make_checkpoint.proc.returncode)
        log("USE LOCAL FILE", bpy.ops.splatsketch.use_clip_file(filepath=make_checkpoint.path))
        win = main_window()
        area, region = area_of(win, "VIEW_3D")
        with bpy.context.temp_override(window=win, area=area, region=region):
            log("CHECK", bpy.ops.splatsketch.check_backend("INVOKE_DEFAULT"))
        return None

    @step(2.0)
    def panel_with_clip():
        if state().backend_report.startswith("Checking"):
            return 1.0
        redraw_all()
        bpy.app.timers.register(lambda: shot("08_panel_with_clip", panel_box()) and None, first_interval=0.5)
        return None

    @step(2.0)
    def reopen_prefs():
        open_prefs()

    @step(2.0)
    def prefs_with_clip():
        scroll_prefs(int(os.environ.get("SCROLL", "4")))
        redraw_all()

    @step(1.0)
    def prefs_with_clip_shot():
        shot("09_prefs_with_clip", prefs_box())

    @step(1.0)
    def finish():
        log("DONE")
        open(os.path.join(out, "shots", "DONE"), "w").close()

    index = [0]

    def tick():
        """Each step runs its delay after the previous one; one that returns a number is polled again
        after that many seconds until it returns None."""
        _delay, fn = steps[index[0]]
        try:
            again = fn()
        except Exception:  # report and go on: a broken step must not hang the session
            import traceback

            traceback.print_exc()
            again = None
        if again is not None:
            return again
        index[0] += 1
        return steps[index[0]][0] if index[0] < len(steps) else None

    bpy.app.timers.register(tick, first_interval=steps[0][0])


if os.environ.get("SPLATSKETCH_SCREENS_OUT") and "bpy" in sys.modules:
    session()
elif __name__ == "__main__":
    sys.exit(drive())
