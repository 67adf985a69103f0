#!/usr/bin/env bash
# Screenshots of the Sketch panel during a run in real Blender's UI (Xvfb inside real-blender):
# builds and installs the zip into a throwaway user folder, opens Suzanne, presses Generate
# (tests/addon/ui_startup.py), clicks the Sketch tab and saves a screenshot every few seconds.
#   bash tests/addon/ui_screenshot.sh [OUT_DIR]     (default /tmp/splatsketch-ui)
# SPLATSKETCH_UI_EVALUATE=1 also evaluates the finished sketch; SHOTS=N takes N shots (default 16).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/splatsketch-ui}; REAL=${REAL_BLENDER:-../shared/tools/real-blender}
rm -rf "$OUT"; mkdir -p "$OUT/dist" "$OUT/shots"
.venv/bin/python "$(.venv/bin/python -c 'import bpy; print(bpy.utils.system_resource("SCRIPTS"))' 2>/dev/null | tail -1)/addons_core/bl_pkg/cli/blender_ext.py" \
  build --source-dir . --output-dir "$OUT/dist" >/dev/null
export BLENDER_USER_RESOURCES=$OUT/user SPLATSKETCH_BACKEND_PYTHON=$PWD/.venv/bin/python
export SPLATSKETCH_UI_EVALUATE=${SPLATSKETCH_UI_EVALUATE:-0}
"$REAL" run --command extension install-file -r user_default -e "$OUT"/dist/*.zip | tail -1
"$REAL" run -b --python-expr "import bpy; bpy.context.preferences.view.show_splash = False; bpy.ops.wm.save_userpref()" >/dev/null
"$REAL" sh "Xvfb :97 -screen 0 1600x1000x24 >/dev/null 2>&1 & X=\$!; sleep 1; export DISPLAY=:97;
  blender --python $PWD/tests/addon/ui_startup.py >$OUT/blender.log 2>&1 & B=\$!;
  for c in 1 2 3; do sleep 5; xdotool mousemove 1307 250 click 1; sleep 0.3; xdotool mousemove 700 500; done;
  for t in \$(seq 1 ${SHOTS:-16}); do sleep 5; import -window root $OUT/shots/shot_\$(printf %03d \$SECONDS).png; done;
  kill \$B; sleep 1; kill \$X"
ls "$OUT/shots"
